package io.jvhost.iothread;

import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.util.concurrent.DefaultPromise;
import io.netty.util.concurrent.DefaultThreadFactory;
import io.netty.util.concurrent.ScheduledFuture;

import java.util.Objects;
import java.util.PriorityQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Delayed;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * An event loop in the sense of QEMU's AioContext: fd handlers, bottom halves and timers, all run by exactly one
 * thread. Built on a single-threaded netty loop so our own fd watches (kick eventfds, the vhost-user socket)
 * share the loop with the bottom halves and timers. The main loop runs on epoll; iothreads run on epoll, or on
 * io_uring when created for it (QEMU's fdmon-io_uring) and then also offer their ring for raw I/O
 * ({@link #uring}). See {@link FdMonitor}.
 *
 * <p>There are two kinds: the main loop (one per process; vhost-user sockets and management) and iothreads
 * (virtqueue handlers and block completions). The rule of the seed: the main loop never runs an iothread's
 * handlers; it hands work to the iothread ({@link #execute}) and waits remotely ({@link #call}).
 *
 * <p>Bottom halves and timers are kept here, not in netty's task queue and timer wheel, so that the context's own
 * thread can run them from inside a handler with {@link #poll} (QEMU's nested {@code aio_poll}): a drain issued
 * by a bottom half must be able to run the completions it waits for, which are bottom halves of the same
 * context. One netty task drains the bottom-half queue, one netty timer wakes the loop for the earliest timer.
 * A nested poll does not service fds (kick eventfds wait for the outer loop).
 */
public final class AioContext implements Executor, AutoCloseable {
    private static final Logger LOG = Logger.getLogger(AioContext.class.getName());
    private static final ThreadLocal<AioContext> CURRENT = new ThreadLocal<>();
    /** Bottom halves run per netty task before it yields to fd events (it re-posts itself if more are queued). */
    private static final int BH_BATCH = 256;
    /** Bottom halves run by one nested poll round before it reports progress. */
    private static final int POLL_BATCH = 1024;

    private final String name;
    private final boolean ioThread;
    private final FdMonitor fdmon;
    private final MultiThreadIoEventLoopGroup group;
    /** Adaptive polling of {@link PollHandler}s (iothreads only; null on the main loop). */
    private final AdaptivePoller poller;
    private final IoEventLoop loop;
    private final AioUring uring;
    private volatile Thread thread;

    // ---- bottom halves: many producers, one consumer (this context's thread) ----
    private final BhQueue bhs = new BhQueue(4096); // allocation-free per bottom half
    /** A netty task that drains {@link #bhs} is queued and has not started yet. */
    private final AtomicBoolean bhTaskPending = new AtomicBoolean();
    private final Runnable bhTask = this::runBhTask;

    // ---- timers: a heap under timerLock; any thread arms or cancels, this context's thread runs them ----
    private final Object timerLock = new Object();
    private final PriorityQueue<Timer> timers = new PriorityQueue<>(AioContext::compareTimers);
    private long timerSeq;
    /**
     * The netty timer that wakes the loop for the earliest timer (guarded by timerLock): wakeArmed says one is
     * scheduled (or being scheduled) for wakeDeadline; wake is its future once known, wakeGen tells a stale
     * scheduling apart from the current one.
     */
    private boolean wakeArmed;
    private long wakeDeadline;
    private long wakeGen;
    private io.netty.util.concurrent.Future<?> wake;
    private final Runnable wakeTask = this::runWakeTask;

    // ---- nested poll ----
    /** The context's thread is parked in a blocking {@link #poll}; producers unpark it. */
    private volatile boolean pollParked;
    /** {@link #wakeup} was called since the last poll returned. */
    private volatile boolean notified;

    private AioContext(String name, boolean ioThread, boolean preferIoUring) {
        this.name = name;
        this.ioThread = ioThread;
        this.poller = ioThread ? new AdaptivePoller(name, AdaptivePoller.DEFAULT_POLL_MAX_NS) : null;
        this.fdmon = FdMonitor.forContext(ioThread, preferIoUring);
        io.netty.channel.IoHandlerFactory factory = fdmon.ioHandlerFactory();
        // io_uring: reaping completions is a read of shared memory, so the poller also reaps while it polls.
        if (poller != null) factory = poller.wrap(factory, fdmon != FdMonitor.EPOLL);
        this.group = new MultiThreadIoEventLoopGroup(1, new DefaultThreadFactory(name, false), factory);
        this.loop = group.next();
        this.uring = fdmon == FdMonitor.EPOLL ? null : new AioUring(this, loop);
        // Pin the thread now so current()/inContextThread() are valid before the first task.
        join(submit(() -> {
            CURRENT.set(this);
            thread = Thread.currentThread();
            return null;
        }));
    }

    /** Creates an iothread: an event loop that serves virtqueues and block completions (on epoll by default). */
    public static AioContext newIoThread(String name) {
        return new AioContext(name, true, false);
    }

    /**
     * Creates an iothread; {@code preferIoUring}: on io_uring where the kernel has it, so that aio=io_uring nodes
     * can use its ring ({@link #uring}); -Djvhost.fdmon overrides (see {@link FdMonitor}).
     */
    public static AioContext newIoThread(String name, boolean preferIoUring) {
        return new AioContext(name, true, preferIoUring);
    }

    /** Creates the main loop: vhost-user sockets and management; never runs virtqueue handlers. */
    public static AioContext newMainLoop(String name) {
        return new AioContext(name, false, false);
    }

    /** The context whose thread is calling, or null for threads that are not event loops. */
    public static AioContext current() {
        return CURRENT.get();
    }

    /** True when the caller runs on an iothread (not the main loop, not a plain thread). */
    public static boolean inIoThread() {
        AioContext c = CURRENT.get();
        return c != null && c.ioThread;
    }

    /** True when the caller runs on this context's thread. */
    public boolean inContextThread() {
        return Thread.currentThread() == thread;
    }

    /**
     * The seed's rule as a check that is always on: handlers of this context may only run on its own thread.
     * Throws instead of running the handler in the wrong thread.
     */
    public void assertInContextThread(String what) {
        if (Thread.currentThread() != thread) {
            throw new WrongThreadException(what + " must run in " + name + " but ran in " + Thread.currentThread().getName());
        }
    }

    public String name() {
        return name;
    }

    public boolean isIoThread() {
        return ioThread;
    }

    public Thread thread() {
        return thread;
    }

    /** The fd monitoring backend: "epoll" or "io_uring". */
    public String fdMonitor() {
        return fdmon.name();
    }

    /** This context's io_uring for raw SQEs, or null when the context runs on epoll. */
    public AioUring uring() {
        return uring;
    }

    // ------------------------------------------------------------------------------------------ bottom halves

    /**
     * Schedules a one-shot bottom half (any thread). Bottom halves run in FIFO order on this context's thread,
     * from the loop or from a nested {@link #poll}. Throws RejectedExecutionException once the context is shut
     * down (and then the task did not and will not run).
     */
    @Override
    public void execute(Runnable r) {
        Objects.requireNonNull(r, "task");
        bhs.offer(r);
        if (!bhTaskPending.get() && bhTaskPending.compareAndSet(false, true)) {
            try {
                loop.execute(bhTask);
            } catch (RejectedExecutionException e) {
                bhTaskPending.set(false);
                // Only report the rejection if nobody took the task meanwhile (then it ran, or is running).
                if (bhs.remove(r)) throw e;
            }
        }
        if (pollParked) LockSupport.unpark(thread);
    }

    /** A reusable bottom half: scheduling it again before it ran is a no-op, so it allocates nothing per use. */
    public BottomHalf newBottomHalf(Runnable r) {
        return new BottomHalf(this, r);
    }

    /** Runs a task on this context and returns a future for its result (any thread). */
    public <T> CompletableFuture<T> submit(Callable<T> c) {
        CompletableFuture<T> f = new CompletableFuture<>();
        execute(() -> {
            try {
                f.complete(c.call());
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        return f;
    }

    /**
     * Runs a task in this context and waits for it: the caller waits remotely and never runs this context's
     * handlers itself. Called from this context's own thread it runs inline (no self-deadlock).
     */
    public <T> T call(Callable<T> c, long timeout, TimeUnit unit) throws TimeoutException, ExecutionException, InterruptedException {
        if (inContextThread()) {
            try {
                return c.call();
            } catch (Exception e) {
                throw new ExecutionException(e);
            }
        }
        return submit(c).get(timeout, unit);
    }

    private void runBhTask() {
        // Cleared first: a producer that enqueues after this point posts a new task, so nothing is stranded.
        bhTaskPending.set(false);
        runBhs(BH_BATCH);
        if (!bhs.isEmpty() && bhTaskPending.compareAndSet(false, true)) {
            loop.execute(bhTask); // let netty look at fds between batches
        }
    }

    private int runBhs(int max) {
        int n = 0;
        Runnable r;
        while (n < max && (r = bhs.poll()) != null) {
            n++;
            runSafely(r, "bottom half");
        }
        return n;
    }

    private void runSafely(Runnable r, String what) {
        try {
            r.run();
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, name + ": " + what + " failed", t);
        }
    }

    // ----------------------------------------------------------------------------------------------- timers

    /** A timer of this context (QEMU's QEMUTimer): reusable, armed and cancelled from any thread, run here. */
    public Timer newTimer(Runnable cb) {
        return new Timer(this, cb);
    }

    /** A one-shot timer on this context (any thread). Cancelling the future disarms it. */
    public ScheduledFuture<?> schedule(Runnable r, long delay, TimeUnit unit) {
        ScheduledTask t = new ScheduledTask(r);
        t.timer.schedule(delay, unit);
        return t;
    }

    /**
     * A reusable timer (QEMU's QEMUTimer). {@link #schedule} re-arms it (moving the deadline), {@link #cancel}
     * disarms it; both are thread-safe. The callback runs on the context's thread, from the loop or from a
     * nested {@link AioContext#poll}.
     */
    public static final class Timer {
        private final AioContext ctx;
        private final Runnable cb;
        // Guarded by ctx.timerLock.
        private long deadline;
        private long seq;
        private boolean queued;

        Timer(AioContext ctx, Runnable cb) {
            this.ctx = ctx;
            this.cb = Objects.requireNonNull(cb, "callback");
        }

        /** Arms (or re-arms) the timer to fire after the delay. */
        public void schedule(long delay, TimeUnit unit) {
            scheduleAt(System.nanoTime() + Math.max(0, unit.toNanos(delay)));
        }

        /** Arms (or re-arms) the timer for a {@link System#nanoTime} deadline. */
        public void scheduleAt(long deadlineNanos) {
            ctx.arm(this, deadlineNanos);
        }

        /** Disarms; returns true if it was armed. */
        public boolean cancel() {
            return ctx.disarm(this);
        }

        public boolean isPending() {
            synchronized (ctx.timerLock) {
                return queued;
            }
        }

        /** The deadline of an armed timer ({@link System#nanoTime} scale). */
        public long deadline() {
            synchronized (ctx.timerLock) {
                return deadline;
            }
        }

        public AioContext context() {
            return ctx;
        }
    }

    private static int compareTimers(Timer a, Timer b) {
        long d = a.deadline - b.deadline; // wrap-safe comparison of nanoTime values
        if (d != 0) return d < 0 ? -1 : 1;
        return Long.compare(a.seq, b.seq);
    }

    private void arm(Timer t, long deadline) {
        long gen = -1;
        synchronized (timerLock) {
            if (t.queued) timers.remove(t);
            t.deadline = deadline;
            t.seq = timerSeq++;
            t.queued = true;
            timers.add(t);
            if (timers.peek() == t && (!wakeArmed || deadline - wakeDeadline < 0)) gen = newWakeLocked(deadline);
        }
        if (gen >= 0) scheduleWake(deadline, gen);
        if (pollParked) LockSupport.unpark(thread); // a nested poll recomputes how long it may park
    }

    /** Replaces the loop wake-up by one for {@code deadline}; returns its generation. Holds timerLock. */
    private long newWakeLocked(long deadline) {
        if (wake != null) wake.cancel(false);
        wake = null;
        wakeArmed = true;
        wakeDeadline = deadline;
        return ++wakeGen;
    }

    private boolean disarm(Timer t) {
        synchronized (timerLock) {
            if (!t.queued) return false;
            timers.remove(t);
            t.queued = false;
            return true;
        }
    }

    private void scheduleWake(long deadline, long gen) {
        io.netty.util.concurrent.Future<?> f;
        try {
            f = loop.schedule(wakeTask, Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
        } catch (RejectedExecutionException e) {
            return; // shutting down: timers no longer fire
        }
        synchronized (timerLock) {
            if (wakeGen == gen) {
                wake = f;
                return;
            }
        }
        f.cancel(false); // superseded by an earlier timer while we were scheduling
    }

    private void runWakeTask() {
        synchronized (timerLock) {
            // A superseded wake-up that fired anyway only causes one extra look at the heap.
            wakeArmed = false;
            wake = null;
        }
        runDueTimers();
        long gen = -1, at = 0;
        synchronized (timerLock) {
            Timer head = timers.peek();
            if (head != null && (!wakeArmed || head.deadline - wakeDeadline < 0)) {
                at = head.deadline;
                gen = newWakeLocked(at);
            }
        }
        if (gen >= 0) scheduleWake(at, gen);
    }

    /** Runs every timer whose deadline has passed; returns how many ran. Context thread only. */
    private int runDueTimers() {
        long now = System.nanoTime();
        int ran = 0;
        // Bounded so that a timer re-arming itself for "now" cannot pin the thread.
        while (ran < POLL_BATCH) {
            Timer t;
            synchronized (timerLock) {
                t = timers.peek();
                if (t == null || t.deadline - now > 0) break;
                timers.poll();
                t.queued = false;
            }
            ran++;
            runSafely(t.cb, "timer");
        }
        return ran;
    }

    /** Nanoseconds until the earliest timer, or Long.MAX_VALUE when none is armed. */
    private long nanosToNextTimer(long now) {
        synchronized (timerLock) {
            Timer head = timers.peek();
            return head == null ? Long.MAX_VALUE : Math.max(0, head.deadline - now);
        }
    }

    /** The {@link #schedule} future: a netty promise over one of our timers. */
    private final class ScheduledTask extends DefaultPromise<Void> implements ScheduledFuture<Void>, Runnable {
        private final Runnable task;
        final Timer timer;

        ScheduledTask(Runnable task) {
            super(loop);
            this.task = Objects.requireNonNull(task, "task");
            this.timer = new Timer(AioContext.this, this);
        }

        @Override
        public void run() {
            if (!setUncancellable()) return; // cancelled meanwhile
            try {
                task.run();
                trySuccess(null);
            } catch (Throwable t) {
                LOG.log(Level.SEVERE, name + ": scheduled task failed", t);
                tryFailure(t);
            }
        }

        @Override
        public boolean cancel(boolean mayInterruptIfRunning) {
            if (!super.cancel(mayInterruptIfRunning)) return false;
            timer.cancel();
            return true;
        }

        @Override
        public long getDelay(TimeUnit unit) {
            return unit.convert(timer.deadline() - System.nanoTime(), TimeUnit.NANOSECONDS);
        }

        @Override
        public int compareTo(Delayed o) {
            return Long.compare(getDelay(TimeUnit.NANOSECONDS), o.getDelay(TimeUnit.NANOSECONDS));
        }
    }

    // ------------------------------------------------------------------------------------------ nested poll

    /**
     * QEMU's {@code aio_poll}: runs this context's pending bottom halves and due timers from inside a handler
     * (re-entrant). Non-blocking, it returns at once; blocking, it waits until a bottom half or timer has run,
     * or {@link #wakeup} was called. Returns true if a bottom half or timer ran. Fds are not serviced. Only the
     * context's own thread may call it.
     */
    public boolean poll(boolean blocking) {
        return pollNanos(blocking ? Long.MAX_VALUE : 0);
    }

    /** Like {@code poll(true)}, but waits at most the timeout (then returns false). */
    public boolean poll(long timeout, TimeUnit unit) {
        return pollNanos(Math.max(0, unit.toNanos(timeout)));
    }

    private boolean pollNanos(long timeoutNs) {
        assertInContextThread("AioContext.poll");
        long start = System.nanoTime();
        boolean interrupted = false;
        try {
            while (true) {
                int ran = runBhs(POLL_BATCH) + runDueTimers();
                if (ran > 0) {
                    notified = false; // the caller re-checks its condition anyway
                    return true;
                }
                if (notified) {
                    notified = false;
                    return false;
                }
                long now = System.nanoTime();
                long left = timeoutNs == Long.MAX_VALUE ? Long.MAX_VALUE : timeoutNs - (now - start);
                if (left <= 0) return false;
                long park = Math.min(left, nanosToNextTimer(now));
                if (park <= 0) continue;
                pollParked = true;
                try {
                    // Re-check after publishing pollParked: producers check it after publishing their work.
                    if (bhs.isEmpty() && !notified) {
                        LockSupport.parkNanos(this, park);
                    }
                } finally {
                    pollParked = false;
                }
                if (Thread.interrupted()) interrupted = true; // else parkNanos would return at once forever
            }
        } finally {
            if (interrupted) Thread.currentThread().interrupt();
        }
    }

    /**
     * QEMU's {@code aio_notify}: makes a blocking {@link #poll} on this context return (now, or at once when it
     * starts next), so that its caller re-checks what it waits for. Any thread.
     */
    public void wakeup() {
        notified = true;
        if (pollParked) LockSupport.unpark(thread);
    }

    // -------------------------------------------------------------------------------------- adaptive polling

    /**
     * Adds a poll handler (context thread only): before sleeping, the loop polls it with its notifications off for
     * a self-tuned time of up to poll-max-ns. The main loop does not poll; there this is refused.
     */
    public void addPollHandler(PollHandler h) {
        assertInContextThread("addPollHandler");
        if (poller == null) throw new IllegalStateException(name + " is not an iothread: it does not poll");
        poller.add(Objects.requireNonNull(h, "handler"));
    }

    /** Removes a poll handler (context thread only); it is not called again. */
    public void removePollHandler(PollHandler h) {
        assertInContextThread("removePollHandler");
        if (poller != null) poller.remove(h);
    }

    /**
     * QEMU's iothread knobs (any thread): poll-max-ns (0 turns polling off), poll-grow (0: double), poll-shrink
     * (0: reset to zero). Iothreads start with QEMU's defaults 32768/0/0.
     */
    public void setPollParams(long maxNs, long grow, long shrink) {
        if (poller == null) throw new IllegalStateException(name + " is not an iothread: it does not poll");
        poller.setParams(maxNs, grow, shrink);
    }

    /** poll-max-ns (0 on the main loop). */
    public long pollMaxNs() {
        return poller == null ? 0 : poller.maxNs();
    }

    /** The current self-tuned polling time in ns. */
    public long pollNs() {
        return poller == null ? 0 : poller.currentNs();
    }

    /** Loop iterations in which polling, not a notification, found the work. */
    public long pollHits() {
        return poller == null ? 0 : poller.hits();
    }

    // ---------------------------------------------------------------------------------------------- fds

    /**
     * Watches {@code fd} for readability (level-triggered) and runs {@code onReadable} on this context's thread.
     * The fd stays owned by the caller; remove the handler (and wait for it) before closing the fd.
     */
    public FdHandler setFdHandler(int fd, Runnable onReadable) {
        return new FdHandler(fdmon.watch(this, loop, fd, onReadable));
    }

    /** Stops the loop and waits for its thread to end. */
    @Override
    public void close() {
        group.shutdownGracefully(0, 2, TimeUnit.SECONDS).syncUninterruptibly();
    }

    @Override
    public String toString() {
        return "AioContext(" + name + ")";
    }

    static <T> T join(java.util.concurrent.Future<T> f) {
        try {
            return f.get(30, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            throw new IllegalStateException(e.getCause());
        } catch (InterruptedException | TimeoutException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A registered fd handler. */
    public final class FdHandler {
        private volatile FdMonitor.FdWatch watch;

        FdHandler(FdMonitor.FdWatch watch) {
            this.watch = watch;
        }

        /**
         * Removes the handler. From another thread it waits until the loop has dropped the fd, so the caller
         * may close the fd afterwards without the loop ever seeing a reused number.
         */
        public void remove() {
            FdMonitor.FdWatch w = watch;
            if (w == null) return;
            watch = null;
            if (inContextThread()) {
                w.cancel();
            } else {
                join(submit(() -> {
                    w.cancel();
                    return null;
                }));
            }
        }
    }
}
