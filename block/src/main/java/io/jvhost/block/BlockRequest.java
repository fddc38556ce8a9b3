package io.jvhost.block;

import io.jvhost.iothread.AioContext;

import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * One in-flight request, from initiation to the return of its completion callback. Pooled: the hot path
 * allocates nothing for it. Life cycle: {@link BlockDriverState} obtains it and raises the node's in-flight
 * count; the driver either completes it from any thread with {@link #done}, hands it to a worker with
 * {@link #executeWork}, queues it (throttling, plugging: linked through {@link #next}) or passes it down to a
 * child ({@link BdrvChild#forward}, where it is the child's completion); {@link #done} moves the completion into
 * the submitter's AioContext; {@link #finish} runs the callback, recycles the object and only then lowers the
 * node's (and the backend's) in-flight count.
 *
 * <p>Nobody may touch a request after calling {@link #done} (it can be recycled and reused at once).
 */
final class BlockRequest implements Runnable, BlockCompletion {
    private static final Logger LOG = Logger.getLogger(BlockRequest.class.getName());

    static final int READ = 0, WRITE = 1, FLUSH = 2, DISCARD = 3, WRITE_ZEROES = 4;
    private static final int PHASE_WORK = 1, PHASE_DELAYED = 2, PHASE_COMPLETE = 3, PHASE_CONTINUE = 4;

    /** Completion is delivered in the submitter's AioContext (or off the submitting plain thread). */
    static final int MODE_CONTEXT = 0;
    /**
     * Completion runs in the thread that completes the request: for requests a filter passes to its child, whose
     * callback is the parent request's {@link #done}, which does the single hop to the submitter's context.
     */
    static final int MODE_DIRECT = 1;

    /** Work that a driver does synchronously on a worker thread; returns 0 or a negative errno. */
    interface Work {
        int work(BlockRequest r);
    }

    /** A driver step to run later in the request's context ({@link #continueIn}). */
    interface Continuation {
        void proceed(BlockRequest r);
    }

    // Request description, valid until done().
    int op;
    long offset;
    long bytes;
    IoVec iov;
    int flags;
    /** Intrusive link for driver queues (throttle group, plug batch); owned by whoever queued the request. */
    BlockRequest next;

    private BlockCompletion cb;
    private AioContext ctx;
    private int mode;
    private Thread submitter;
    private BlockDriverState bs;
    private BlockBackend blk;
    private AioPool pool;
    private Work work;
    private Continuation cont;
    private AioContext.Timer timer;
    private int phase;
    private int ret;

    // ---- pool of free requests: a plain array stack under a lock, so reuse allocates nothing ----
    private static final BlockRequest[] FREE = new BlockRequest[1024];
    private static int freeCount;
    /**
     * Per-thread free lists in front of the shared one: iothreads obtain and recycle their requests on their own
     * thread, so two iothreads no longer meet on FREE's monitor (and bounce its cache lines) twice per request.
     */
    private static final ThreadLocal<Cache> CACHE = ThreadLocal.withInitial(Cache::new);

    private static final class Cache {
        final BlockRequest[] items = new BlockRequest[256];
        int n;
    }

    private BlockRequest() {}

    /**
     * @param bs   the node the request counts on (null: a backend-level failure that never reached a node)
     * @param ctx  where the completion runs (MODE_CONTEXT), and whose timers delay it; null for plain threads
     * @param blk  the backend the request also counts on, or null
     */
    static BlockRequest obtain(BlockDriverState bs, AioPool pool, BlockCompletion cb, AioContext ctx, int mode, BlockBackend blk) {
        BlockRequest r = null;
        Cache c = CACHE.get();
        if (c.n > 0) {
            r = c.items[--c.n];
            c.items[c.n] = null;
        } else {
            synchronized (FREE) {
                if (freeCount > 0) {
                    r = FREE[--freeCount];
                    FREE[freeCount] = null;
                }
            }
        }
        if (r == null) r = new BlockRequest();
        r.bs = bs;
        r.pool = pool;
        r.cb = cb;
        r.ctx = ctx;
        r.mode = mode;
        r.blk = blk;
        r.submitter = ctx == null ? Thread.currentThread() : null;
        return r;
    }

    private void recycle() {
        iov = null;
        next = null;
        cb = null;
        ctx = null;
        submitter = null;
        bs = null;
        blk = null;
        pool = null;
        work = null;
        cont = null;
        phase = 0;
        // The timer stays: it is reused when the next use of this object is in the same context.
        Cache c = CACHE.get();
        if (c.n < c.items.length) {
            c.items[c.n++] = this;
            return;
        }
        synchronized (FREE) {
            if (freeCount < FREE.length) FREE[freeCount++] = this;
        }
    }

    AioContext context() {
        return ctx;
    }

    BlockDriverState node() {
        return bs;
    }

    boolean isWrite() {
        return op != READ && op != FLUSH;
    }

    /** Runs {@code w} on a block worker thread, then completes the request with its result. */
    void runInWorker(Work w) {
        setWork(w);
        executeWork();
    }

    /** Sets the worker-thread work without submitting it (plugged drivers submit later). */
    void setWork(Work w) {
        work = w;
        phase = PHASE_WORK;
    }

    /** Hands the request (with its work set) to the worker pool. */
    void executeWork() {
        try {
            pool.execute(this);
        } catch (RejectedExecutionException e) {
            done(-Errno.EIO);
        }
    }

    /**
     * Runs {@code k} in {@code c}'s thread (inline when the caller already is there), e.g. a throttled request
     * released by a timer of another context, or by a drain, continues in its own submitter's context. For a
     * plain-thread submitter (c == null) it continues on a block worker: never on the releasing thread, which
     * may hold the graph lock.
     */
    void continueIn(AioContext c, Continuation k) {
        if (c != null && c.inContextThread()) {
            k.proceed(this);
            return;
        }
        cont = k;
        phase = PHASE_CONTINUE;
        try {
            if (c != null) c.execute(this); else pool.execute(this);
        } catch (RejectedExecutionException e) {
            phase = 0;
            cont = null;
            k.proceed(this); // nobody else is left to do it
        }
    }

    /**
     * Completes with {@code result} after {@code delayNs}, on a timer of the request's AioContext (or the pool's
     * timer thread for a plain submitter); null-co's latency-ns.
     */
    void doneAfter(int result, long delayNs) {
        ret = result;
        phase = PHASE_DELAYED;
        try {
            if (ctx != null) {
                if (timer == null || timer.context() != ctx) timer = ctx.newTimer(this);
                timer.schedule(delayNs, TimeUnit.NANOSECONDS);
            } else {
                pool.schedule(this, delayNs);
            }
        } catch (RejectedExecutionException e) {
            done(result);
        }
    }

    /** As a child's completion (see {@link BdrvChild#forward}): the child's result completes this request. */
    @Override
    public void complete(int result) {
        done(result);
    }

    /**
     * The driver's result. Callable from any thread, including synchronously from inside the submitting call:
     * the callback is always deferred to the submitter's AioContext (or, for a plain submitting thread, run in
     * the completing worker thread or handed to one).
     */
    void done(int result) {
        if (bs != null && isWrite()) {
            // Before the completion can be seen: a dirty bitmap (mirror) then never misses a finished write.
            bs.markWritten(op, offset, bytes);
        }
        ret = result;
        phase = PHASE_COMPLETE;
        if (mode == MODE_DIRECT) {
            finish();
            return;
        }
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
            // Completed synchronously in the plain thread that is still inside the submitting call: hand it off.
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
        switch (phase) {
            case PHASE_WORK: {
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
                break;
            }
            case PHASE_DELAYED:
                done(ret);
                break;
            case PHASE_CONTINUE: {
                Continuation k = cont;
                cont = null;
                phase = 0;
                k.proceed(this);
                break;
            }
            default:
                finish();
        }
    }

    private void finish() {
        BlockCompletion c = cb;
        BlockDriverState node = bs;
        BlockBackend b = blk;
        int r = ret;
        try {
            c.complete(r);
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, "block completion callback threw", t);
        } finally {
            recycle();
            // Last: zero in-flight must mean the caller's buffers are no longer referenced through this node.
            if (node != null) node.requestDone();
            if (b != null) b.requestDone();
        }
    }
}
