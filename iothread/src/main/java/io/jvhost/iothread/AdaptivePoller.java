package io.jvhost.iothread;

import io.netty.channel.IoHandle;
import io.netty.channel.IoHandler;
import io.netty.channel.IoHandlerContext;
import io.netty.channel.IoHandlerFactory;
import io.netty.channel.IoRegistration;

import java.util.Arrays;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Adaptive polling for an iothread, like QEMU's {@code poll-max-ns}: before the loop sleeps in the kernel it polls
 * its {@link PollHandler}s for up to {@code pollNs}, with their notifications off, and {@code pollNs} tunes itself
 * from how long the loop then actually waited: a wait that polling would have covered (up to poll-max-ns) grows it
 * by poll-grow (default ×2, starting at 4 µs), a wait longer than poll-max-ns shrinks it by poll-shrink (default:
 * to zero). Polling saves the kick (eventfd write + wake-up, several µs) on the driver's side and the epoll round
 * trip on ours while requests arrive back to back.
 *
 * <p>It wraps the loop's real {@link IoHandler} (epoll or io_uring), so fd events, netty tasks and timers keep
 * their usual path: polling stops at once when a task is queued from another thread ({@link #wakeup}) or a timer
 * is due, and the handlers stay in polling mode (notifications off) between loop iterations that find work — the
 * mode ends only when the loop is about to sleep, so a busy ring does not toggle its flags per request.
 */
final class AdaptivePoller {
    private static final Logger LOG = Logger.getLogger(AdaptivePoller.class.getName());
    /** QEMU's default for iothreads (IOTHREAD_POLL_MAX_NS_DEFAULT). */
    static final long DEFAULT_POLL_MAX_NS = 32_768;
    /** First polling time after a wait that polling would have covered. */
    static final long POLL_START_NS = 4_000;

    private static final PollHandler[] NONE = new PollHandler[0];

    private final String name;
    // Knobs: any thread writes, the loop reads.
    private volatile long maxNs;
    private volatile long grow;
    private volatile long shrink;

    // Loop-thread state.
    private PollHandler[] handlers = NONE;
    private boolean started;
    private long pollNs;

    // Statistics (loop writes, anyone reads).
    private volatile long currentNs;
    private volatile long hits;

    AdaptivePoller(String name, long maxNs) {
        this.name = name;
        this.maxNs = maxNs;
    }

    void setParams(long maxNs, long grow, long shrink) {
        if (maxNs < 0 || grow < 0 || shrink < 0) throw new IllegalArgumentException("polling parameters must not be negative");
        this.maxNs = maxNs;
        this.grow = grow;
        this.shrink = shrink;
    }

    long maxNs() {
        return maxNs;
    }

    long grow() {
        return grow;
    }

    long shrink() {
        return shrink;
    }

    /** The current self-tuned polling time. */
    long currentNs() {
        return currentNs;
    }

    /** Loop iterations in which polling found work (instead of a notification). */
    long hits() {
        return hits;
    }

    /** Loop thread only. A handler added while polling is on starts in polling mode too. */
    void add(PollHandler h) {
        for (PollHandler x : handlers) if (x == h) return;
        handlers = Arrays.copyOf(handlers, handlers.length + 1);
        handlers[handlers.length - 1] = h;
        if (started) begin(h);
    }

    /** Loop thread only. The handler is not called again; leaving polling mode is its own business. */
    void remove(PollHandler h) {
        PollHandler[] hs = handlers;
        for (int i = 0; i < hs.length; i++) {
            if (hs[i] != h) continue;
            PollHandler[] n = new PollHandler[hs.length - 1];
            System.arraycopy(hs, 0, n, 0, i);
            System.arraycopy(hs, i + 1, n, i, hs.length - i - 1);
            handlers = n;
            if (n.length == 0) started = false;
            return;
        }
    }

    /**
     * The self-tuning step (QEMU's rule): given the polling time used and how long the loop then waited in
     * total, the next polling time.
     */
    static long adjust(long pollNs, long blockNs, long maxNs, long grow, long shrink) {
        if (maxNs <= 0) return 0;
        if (blockNs <= pollNs) return pollNs;                 // polling would have covered it: keep
        if (blockNs > maxNs) return shrink == 0 ? 0 : pollNs / shrink; // too long to poll for: poll less
        if (pollNs < maxNs) {                                  // room to grow
            long g = grow == 0 ? 2 : grow;
            long n = pollNs == 0 ? POLL_START_NS : (pollNs > Long.MAX_VALUE / g ? Long.MAX_VALUE : pollNs * g);
            return Math.min(n, maxNs);
        }
        return pollNs;
    }

    /**
     * Wraps the loop's IoHandler factory. {@code reapWhilePolling} (io_uring): each polling round also looks at
     * the completion ring (a read of shared memory, {@link UringCompletionPeek}) and reaps it when it has entries,
     * so ring completions (file I/O, a kick that raced with suppression) are not held back until polling ends.
     * With epoll that would be an epoll_wait syscall per round, and epoll-side completions arrive as tasks (which
     * end polling) anyway.
     */
    IoHandlerFactory wrap(IoHandlerFactory delegate, boolean reapWhilePolling) {
        return new IoHandlerFactory() {
            @Override
            public IoHandler newHandler(io.netty.util.concurrent.ThreadAwareExecutor executor) {
                return new Handler(delegate.newHandler(executor), reapWhilePolling);
            }

            @Override
            public boolean isChangingThreadSupported() {
                return delegate.isChangingThreadSupported();
            }
        };
    }

    private boolean pollOnce(PollHandler[] hs) {
        boolean progress = false;
        for (PollHandler h : hs) {
            try {
                progress |= h.poll();
            } catch (Throwable t) {
                LOG.log(Level.SEVERE, name + ": poll handler failed", t);
            }
        }
        return progress;
    }

    private void begin(PollHandler h) {
        try {
            h.pollBegin();
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, name + ": poll handler failed", t);
        }
    }

    private boolean endAll(PollHandler[] hs) {
        started = false;
        boolean progress = false;
        for (PollHandler h : hs) {
            try {
                progress |= h.pollEnd();
            } catch (Throwable t) {
                LOG.log(Level.SEVERE, name + ": poll handler failed", t);
            }
        }
        return progress;
    }

    /** The wrapper around the loop's real IoHandler. */
    private final class Handler implements IoHandler {
        private final IoHandler delegate;
        /** A task was queued from another thread since run() started: stop polling. */
        private volatile boolean woken;
        private IoHandlerContext outer;
        /** The loop's context, except that it must not block (work is waiting for the loop). */
        private final IoHandlerContext nonBlocking = new IoHandlerContext() {
            @Override
            public boolean canBlock() {
                return false;
            }

            @Override
            public long delayNanos(long currentTimeNanos) {
                return outer.delayNanos(currentTimeNanos);
            }

            @Override
            public long deadlineNanos() {
                return outer.deadlineNanos();
            }

            @Override
            public void reportActiveIoTime(long activeNanos) {
                outer.reportActiveIoTime(activeNanos);
            }

            @Override
            public boolean shouldReportActiveIoTime() {
                return outer.shouldReportActiveIoTime();
            }
        };

        /** io_uring only: completions are waiting in the ring. */
        private final UringCompletionPeek cq;

        Handler(IoHandler delegate, boolean reap) {
            this.delegate = delegate;
            this.cq = reap ? UringCompletionPeek.of(delegate) : null;
        }

        @Override
        public void initialize() {
            delegate.initialize();
        }

        @Override
        public int run(IoHandlerContext c) {
            outer = c;
            woken = false; // cleared before canBlock() is read: a task queued after that sets it again
            PollHandler[] hs = handlers;
            long max = maxNs;
            if (hs.length == 0 || max <= 0) {
                if (started && endAll(hs)) return delegate.run(nonBlocking) + 1;
                if (pollNs != 0) currentNs = pollNs = 0;
                return delegate.run(c);
            }
            if (!c.canBlock()) {
                // Tasks are waiting: no time to poll, but rings in polling mode send no kicks, so look at them.
                int n = delegate.run(c);
                if (started && pollOnce(hs)) n++;
                return n;
            }
            long start = System.nanoTime();
            if (pollNs > 0) {
                if (!started) {
                    started = true;
                    for (PollHandler h : hs) begin(h);
                }
                long budget = Math.min(pollNs, Math.max(0, c.delayNanos(start)));
                boolean progress;
                int io = 0;
                long now;
                do {
                    progress = pollOnce(hs);
                    if (cq != null && cq.ready()) {
                        io += delegate.run(nonBlocking);
                        progress = true;
                    }
                    now = System.nanoTime();
                } while (!progress && !woken && now - start < budget);
                if (progress) {
                    hits++;
                    // Stay in polling mode: more is likely to come. Submit what the handlers queued.
                    return delegate.run(nonBlocking) + io + 1;
                }
                if (woken) return delegate.run(nonBlocking);
            }
            if (started && endAll(hs)) return delegate.run(nonBlocking) + 1;
            int n = delegate.run(c);
            long next = adjust(pollNs, System.nanoTime() - start, max, grow, shrink);
            if (next != pollNs) currentNs = pollNs = next;
            return n;
        }

        @Override
        public void prepareToDestroy() {
            delegate.prepareToDestroy();
        }

        @Override
        public void destroy() {
            delegate.destroy();
        }

        @Override
        public IoRegistration register(IoHandle handle) throws Exception {
            return delegate.register(handle);
        }

        @Override
        public void wakeup() {
            woken = true;
            delegate.wakeup(); // cheap while we poll: the delegate writes its eventfd only if it may be asleep
        }

        @Override
        public boolean isCompatible(Class<? extends IoHandle> handleType) {
            return delegate.isCompatible(handleType);
        }
    }
}
