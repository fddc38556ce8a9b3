package io.jvhost.block;

import io.jvhost.iothread.AioContext;

import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * What an export (the virtio-blk device) attaches to: an edge to the root node of its tree, the permission the
 * export holds on it, and the guest-visible write-cache mode. All request methods complete through the callback,
 * never synchronously, in the AioContext of the submitting thread.
 *
 * <p>Drain: the backend is a parent of its root. When the root is quiesced the backend calls the device's
 * {@link BlockDevOps#drainedBegin} (stop taking requests from the guest) and, like QEMU's blk_wait_while_drained,
 * parks every request submitted until the end of the drained section: parked requests are not started and do
 * not count as in flight anywhere; they restart in submission order (per submitting context) after
 * {@link BlockDevOps#drainedEnd}. So no request starts through a drained backend, even if the device races.
 *
 * <p>Thread model: requests from any thread (typically one iothread per virtqueue); the backend's own counters
 * are atomic, its parking queue is guarded by the backend's monitor, its drain state changes under the graph lock.
 */
public final class BlockBackend {
    /** Force unit access: the write is on stable storage when it completes. */
    public static final int FUA = 1;
    /** Write-zeroes may deallocate (punch a hole) as long as the range reads back as zeros. */
    public static final int MAY_UNMAP = 2;

    private static final int NOT_DONE = Integer.MIN_VALUE;

    private final Parent parent = new Parent();
    private final BdrvChild root;
    private final boolean writable;
    private volatile boolean writeCache = true;
    private volatile boolean closed;
    private volatile BlockDevOps devOps;

    /** Requests started through this backend and not completed (callback returned). Parked ones excluded. */
    private final AtomicLong inFlight = new AtomicLong();
    /** Drained sections of the root that reached this backend (written under the graph lock and the monitor). */
    private volatile int quiesce;
    private volatile int parkedCount;
    private final ArrayDeque<Parked> parked = new ArrayDeque<>(); // guarded by this

    public BlockBackend(BlockDriverState root, boolean writable) {
        Objects.requireNonNull(root, "root");
        if (writable && root.isReadOnly()) {
            throw new IllegalArgumentException("node '" + root.nodeName() + "' is read-only");
        }
        this.writable = writable;
        this.root = BlockGraph.attach(parent, null, "root", root);
    }

    /** The current root node (it changes with {@link #replaceRoot}). */
    public BlockDriverState root() {
        return root.bs();
    }

    public long getLength() {
        return root.bs().getLength();
    }

    /**
     * Resizes the root node ({@link BlockDriverState#truncate}); the device hears about it through
     * {@link BlockDevOps#resized}. From a management thread.
     */
    public void truncate(long newLength) throws BlockException {
        root().truncate(newLength);
    }

    public boolean isWritable() {
        return writable;
    }

    public boolean isWriteCacheEnabled() {
        return writeCache;
    }

    /** Off = writethrough (QEMU's cache.writeback=off): every write also flushes before it completes. */
    public void setWriteCacheEnabled(boolean on) {
        writeCache = on;
    }

    /** The device's drain callbacks (null: none). */
    public void setDevOps(BlockDevOps ops) {
        devOps = ops;
    }

    /** Requests started through this backend and not yet completed (parked ones are not counted). */
    public long inFlight() {
        return inFlight.get();
    }

    /** True while the root (or something it depends on) is drained: new requests are parked. */
    public boolean isQuiesced() {
        return quiesce > 0;
    }

    /** Requests waiting for the end of a drained section. */
    public int parkedRequests() {
        return parkedCount;
    }

    /**
     * Switches the backend to another root node (mirror completion). Call it with the old root drained; the
     * backend's drain state follows the edge (it stays quiesced until the old root's drained section ends, and
     * picks up the new root's). The new root must have the same length and be writable if the backend writes.
     */
    public void replaceRoot(BlockDriverState newRoot) {
        Objects.requireNonNull(newRoot, "newRoot");
        BlockGraph.lock();
        try {
            if (closed) throw new IllegalStateException("backend is closed");
            if (writable && newRoot.isReadOnly()) {
                throw new IllegalArgumentException("node '" + newRoot.nodeName() + "' is read-only");
            }
            if (newRoot.getLength() != getLength()) {
                throw new IllegalArgumentException("node '" + newRoot.nodeName() + "' has length " + newRoot.getLength()
                        + ", the backend " + getLength());
            }
            BlockGraph.replace(root, newRoot);
        } finally {
            BlockGraph.unlock();
        }
    }

    // ------------------------------------------------------------------------------------------- requests

    public void preadv(long offset, IoVec iov, BlockCompletion cb) {
        submit(BlockRequest.READ, offset, iov == null ? -1 : iov.size(), iov, 0, cb);
    }

    /** @param flags 0 or {@link #FUA} */
    public void pwritev(long offset, IoVec iov, int flags, BlockCompletion cb) {
        submit(BlockRequest.WRITE, offset, iov == null ? -1 : iov.size(), iov, flags, cb);
    }

    public void flush(BlockCompletion cb) {
        submit(BlockRequest.FLUSH, 0, 0, null, 0, cb);
    }

    public void pdiscard(long offset, long bytes, BlockCompletion cb) {
        submit(BlockRequest.DISCARD, offset, bytes, null, 0, cb);
    }

    /** @param flags any of {@link #MAY_UNMAP}, {@link #FUA} */
    public void pwriteZeroes(long offset, long bytes, int flags, BlockCompletion cb) {
        submit(BlockRequest.WRITE_ZEROES, offset, bytes, null, flags, cb);
    }

    /**
     * Batches submissions from the calling thread until {@link #unplug} (QEMU's blk_io_plug), e.g. around one
     * pass over a virtqueue. Per thread, nestable. Drain flushes batches at once (phase 2).
     */
    public void plug() {
        Plug.begin();
    }

    public void unplug() {
        Plug.end();
    }

    private void submit(int op, long offset, long bytes, IoVec iov, int flags, BlockCompletion cb) {
        Objects.requireNonNull(cb, "completion");
        AioContext ctx = AioContext.current();
        // Counted before looking at the drain state; drain looks at the count after setting the state, so
        // either we see the drain and park, or the drain sees us and waits (blk_wait_while_drained).
        inFlight.incrementAndGet();
        if (closed) {
            failDetached(cb, -Errno.ENOMEDIUM, ctx);
            return;
        }
        if ((quiesce | parkedCount) != 0 && park(op, offset, bytes, iov, flags, cb, ctx)) return;
        start(op, offset, bytes, iov, flags, cb, ctx);
    }

    /** Starts a request that is already counted in {@link #inFlight}. */
    private void start(int op, long offset, long bytes, IoVec iov, int flags, BlockCompletion cb, AioContext ctx) {
        if (closed) {
            failDetached(cb, -Errno.ENOMEDIUM, ctx);
            return;
        }
        if (op != BlockRequest.READ && op != BlockRequest.FLUSH && !writable) {
            // Counted on the root like any request that reached it (the device sees no difference).
            root.bs().fail(cb, -Errno.EPERM, ctx, this);
            return;
        }
        if (!writeCache && (op == BlockRequest.WRITE || op == BlockRequest.WRITE_ZEROES)) {
            flags |= FUA; // like blk_co_pwritev_part: writethrough applies to zero writes too
        }
        root.bs().submit(op, offset, bytes, iov, flags, cb, ctx, BlockRequest.MODE_CONTEXT, this);
    }

    /** A detached backend's error: completes (deferred, like any completion) without touching a node. */
    private void failDetached(BlockCompletion cb, int err, AioContext ctx) {
        BlockRequest.obtain(null, root.bs().pool(), cb, ctx, BlockRequest.MODE_CONTEXT, this).done(err);
    }

    /** Called by {@link BlockRequest} after the completion callback returned. */
    void requestDone() {
        inFlight.decrementAndGet();
        AioWait.kick();
    }

    // -------------------------------------------------------------------------------------------- parking

    private static final class Parked {
        final int op;
        final long offset, bytes;
        final IoVec iov;
        final int flags;
        final BlockCompletion cb;
        final AioContext ctx;

        Parked(int op, long offset, long bytes, IoVec iov, int flags, BlockCompletion cb, AioContext ctx) {
            this.op = op;
            this.offset = offset;
            this.bytes = bytes;
            this.iov = iov;
            this.flags = flags;
            this.cb = cb;
            this.ctx = ctx;
        }
    }

    /**
     * Parks the request if the backend is quiesced, or if earlier requests of the same context are still parked
     * (order). Returns false if it may start after all (it stays counted then).
     */
    private boolean park(int op, long offset, long bytes, IoVec iov, int flags, BlockCompletion cb, AioContext ctx) {
        synchronized (this) {
            if (quiesce == 0 && !hasParkedFor(ctx)) return false;
            parked.add(new Parked(op, offset, bytes, iov, flags, cb, ctx));
            parkedCount++;
            if (quiesce == 0) scheduleRestart(ctx); // only the order held it back
        }
        inFlight.decrementAndGet();
        AioWait.kick();
        return true;
    }

    private boolean hasParkedFor(AioContext ctx) {
        for (Parked p : parked) if (p.ctx == ctx) return true;
        return false;
    }

    /** Restarts ctx's parked requests in ctx's thread (a block worker for plain-thread submitters). Holds this. */
    private void scheduleRestart(AioContext ctx) {
        if (ctx != null) {
            try {
                ctx.execute(() -> restart(ctx));
                return;
            } catch (RejectedExecutionException e) {
                // The context is gone; its requests can only complete (with an error or not) from elsewhere.
            }
        }
        root.bs().pool().execute(() -> restart(ctx));
    }

    private void restart(AioContext ctx) {
        List<Parked> go = new ArrayList<>();
        synchronized (this) {
            if (quiesce > 0) return; // drained again: that section's end schedules the restart
            for (Iterator<Parked> it = parked.iterator(); it.hasNext(); ) {
                Parked p = it.next();
                if (p.ctx == ctx) {
                    go.add(p);
                    it.remove();
                }
            }
            parkedCount -= go.size();
            // Counted before the monitor is released: a drain that starts now waits for them.
            inFlight.addAndGet(go.size());
        }
        for (Parked p : go) start(p.op, p.offset, p.bytes, p.iov, p.flags, p.cb, p.ctx);
    }

    /** Called (graph lock held) when the root's drained state reaches or leaves this backend. */
    private void drainedBegin() {
        boolean first;
        synchronized (this) {
            first = quiesce++ == 0;
        }
        BlockDevOps ops = devOps;
        if (first && ops != null) ops.drainedBegin();
    }

    private void drainedEnd() {
        boolean last;
        synchronized (this) {
            if (quiesce <= 0) throw new IllegalStateException("backend drainedEnd without begin");
            last = --quiesce == 0;
        }
        if (!last) return;
        BlockDevOps ops = devOps;
        if (ops != null) ops.drainedEnd();
        synchronized (this) {
            if (quiesce > 0) return;
            List<AioContext> ctxs = new ArrayList<>();
            for (Parked p : parked) if (!ctxs.contains(p.ctx)) ctxs.add(p.ctx);
            for (AioContext c : ctxs) scheduleRestart(c);
        }
    }

    /** The backend as the parent of its root edge. */
    final class Parent implements BlockParent {
        @Override
        public String parentName() {
            return "backend of '" + root.bs().nodeName() + "'";
        }

        @Override
        public void childDrainedBegin(BdrvChild c) {
            drainedBegin();
        }

        @Override
        public void childDrainedEnd(BdrvChild c) {
            drainedEnd();
        }

        @Override
        public boolean childDrainedPoll(BdrvChild c) {
            return inFlight.get() != 0;
        }

        @Override
        public void childResized(BdrvChild c) {
            BlockDevOps ops = devOps;
            if (ops != null && !closed) ops.resized();
        }

        boolean writable() {
            return writable;
        }
    }

    // ------------------------------------------------------------------------------------ synchronous I/O

    /**
     * Reads into {@code buf} (its position..limit) and waits. For management code (main thread, main loop,
     * tests), not devices: the request bypasses parking (the caller may be the one holding the drained
     * section), and, as in the seed, the call returns only when the root node has no request in flight at all,
     * so it belongs in quiet or drained moments. A plain thread waits remotely; a context's own thread polls its
     * own context. Returns 0 or a negative errno. On timeout the request may still use {@code buf}.
     */
    public int readSync(long offset, ByteBuffer buf, long timeout, TimeUnit unit) throws TimeoutException {
        return sync(BlockRequest.READ, offset, buf, 0, timeout, unit);
    }

    /** Like {@link #readSync} for a write of {@code buf}'s position..limit. @param flags 0 or {@link #FUA} */
    public int writeSync(long offset, ByteBuffer buf, int flags, long timeout, TimeUnit unit) throws TimeoutException {
        return sync(BlockRequest.WRITE, offset, buf, flags, timeout, unit);
    }

    /** Like {@link #readSync} for a flush. */
    public int flushSync(long timeout, TimeUnit unit) throws TimeoutException {
        return sync(BlockRequest.FLUSH, 0, null, 0, timeout, unit);
    }

    private int sync(int op, long offset, ByteBuffer buf, int flags, long timeout, TimeUnit unit) throws TimeoutException {
        IoVec iov = null;
        if (buf != null) {
            iov = new IoVec(1);
            iov.add(buf);
        }
        AtomicInteger ret = new AtomicInteger(NOT_DONE);
        BlockDriverState bs = root.bs();
        inFlight.incrementAndGet();
        start(op, offset, iov == null ? 0 : iov.size(), iov, flags, ret::set, AioContext.current());
        if (!AioWait.waitWhile(() -> ret.get() == NOT_DONE || bs.inFlight() != 0, unit.toNanos(timeout))) {
            throw new TimeoutException("synchronous request on '" + bs.nodeName() + "': "
                    + (ret.get() == NOT_DONE ? "not completed" : "node still has " + bs.inFlight() + " in flight"));
        }
        return ret.get();
    }

    // ---------------------------------------------------------------------------------------------- close

    /**
     * Detaches the export: later requests fail with -ENOMEDIUM, parked ones too. Does not close the node
     * (BlockNodes owns it) and does not wait; wait with {@code root().awaitIdle(...)} if needed.
     */
    public void close() {
        closed = true;
        BlockGraph.lock();
        try {
            root.detach(); // if the root was drained, this ends our part of it and restarts (fails) parked requests
        } finally {
            BlockGraph.unlock();
        }
    }

    @Override
    public String toString() {
        return "BlockBackend(" + root.bs().nodeName() + (writable ? ", rw" : ", ro") + ")";
    }
}
