package io.jvhost.block;

import io.jvhost.iothread.AioContext;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A node of the block graph: one driver instance, its child edges ({@link BdrvChild}) and the generic request
 * layer (QEMU's block/io.c): range and permission checks, dirty tracking, and the in-flight counter that drain
 * is built on. Created by {@link BlockNodes}.
 *
 * <p>In-flight accounting follows the fine-grained-locking series: a counter raised when a request is
 * initiated and lowered only after its completion callback has returned, including the bottom half that
 * carries the completion into the submitter's AioContext, and including time spent queued by throttling or
 * plugging. Zero therefore means nothing can still touch a caller's buffers through this node. Every drop is
 * reported to drain waiters ({@link AioWait#kick}).
 *
 * <p>Drain ({@link #drainedBegin}, {@link #subtreeDrainedBegin}, {@link #drain}) is described in
 * {@link BlockGraph} and docs/ARCHITECTURE.md. Sections nest and are counted; each begin needs one matching end.
 */
public final class BlockDriverState {
    private static final Logger LOG = Logger.getLogger(BlockDriverState.class.getName());
    /** How long close() waits for in-flight requests before closing the driver under them. */
    static final long CLOSE_DRAIN_TIMEOUT_MS = 10_000;
    private static final AtomicLong SEQ = new AtomicLong();
    private static final DirtyBitmap[] NO_BITMAPS = new DirtyBitmap[0];

    /** Creation order: a stable order for drain's walk. */
    final long seq = SEQ.incrementAndGet();
    private final String nodeName;
    private final BlockDriver drv;
    private final boolean readOnly;
    private final AioPool pool;
    /** Changes only while the node is drained (truncate); volatile for the request threads. */
    private volatile long length;
    private final AtomicLong inFlight = new AtomicLong();
    private volatile boolean closed;
    private volatile DirtyBitmap[] bitmaps = NO_BITMAPS;
    /** Test hook: told about every request this node initiates. */
    volatile RequestObserver observer;

    // ---- graph state, guarded by the graph lock (BlockGraph) ----
    final List<BdrvChild> children = new ArrayList<>();
    final List<BdrvChild> parents = new ArrayList<>();
    /** Written under the graph lock; volatile so that phase-4 waiters and attach see it. */
    volatile int quiesceCounter;
    int subtreeQuiesce;
    /** The nodes whose throttling and plugging this node's quiesce turned off (phase 1 and 2). */
    List<BlockDriverState> ioControlsOff;
    private final BlockParent asParent = new NodeParent();

    /** Sees every request a node initiates (tests count starts with it). */
    interface RequestObserver {
        void started(BlockDriverState bs, int op, long offset, long bytes);
    }

    BlockDriverState(String nodeName, BlockDriver drv, boolean readOnly, AioPool pool) {
        this.nodeName = nodeName;
        this.drv = drv;
        this.readOnly = readOnly;
        this.pool = pool;
        this.length = drv.getLength();
    }

    public String nodeName() {
        return nodeName;
    }

    public String driverName() {
        return drv.name();
    }

    public boolean isReadOnly() {
        return readOnly;
    }

    /** Bytes. */
    public long getLength() {
        return length;
    }

    /** Requests initiated and not yet really completed (callback returned). */
    public long inFlight() {
        return inFlight.get();
    }

    public boolean isClosed() {
        return closed;
    }

    // ------------------------------------------------------------------------------------------- graph

    /** The child edges, in creation order (a snapshot). */
    public List<BdrvChild> children() {
        BlockGraph.lock();
        try {
            return List.copyOf(children);
        } finally {
            BlockGraph.unlock();
        }
    }

    /** The edges that point at this node: backends, parent nodes, jobs (a snapshot). */
    public List<BdrvChild> parentEdges() {
        BlockGraph.lock();
        try {
            return List.copyOf(parents);
        } finally {
            BlockGraph.unlock();
        }
    }

    public boolean hasParents() {
        BlockGraph.lock();
        try {
            return !parents.isEmpty();
        } finally {
            BlockGraph.unlock();
        }
    }

    /**
     * Makes {@code parent} (e.g. a block job) a user of this node through a new edge; requests go through the
     * edge, and drain calls the parent's callbacks. If the node is drained right now, the parent is told at once.
     */
    public BdrvChild attachParent(BlockParent parent, String childName) {
        if (parent == null || childName == null) throw new NullPointerException();
        return BlockGraph.attach(parent, null, childName, this);
    }

    /** A child edge of this node (filter drivers). */
    BdrvChild attachChild(String childName, BlockDriverState child) {
        return BlockGraph.attach(asParent, this, childName, child);
    }

    /**
     * QEMU's bdrv_replace_node: every parent of this node (backends and parent nodes), except the edges owned by
     * {@code except}, now uses {@code to}. Call it with this node drained. The replacement must have the same
     * length and be writable wherever a parent writes.
     */
    public void replaceInParents(BlockDriverState to, BlockParent except) {
        BlockGraph.lock();
        try {
            if (to == this) return;
            if (to.getLength() != length) {
                throw new IllegalArgumentException("node '" + to.nodeName + "' has length " + to.getLength()
                        + ", node '" + nodeName + "' " + length);
            }
            List<BdrvChild> moving = new ArrayList<>();
            for (BdrvChild c : parents) {
                if (c.parent() == except) continue;
                boolean writes = c.parentNode != null ? !c.parentNode.isReadOnly()
                        : c.parent() instanceof BlockBackend.Parent && ((BlockBackend.Parent) c.parent()).writable();
                if (writes && to.isReadOnly()) {
                    throw new IllegalArgumentException("node '" + to.nodeName + "' is read-only but "
                            + c.parent().parentName() + " writes");
                }
                moving.add(c);
            }
            for (BdrvChild c : moving) BlockGraph.replace(c, to);
        } finally {
            BlockGraph.unlock();
        }
    }

    // ------------------------------------------------------------------------------------------- resize

    /**
     * QEMU's bdrv_truncate for block_resize: drains this node's subtree (and so quiesces its parents), resizes
     * (growing or shrinking), then, after the drained section, tells the parents: filters that follow their child
     * take the new length, and backends call {@link BlockDevOps#resized}. From a management thread, not holding
     * the graph lock and not from a completion callback (drain waits).
     */
    public void truncate(long newLength) throws BlockException {
        if (newLength < 0) throw new BlockException("Parameter 'size' expects a non-negative size");
        if (readOnly) throw new BlockException("Node '" + nodeName + "' is read only");
        if (closed) throw new BlockException("Node '" + nodeName + "' is closed");
        subtreeDrainedBegin();
        try {
            truncateDrained(newLength);
        } finally {
            subtreeDrainedEnd();
        }
        notifyResized();
    }

    /** The resize itself; the caller drained this node's subtree. Filters call it on their child. */
    void truncateDrained(long newLength) throws BlockException {
        if (readOnly) throw new BlockException("Node '" + nodeName + "' is read only");
        if (newLength == length) return;
        drv.truncate(newLength);
        length = drv.getLength();
    }

    /** Tells every parent edge (a snapshot: callbacks run without the graph lock) that this node was resized. */
    private void notifyResized() {
        List<BdrvChild> edges;
        BlockGraph.lock();
        try {
            edges = new ArrayList<>(parents);
        } finally {
            BlockGraph.unlock();
        }
        for (BdrvChild e : edges) e.parent().childResized(e);
    }

    // ------------------------------------------------------------------------------------------- drain

    /**
     * Quiesces this node and, through their callbacks, its parents (recursively up to the backends and jobs),
     * then waits until none of them has a request in flight. No new request starts through them until
     * {@link #drainedEnd}. Waits without bound (logging periodically); must not be called holding the graph lock.
     */
    public void drainedBegin() {
        try {
            BlockGraph.drainedBegin(this, false, Long.MAX_VALUE);
        } catch (TimeoutException e) {
            throw new IllegalStateException(e); // no deadline: cannot happen
        }
    }

    /** {@link #drainedBegin()} with a bound; on timeout the section is undone (no drainedEnd needed). */
    public void drainedBegin(long timeout, TimeUnit unit) throws TimeoutException {
        BlockGraph.drainedBegin(this, false, unit.toNanos(timeout));
    }

    public void drainedEnd() {
        BlockGraph.drainedEnd(this, false);
    }

    /** Waits until nothing is in flight here (begin and end at once). */
    public void drain() {
        drainedBegin();
        drainedEnd();
    }

    /** Like {@link #drainedBegin()} for this node and every node below it. */
    public void subtreeDrainedBegin() {
        try {
            BlockGraph.drainedBegin(this, true, Long.MAX_VALUE);
        } catch (TimeoutException e) {
            throw new IllegalStateException(e);
        }
    }

    public void subtreeDrainedBegin(long timeout, TimeUnit unit) throws TimeoutException {
        BlockGraph.drainedBegin(this, true, unit.toNanos(timeout));
    }

    public void subtreeDrainedEnd() {
        BlockGraph.drainedEnd(this, true);
    }

    public void subtreeDrain() {
        subtreeDrainedBegin();
        subtreeDrainedEnd();
    }

    /** How many drained sections (own, of a drained child, or of a drained ancestor's subtree) are open. */
    public int quiesceCounter() {
        return quiesceCounter;
    }

    public boolean isQuiesced() {
        return quiesceCounter > 0;
    }

    /**
     * Waits until no request is in flight (remotely; from a context's own thread by polling that context).
     * Not a drain: requests may keep starting.
     */
    public void awaitIdle(long timeout, TimeUnit unit) throws TimeoutException, InterruptedException {
        if (Thread.interrupted()) throw new InterruptedException();
        if (!AioWait.waitWhile(() -> inFlight.get() != 0, unit.toNanos(timeout))) {
            throw new TimeoutException("node '" + nodeName + "': " + inFlight.get() + " requests still in flight");
        }
    }

    // ------------------------------------------------------------------------------------ dirty bitmaps

    /** Starts tracking writes to this node with the given granularity (bytes, a power of two, >= 512). */
    public DirtyBitmap createDirtyBitmap(long granularity) {
        DirtyBitmap b = new DirtyBitmap(length, granularity);
        synchronized (this) {
            DirtyBitmap[] old = bitmaps;
            DirtyBitmap[] n = Arrays.copyOf(old, old.length + 1);
            n[old.length] = b;
            bitmaps = n;
        }
        return b;
    }

    public void releaseDirtyBitmap(DirtyBitmap b) {
        synchronized (this) {
            DirtyBitmap[] old = bitmaps;
            for (int i = 0; i < old.length; i++) {
                if (old[i] == b) {
                    DirtyBitmap[] n = new DirtyBitmap[old.length - 1];
                    System.arraycopy(old, 0, n, 0, i);
                    System.arraycopy(old, i + 1, n, i, old.length - i - 1);
                    bitmaps = n;
                    return;
                }
            }
        }
    }

    /** A write-like request finished at the driver (before its completion is delivered). Any thread. */
    void markWritten(int op, long offset, long bytes) {
        DirtyBitmap[] b = bitmaps;
        for (DirtyBitmap d : b) d.setRange(offset, bytes);
    }

    // ------------------------------------------------------------------------------------------- close

    /**
     * Waits (bounded) for in-flight requests, then drops its child edges and closes the driver. Later requests
     * fail with -ENOMEDIUM. Called from a completion callback of this node, it can only time out; callers drain
     * first.
     */
    public void close() {
        synchronized (this) {
            if (closed) return;
            closed = true;
        }
        try {
            awaitIdle(CLOSE_DRAIN_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            LOG.log(Level.WARNING, "closing node '" + nodeName + "' with requests in flight", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (BdrvChild c : children()) c.detach();
        drv.close();
    }

    @Override
    public String toString() {
        return "BlockDriverState(" + nodeName + ", " + drv.name() + (readOnly ? ", ro" : "") + ")";
    }

    // ------------------------------------------------------------------------------------------------------
    // Request entry points (BlockBackend and BdrvChild use submit; the short forms serve tests).

    void preadv(long offset, IoVec iov, BlockCompletion cb) {
        submit(BlockRequest.READ, offset, iov == null ? -1 : iov.size(), iov, 0, cb, AioContext.current(), BlockRequest.MODE_CONTEXT, null);
    }

    void pwritev(long offset, IoVec iov, int flags, BlockCompletion cb) {
        submit(BlockRequest.WRITE, offset, iov == null ? -1 : iov.size(), iov, flags, cb, AioContext.current(), BlockRequest.MODE_CONTEXT, null);
    }

    void flush(BlockCompletion cb) {
        submit(BlockRequest.FLUSH, 0, 0, null, 0, cb, AioContext.current(), BlockRequest.MODE_CONTEXT, null);
    }

    void pdiscard(long offset, long bytes, BlockCompletion cb) {
        submit(BlockRequest.DISCARD, offset, bytes, null, 0, cb, AioContext.current(), BlockRequest.MODE_CONTEXT, null);
    }

    void pwriteZeroes(long offset, long bytes, int flags, BlockCompletion cb) {
        submit(BlockRequest.WRITE_ZEROES, offset, bytes, null, flags, cb, AioContext.current(), BlockRequest.MODE_CONTEXT, null);
    }

    /**
     * Initiates a request: counts it, checks it, hands it to the driver.
     *
     * @param bytes the iov size for reads and writes (-1 when iov is null), the range for discard/write-zeroes
     */
    void submit(int op, long offset, long bytes, IoVec iov, int flags, BlockCompletion cb, AioContext ctx, int mode, BlockBackend blk) {
        if (cb == null) throw new NullPointerException("completion");
        // Raised before anything else: from here on the request counts, whatever its outcome.
        inFlight.incrementAndGet();
        BlockRequest r = BlockRequest.obtain(this, pool, cb, ctx, mode, blk);
        r.op = op;
        r.offset = offset;
        r.bytes = bytes;
        r.iov = iov;
        r.flags = flags;
        RequestObserver o = observer;
        if (o != null) o.started(this, op, offset, bytes);
        int err = validate(r);
        if (err != 0) {
            r.done(err);
            return;
        }
        switch (op) {
            case BlockRequest.READ:
                drv.read(offset, iov, r);
                break;
            case BlockRequest.WRITE:
                drv.write(offset, iov, flags, r);
                break;
            case BlockRequest.FLUSH:
                drv.flush(r);
                break;
            case BlockRequest.DISCARD:
                drv.discard(offset, bytes, r);
                break;
            default:
                drv.writeZeroes(offset, bytes, flags, r);
        }
    }

    private int validate(BlockRequest r) {
        switch (r.op) {
            case BlockRequest.READ: {
                if (r.iov == null) return -Errno.EINVAL;
                int err = check(r.offset, r.bytes, false);
                if (err == 0 && r.iov.hasReadOnlySegment()) err = -Errno.EINVAL;
                return err;
            }
            case BlockRequest.WRITE:
                if (r.iov == null || (r.flags & ~BlockBackend.FUA) != 0) return -Errno.EINVAL;
                return check(r.offset, r.bytes, true);
            case BlockRequest.FLUSH:
                return closed ? -Errno.ENOMEDIUM : 0;
            case BlockRequest.DISCARD:
                return check(r.offset, r.bytes, true);
            case BlockRequest.WRITE_ZEROES:
                if ((r.flags & ~(BlockBackend.FUA | BlockBackend.MAY_UNMAP)) != 0) return -Errno.EINVAL;
                return check(r.offset, r.bytes, true);
            default:
                return -Errno.EINVAL;
        }
    }

    /** Completes a request with an error decided above the node, with full accounting on this node. */
    void fail(BlockCompletion cb, int err) {
        fail(cb, err, AioContext.current(), null);
    }

    void fail(BlockCompletion cb, int err, AioContext ctx, BlockBackend blk) {
        if (cb == null) throw new NullPointerException("completion");
        inFlight.incrementAndGet();
        BlockRequest.obtain(this, pool, cb, ctx, BlockRequest.MODE_CONTEXT, blk).done(err);
    }

    BlockDriver driver() {
        return drv;
    }

    AioPool pool() {
        return pool;
    }

    BlockParent asParent() {
        return asParent;
    }

    /** QEMU's bdrv_check_request plus the read-only check: 0, or the negative errno to complete with. */
    private int check(long offset, long bytes, boolean write) {
        if (closed) return -Errno.ENOMEDIUM;
        if (offset < 0 || bytes < 0) return -Errno.EINVAL;
        // offset + bytes cannot overflow: both are non-negative and compared without adding.
        if (offset > length || bytes > length - offset) return -Errno.EIO;
        if (write && readOnly) return -Errno.EPERM;
        return 0;
    }

    /** Called by {@link BlockRequest} after the completion callback returned. */
    void requestDone() {
        inFlight.decrementAndGet();
        AioWait.kick();
    }

    /** This node as the parent of its child edges: a drained child quiesces this node too. */
    private final class NodeParent implements BlockParent {
        @Override
        public String parentName() {
            return "node '" + nodeName + "'";
        }

        @Override
        public void childDrainedBegin(BdrvChild c) {
            BlockGraph.quiesce(BlockDriverState.this);
        }

        @Override
        public void childDrainedEnd(BdrvChild c) {
            BlockGraph.unquiesce(BlockDriverState.this);
        }
        // childDrainedPoll: the node itself is among the nodes drain waits for.

        @Override
        public void childResized(BdrvChild c) {
            // A length-following filter (raw without size/offset, throttle) takes the child's length and passes
            // the news up; it was already updated if the truncate came through it (then nothing changes here).
            long before = length;
            if (drv.childResized(c.bs().getLength())) {
                length = drv.getLength();
                if (length != before) notifyResized();
            }
        }
    }
}
