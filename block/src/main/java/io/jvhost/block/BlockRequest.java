package io.jvhost.block;

import io.jvhost.iothread.AioContext;

import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * One in-flight request, from initiation to the return of its completion callback. Pooled: the hot path
 * allocates nothing for it. Life cycle: {@link BlockDriverState} obtains it and raises the node's in-flight
 * count; the driver either completes it from any thread with {@link #done} or hands it to a worker with
 * {@link #runInWorker}; {@link #done} moves the completion into the submitter's AioContext; {@link #finish}
 * runs the callback, recycles the object and only then lowers the in-flight count.
 *
 * <p>Nobody may touch a request after calling {@link #done} (it can be recycled and reused at once).
 */
final class BlockRequest implements Runnable {
    private static final Logger LOG = Logger.getLogger(BlockRequest.class.getName());

    static final int READ = 0, WRITE = 1, FLUSH = 2, DISCARD = 3, WRITE_ZEROES = 4;
    private static final int PHASE_WORK = 1, PHASE_DELAYED = 2, PHASE_COMPLETE = 3;

    /** Work that a driver does synchronously on a worker thread; returns 0 or a negative errno. */
    interface Work {
        int work(BlockRequest r);
    }

    // Request description, valid until done().
    int op;
    long offset;
    long bytes;
    IoVec iov;
    int flags;

    private BlockCompletion cb;
    private AioContext ctx;
    private Thread submitter;
    private BlockDriverState bs;
    private AioPool pool;
    private Work work;
    private int phase;
    private int ret;

    // ---- pool of free requests: a plain array stack under a lock, so reuse allocates nothing ----
    private static final BlockRequest[] FREE = new BlockRequest[1024];
    private static int freeCount;

    private BlockRequest() {}

    static BlockRequest obtain(BlockDriverState bs, AioPool pool, BlockCompletion cb) {
        BlockRequest r = null;
        synchronized (FREE) {
            if (freeCount > 0) {
                r = FREE[--freeCount];
                FREE[freeCount] = null;
            }
        }
        if (r == null) r = new BlockRequest();
        r.bs = bs;
        r.pool = pool;
        r.cb = cb;
        r.ctx = AioContext.current();
        r.submitter = r.ctx == null ? Thread.currentThread() : null;
        return r;
    }

    private void recycle() {
        iov = null;
        cb = null;
        ctx = null;
        submitter = null;
        bs = null;
        pool = null;
        work = null;
        phase = 0;
        synchronized (FREE) {
            if (freeCount < FREE.length) FREE[freeCount++] = this;
        }
    }

    /** Runs {@code w} on a block worker thread, then completes the request with its result. */
    void runInWorker(Work w) {
        work = w;
        phase = PHASE_WORK;
        try {
            pool.execute(this);
        } catch (RejectedExecutionException e) {
            done(-Errno.EIO);
        }
    }

    /**
     * Completes with {@code result} after {@code delayNs}, on a timer of the submitter's AioContext (or the
     * pool's timer thread for a plain submitter); null-co's latency-ns.
     */
    void doneAfter(int result, long delayNs) {
        ret = result;
        phase = PHASE_DELAYED;
        try {
            if (ctx != null) {
                ctx.schedule(this, delayNs, TimeUnit.NANOSECONDS);
            } else {
                pool.schedule(this, delayNs);
            }
        } catch (RejectedExecutionException e) {
            done(result);
        }
    }

    /**
     * The driver's result. Callable from any thread, including synchronously from inside the submitting call:
     * the callback is always deferred to the submitter's AioContext (or, for a plain submitting thread, run in
     * the completing worker thread or handed to one).
     */
    void done(int result) {
        ret = result;
        phase = PHASE_COMPLETE;
        AioContext c = ctx;
        if (c != null) {
            try {
                c.execute(this);
            } catch (RejectedExecutionException e) {
                // The submitter's loop is gone: nobody else can run the callback, and the in-flight count must
                // still drop, so run it here.
                LOG.log(Level.WARNING, "AioContext " + c.name() + " is shut down; completing block request in "
                        + Thread.currentThread().getName());
                finish();
            }
        } else if (Thread.currentThread() == submitter) {
            // Completed synchronously in the plain thread that is still inside preadv/pwritev: hand it off.
            try {
                pool.execute(this);
            } catch (RejectedExecutionException e) {
                Thread t = new Thread(this, "jvhost-aio-late-completion");
                t.setDaemon(true);
                t.start();
            }
        } else {
            finish();
        }
    }

    @Override
    public void run() {
        if (phase == PHASE_WORK) {
            // A stale interrupt would make FileChannel close itself for every user of the node.
            Thread.interrupted();
            int r;
            try {
                r = work.work(this);
            } catch (Throwable t) {
                LOG.log(Level.SEVERE, "block request failed unexpectedly", t);
                r = -Errno.EIO;
            }
            done(r);
        } else if (phase == PHASE_DELAYED) {
            done(ret);
        } else {
            finish();
        }
    }

    private void finish() {
        BlockCompletion c = cb;
        BlockDriverState node = bs;
        int r = ret;
        try {
            c.complete(r);
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, "block completion callback threw", t);
        } finally {
            recycle();
            // Last: zero in-flight must mean the caller's buffers are no longer referenced through this node.
            node.requestDone();
        }
    }
}
