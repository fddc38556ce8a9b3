package io.jvhost.block.job;

import io.jvhost.block.BdrvChild;
import io.jvhost.block.BlockCompletion;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.DirtyBitmap;
import io.jvhost.block.IoVec;
import io.jvhost.iothread.AioContext;

import java.nio.ByteBuffer;
import java.util.BitSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * QEMU's blockdev-mirror (sync=full): copies an in-use source node to a target node of the same size while the
 * guest keeps writing, then, on {@link #complete}, switches every user of the source to the target.
 *
 * <ul>
 *   <li>A dirty bitmap on the source (set by the block layer for every write that finishes on the source,
 *       whichever parent sent it) starts all-dirty. The loop takes dirty chunks (granularity, default 64 KiB),
 *       clears the bit, reads the chunk from the source and, from the read's completion, writes it to the
 *       target; a chunk rewritten meanwhile is dirty again and copied again. At most {@code maxOps} copies run
 *       at once, never two of the same chunk (so an older copy cannot land after a newer one).
 *   <li>READY (BLOCK_JOB_READY) once nothing is dirty and no copy is in flight. The loop keeps copying new
 *       writes afterwards.
 *   <li>Complete: from its own loop the job drains the source subtree (polling its own context; drains issued
 *       by others wait for it from now on), copies what is still dirty, flushes the target, replaces the source
 *       by the target in all its parents ({@link BlockDriverState#replaceInParents}: a backend's root, a parent
 *       node's edge), and ends the drained section. Cancel stops at the next safe point and leaves the source in
 *       place.
 *   <li>The loop only ever continues through the job's bottom half ({@link #reenter}), never by calling itself
 *       from a completion, so the drain in completion (or any drain issued from a completion callback) cannot
 *       deadlock on the job.
 * </ul>
 */
public final class MirrorJob extends BlockJob {
    public static final long DEFAULT_GRANULARITY = 64 * 1024;
    public static final int DEFAULT_MAX_OPS = 16;
    /** Bound for the job's own drain when completing; a drain that long means something is stuck. */
    static final long FINALIZE_DRAIN_TIMEOUT_NS = TimeUnit.SECONDS.toNanos(60);

    private final BlockDriverState source;
    private final BlockDriverState target;
    private final BdrvChild src;
    private final BdrvChild tgt;
    private final DirtyBitmap dirty;
    private final long granularity;
    private final CopyOp[] ops;

    // Context thread only.
    private final BitSet copying = new BitSet();
    private int freeTop;
    private long cursor;
    private long copiedBytes;
    private long inFlightBytes;
    private String failure;
    private boolean drainedForCompletion;
    private boolean flushing, flushed;

    private MirrorJob(Jobs jobs, String id, AioContext ctx, BlockDriverState source, BlockDriverState target,
                      long granularity, int maxOps, boolean autoDismiss) {
        super(jobs, id, "mirror", ctx, autoDismiss);
        this.source = source;
        this.target = target;
        this.granularity = granularity;
        BdrvChild s = null, t = null;
        DirtyBitmap d = null;
        try {
            s = use(source, "source");
            t = use(target, "target");
            d = source.createDirtyBitmap(granularity);
            d.setAll();
        } catch (RuntimeException e) {
            if (s != null) s.detach();
            if (t != null) t.detach();
            jobs.unregister(this);
            throw e;
        }
        this.src = s;
        this.tgt = t;
        this.dirty = d;
        this.ops = new CopyOp[maxOps];
        for (int i = 0; i < maxOps; i++) ops[i] = new CopyOp((int) granularity);
        this.freeTop = maxOps;
        setProgress(0, source.getLength());
    }

    /** A mirror with default granularity (64 KiB) and 16 parallel copies, dismissed automatically. */
    public static MirrorJob create(Jobs jobs, String id, AioContext ctx, BlockDriverState source, BlockDriverState target) {
        return create(jobs, id, ctx, source, target, DEFAULT_GRANULARITY, DEFAULT_MAX_OPS, true);
    }

    /**
     * Creates the job (status CREATED; {@link #start} runs it).
     *
     * @param ctx          the context the copy loop and its completions run in
     * @param granularity  bytes per dirty chunk and copy: a power of two, 512 B to 64 MiB
     * @param maxOps       parallel copies, 1 to 256 (each has a buffer of granularity bytes; 256 MiB in all at most)
     */
    public static MirrorJob create(Jobs jobs, String id, AioContext ctx, BlockDriverState source, BlockDriverState target,
                                   long granularity, int maxOps, boolean autoDismiss) {
        if (source == target) throw new IllegalArgumentException("source and target are the same node");
        if (source.getLength() != target.getLength()) {
            throw new IllegalArgumentException("source '" + source.nodeName() + "' (" + source.getLength()
                    + " bytes) and target '" + target.nodeName() + "' (" + target.getLength() + " bytes) differ in size");
        }
        if (target.isReadOnly()) throw new IllegalArgumentException("target '" + target.nodeName() + "' is read-only");
        if (granularity < 512 || granularity > (64L << 20) || Long.bitCount(granularity) != 1) {
            throw new IllegalArgumentException("granularity " + granularity + " (a power of two, 512 B to 64 MiB)");
        }
        if (maxOps < 1 || maxOps > 256) throw new IllegalArgumentException("maxOps " + maxOps + " (1 to 256)");
        if (granularity * maxOps > (256L << 20)) {
            throw new IllegalArgumentException("copy buffers of " + maxOps + " x " + granularity + " bytes exceed 256 MiB");
        }
        if ((source.getLength() + granularity - 1) / granularity > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("granularity " + granularity + " is too fine for " + source.getLength() + " bytes");
        }
        if (source.isClosed() || target.isClosed()) throw new IllegalArgumentException("node is closed");
        return new MirrorJob(jobs, id, ctx, source, target, granularity, maxOps, autoDismiss);
    }

    public BlockDriverState source() {
        return source;
    }

    public BlockDriverState target() {
        return target;
    }

    /** Dirty bytes still to copy (for tests and query-block-jobs). */
    public long remainingDirtyBytes() {
        return dirty.dirtyBytes();
    }

    // ------------------------------------------------------------------------------------------ the loop

    @Override
    protected void iterate() {
        int busy = ops.length - freeTop;
        if (failure != null || error() != null || (cancelRequested() && !isFinalizing())) {
            if (busy == 0) windDown();
            return;
        }
        if (pauseRequested()) {
            if (busy == 0) pausePoint(true);
            return;
        }
        pausePoint(false);

        while (freeTop > 0) {
            long c = nextChunk();
            if (c < 0) break;
            if (!mayStartOp()) return; // a drain (or pause) arrived: stop here, re-entered when it ends
            CopyOp op = ops[--freeTop];
            dirty.clear(c); // before the read: a write finishing after this point marks it again
            copying.set((int) c);
            op.start(c);
        }
        busy = ops.length - freeTop;
        setProgress(copiedBytes, copiedBytes + inFlightBytes + dirty.dirtyBytes());
        if (busy != 0 || dirty.count() != 0) return;

        // Converged: nothing dirty, nothing in flight.
        becomeReady();
        if (drainedForCompletion) {
            finishCompletion();
        } else if (completeRequested()) {
            beginCompletion();
        }
    }

    /** The next dirty chunk that is not being copied, round robin from the cursor; -1 if none. */
    private long nextChunk() {
        long n = dirty.chunks();
        if (n == 0) return -1;
        long c = nextFree(cursor, n);
        if (c < 0 && cursor > 0) c = nextFree(0, cursor);
        if (c >= 0) cursor = c + 1 >= n ? 0 : c + 1;
        return c;
    }

    private long nextFree(long from, long end) {
        long c = dirty.nextDirty(from);
        while (c >= 0 && c < end) {
            if (!copying.get((int) c)) return c;
            c = dirty.nextDirty(c + 1);
        }
        return -1;
    }

    private void beginCompletion() {
        try {
            drainForFinalize(source, FINALIZE_DRAIN_TIMEOUT_NS);
        } catch (TimeoutException | RuntimeException e) {
            failure = "completion drain failed: " + e.getMessage();
            reenter();
            return;
        }
        drainedForCompletion = true;
        // What was written between convergence and the drain is copied by the next iterations (pauses no longer
        // hold the job: isFinalizing()), then finishCompletion() runs.
        reenter();
    }

    private void finishCompletion() {
        if (!flushed) {
            if (!flushing) {
                flushing = true;
                tgt.flush(ret -> {
                    flushing = false;
                    flushed = true;
                    if (ret < 0) failure = "flushing target '" + target.nodeName() + "' failed: errno " + -ret;
                    reenter();
                });
            }
            return;
        }
        try {
            source.replaceInParents(target, asParent());
        } catch (RuntimeException e) {
            failure = "switching to the target failed: " + e.getMessage();
            windDown();
            return;
        }
        source.subtreeDrainedEnd();
        drainedForCompletion = false;
        setProgress(copiedBytes, copiedBytes);
        concludeSuccess();
    }

    /** Cancel or failure with nothing in flight: end the drain we hold, if any, and conclude. */
    private void windDown() {
        if (flushing) return; // the flush completion re-enters
        if (drainedForCompletion) {
            drainedForCompletion = false;
            source.subtreeDrainedEnd();
        }
        String err = failure != null ? failure : error();
        concludeAborted(err);
    }

    @Override
    protected void cleanup() {
        source.releaseDirtyBitmap(dirty);
    }

    private void copyDone(CopyOp op, int ret) {
        copying.clear((int) op.chunk);
        inFlightBytes -= op.len;
        if (ret < 0) {
            dirty.setRange(op.offset, op.len); // not copied after all
            if (failure == null) {
                failure = (op.reading ? "reading source '" + source.nodeName() : "writing target '" + target.nodeName())
                        + "' at " + op.offset + " failed: errno " + -ret;
            }
        } else {
            copiedBytes += op.len;
        }
        ops[freeTop++] = op;
        opFinished();
        reenter();
    }

    /** One chunk copy: read from the source, then (from the read's completion) write to the target. */
    private final class CopyOp implements BlockCompletion {
        final ByteBuffer buf;
        final IoVec iov = new IoVec(1);
        long chunk, offset;
        int len;
        boolean reading;

        CopyOp(int size) {
            buf = ByteBuffer.allocateDirect(size);
        }

        void start(long c) {
            chunk = c;
            offset = c * granularity;
            len = (int) dirty.chunkBytes(c);
            inFlightBytes += len;
            buf.clear().limit(len);
            iov.clear();
            iov.add(buf);
            reading = true;
            src.preadv(offset, iov, this);
        }

        @Override
        public void complete(int ret) {
            if (reading && ret >= 0) {
                reading = false;
                // Issued before this read's completion returns: the operation always has a request in flight.
                tgt.pwritev(offset, iov, 0, this);
                return;
            }
            copyDone(this, ret);
        }
    }
}
