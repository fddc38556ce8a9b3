package io.jvhost.block;

import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The block layer's shared worker pool (QEMU's thread-pool.c): a bounded set of daemon threads doing blocking
 * positional I/O, plus one timer thread for requests submitted outside any AioContext. Shared by every
 * {@link BlockNodes}; reference-counted so the last {@link BlockNodes#close()} shuts it down, and created again
 * on the next acquire. Threads are started lazily and time out when idle.
 */
final class AioPool {
    /** QEMU's thread pool defaults to 64 workers; on small hosts fewer suffice as the syscalls are the cost. */
    static final int MAX_WORKERS = 32;

    private static final Object LOCK = new Object();
    private static final AtomicInteger THREAD_SEQ = new AtomicInteger();
    private static AioPool shared;
    private static int refs;

    private volatile ThreadPoolExecutor workers;
    private volatile ScheduledThreadPoolExecutor timer;
    private boolean shutdown;

    private AioPool() {}

    static AioPool acquire() {
        synchronized (LOCK) {
            if (shared == null) shared = new AioPool();
            refs++;
            return shared;
        }
    }

    void release() {
        synchronized (LOCK) {
            if (shared != this) return;
            if (--refs == 0) {
                shared = null;
                shutdown();
            }
        }
    }

    /** Runs blocking work on a worker thread. Throws RejectedExecutionException after shutdown. */
    void execute(Runnable r) {
        ThreadPoolExecutor w = workers;
        if (w == null) w = startWorkers();
        w.execute(r);
    }

    /** Runs r after the delay on the timer thread (for requests submitted outside an AioContext). */
    ScheduledFuture<?> schedule(Runnable r, long delayNs) {
        ScheduledThreadPoolExecutor t = timer;
        if (t == null) t = startTimer();
        return t.schedule(r, delayNs, TimeUnit.NANOSECONDS);
    }

    private synchronized ThreadPoolExecutor startWorkers() {
        if (shutdown) throw new RejectedExecutionException("block worker pool is shut down");
        if (workers == null) {
            // Fixed core = max with core time-out: threads appear on demand up to MAX_WORKERS, then requests
            // queue (unbounded, like QEMU's request list) instead of being rejected.
            ThreadPoolExecutor w = new ThreadPoolExecutor(MAX_WORKERS, MAX_WORKERS, 10, TimeUnit.SECONDS,
                    new LinkedBlockingQueue<>(), daemon("jvhost-aio-"));
            w.allowCoreThreadTimeOut(true);
            workers = w;
        }
        return workers;
    }

    private synchronized ScheduledThreadPoolExecutor startTimer() {
        if (shutdown) throw new RejectedExecutionException("block worker pool is shut down");
        if (timer == null) {
            ScheduledThreadPoolExecutor t = new ScheduledThreadPoolExecutor(1, daemon("jvhost-aio-timer-"));
            t.setRemoveOnCancelPolicy(true);
            timer = t;
        }
        return timer;
    }

    /**
     * Stops accepting work; queued work still runs. Never shutdownNow(): interrupting a thread inside a
     * FileChannel call closes the channel for every user of the node.
     */
    private synchronized void shutdown() {
        shutdown = true;
        if (workers != null) workers.shutdown();
        if (timer != null) timer.shutdown();
    }

    private static ThreadFactory daemon(String prefix) {
        return r -> {
            Thread t = new Thread(r, prefix + THREAD_SEQ.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
    }
}
