package io.jvhost.block;

import java.util.ArrayDeque;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The block layer's shared worker pool (QEMU's thread-pool.c): a bounded set of daemon threads doing blocking
 * positional I/O, plus one timer thread for requests submitted outside any AioContext. Shared by every
 * {@link BlockNodes}; reference-counted so the last {@link BlockNodes#close()} shuts it down, and created again
 * on the next acquire. Threads are started lazily and time out when idle.
 */
final class AioPool {
    /** A worker idle this long ends (threads are started again on demand). */
    private static final long IDLE_NS = TimeUnit.SECONDS.toNanos(10);
    private static final Logger LOG = Logger.getLogger(AioPool.class.getName());
    /** QEMU's thread pool defaults to 64 workers; on small hosts fewer suffice as the syscalls are the cost. */
    static final int MAX_WORKERS = 32;

    private static final Object LOCK = new Object();
    private static final AtomicInteger THREAD_SEQ = new AtomicInteger();
    private static AioPool shared;
    private static int refs;

    /** Queued work; its monitor guards it, {@link #threads}, {@link #idle} and (for the workers) {@link #shutdown}. */
    private final ArrayDeque<Runnable> work = new ArrayDeque<>(256);
    private int threads;
    private int idle;
    private volatile ScheduledThreadPoolExecutor timer;
    private volatile boolean shutdown;

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

    /**
     * Runs blocking work on a worker thread. Throws RejectedExecutionException after shutdown. Allocates nothing
     * once the pool has grown (a ThreadPoolExecutor's LinkedBlockingQueue allocates a node per task, and its
     * idle workers a condition node per wait): the queue is an ArrayDeque that keeps its capacity, idle workers
     * wait on a plain monitor.
     */
    void execute(Runnable r) {
        boolean start = false;
        synchronized (work) {
            if (shutdown) throw new RejectedExecutionException("block worker pool is shut down");
            work.addLast(r);
            if (idle > 0) work.notify();
            // More queued work than idle workers to take it: grow (up to MAX_WORKERS), as a ThreadPoolExecutor
            // with core = max would.
            if (work.size() > idle && threads < MAX_WORKERS) {
                threads++;
                start = true;
            }
        }
        if (start) startWorker();
    }

    /** Runs r after the delay on the timer thread (for requests submitted outside an AioContext). */
    ScheduledFuture<?> schedule(Runnable r, long delayNs) {
        ScheduledThreadPoolExecutor t = timer;
        if (t == null) t = startTimer();
        return t.schedule(r, delayNs, TimeUnit.NANOSECONDS);
    }

    private void startWorker() {
        Thread t = new Thread(this::workerLoop, "jvhost-aio-" + THREAD_SEQ.incrementAndGet());
        t.setDaemon(true);
        try {
            t.start();
        } catch (Throwable e) {
            synchronized (work) {
                threads--;
            }
            throw e;
        }
    }

    /** A worker: runs queued work; ends after IDLE_NS without any, or at shutdown once the queue is empty. */
    private void workerLoop() {
        while (true) {
            Runnable r;
            synchronized (work) {
                long idleSince = System.nanoTime();
                while ((r = work.pollFirst()) == null) {
                    long left = IDLE_NS - (System.nanoTime() - idleSince);
                    if (shutdown || left <= 0) {
                        threads--;
                        return;
                    }
                    idle++;
                    try {
                        work.wait(Math.max(1, left / 1_000_000));
                    } catch (InterruptedException e) {
                        // Nobody interrupts these threads on purpose (that would close FileChannels); keep serving.
                    } finally {
                        idle--;
                    }
                }
            }
            try {
                r.run();
            } catch (Throwable t) {
                LOG.log(Level.SEVERE, "block worker task failed", t);
            }
        }
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
        synchronized (work) {
            shutdown = true;
            work.notifyAll();
        }
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
