package io.jvhost.iothread;

import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoEvent;
import io.netty.channel.epoll.EpollIoHandle;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;
import io.netty.util.concurrent.DefaultThreadFactory;
import io.netty.util.concurrent.ScheduledFuture;

import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * An event loop in the sense of QEMU's AioContext: fd handlers, bottom halves and timers, all run by exactly one
 * thread. Built on a single-threaded netty epoll loop so our own {@link EpollIoHandle}s (kick eventfds, the
 * vhost-user socket) share the loop with netty's task queue (bottom halves) and timer wheel.
 *
 * <p>There are two kinds: the main loop (one per process; vhost-user sockets and management) and iothreads
 * (virtqueue handlers and block completions). The rule of the seed: the main loop never runs an iothread's
 * handlers; it hands work to the iothread ({@link #execute}) and waits remotely ({@link #call}).
 */
public final class AioContext implements Executor, AutoCloseable {
    private static final Logger LOG = Logger.getLogger(AioContext.class.getName());
    private static final ThreadLocal<AioContext> CURRENT = new ThreadLocal<>();

    private final String name;
    private final boolean ioThread;
    private final MultiThreadIoEventLoopGroup group;
    private final IoEventLoop loop;
    private volatile Thread thread;

    private AioContext(String name, boolean ioThread) {
        this.name = name;
        this.ioThread = ioThread;
        this.group = new MultiThreadIoEventLoopGroup(1, new DefaultThreadFactory(name, false), EpollIoHandler.newFactory());
        this.loop = group.next();
        // Pin the thread now so current()/inContextThread() are valid before the first task.
        join(submit(() -> {
            CURRENT.set(this);
            thread = Thread.currentThread();
            return null;
        }));
    }

    /** Creates an iothread: an event loop that serves virtqueues and block completions. */
    public static AioContext newIoThread(String name) {
        return new AioContext(name, true);
    }

    /** Creates the main loop: vhost-user sockets and management; never runs virtqueue handlers. */
    public static AioContext newMainLoop(String name) {
        return new AioContext(name, false);
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

    /** Schedules a one-shot bottom half (any thread). */
    @Override
    public void execute(Runnable r) {
        loop.execute(r);
    }

    /** A reusable bottom half: scheduling it again before it ran is a no-op, so it allocates nothing per use. */
    public BottomHalf newBottomHalf(Runnable r) {
        return new BottomHalf(this, r);
    }

    /** Runs a task on this context and returns a future for its result (any thread). */
    public <T> CompletableFuture<T> submit(Callable<T> c) {
        CompletableFuture<T> f = new CompletableFuture<>();
        loop.execute(() -> {
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

    /** A timer on this context. */
    public ScheduledFuture<?> schedule(Runnable r, long delay, TimeUnit unit) {
        return loop.schedule(r, delay, unit);
    }

    /**
     * Watches {@code fd} for readability (level-triggered) and runs {@code onReadable} on this context's thread.
     * The fd stays owned by the caller; remove the handler (and wait for it) before closing the fd.
     */
    public FdHandler setFdHandler(int fd, Runnable onReadable) {
        FdHandler h = new FdHandler(fd, onReadable);
        IoRegistration reg = join(loop.register(h));
        reg.submit(EpollIoOps.EPOLLIN);
        h.registration = reg;
        return h;
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

    private static <T> T join(java.util.concurrent.Future<T> f) {
        try {
            return f.get(30, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            throw new IllegalStateException(e.getCause());
        } catch (InterruptedException | TimeoutException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A registered fd handler. */
    public final class FdHandler implements EpollIoHandle {
        private final FileDescriptor fd;
        private final Runnable onReadable;
        private volatile IoRegistration registration;

        FdHandler(int fd, Runnable onReadable) {
            // A borrowed fd: netty must never close it (its FileDescriptor.close would).
            this.fd = new FileDescriptor(fd) {
                @Override
                public void close() {}
            };
            this.onReadable = onReadable;
        }

        @Override
        public FileDescriptor fd() {
            return fd;
        }

        @Override
        public void handle(IoRegistration r, IoEvent e) {
            EpollIoEvent ev = (EpollIoEvent) e;
            if (ev.ops().contains(EpollIoOps.EPOLLIN) || ev.ops().contains(EpollIoOps.EPOLLERR)
                    || ev.ops().contains(EpollIoOps.EPOLLRDHUP)) {
                try {
                    onReadable.run();
                } catch (Throwable t) {
                    LOG.log(Level.SEVERE, name + ": fd handler for fd " + fd.intValue() + " failed", t);
                }
            }
        }

        @Override
        public void close() {}

        /**
         * Removes the handler. From another thread it waits until the loop has dropped the fd, so the caller
         * may close the fd afterwards without the loop ever seeing a reused number.
         */
        public void remove() {
            IoRegistration reg = registration;
            if (reg == null) return;
            registration = null;
            if (inContextThread()) {
                reg.cancel();
            } else {
                join(submit(() -> {
                    reg.cancel();
                    return null;
                }));
            }
        }
    }
}
