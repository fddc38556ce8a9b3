package io.jvhost.block;

import io.jvhost.iothread.AioContext;

/**
 * An edge of the block graph (QEMU's BdrvChild): a parent ({@link BlockBackend}, node or job) uses a child node
 * under a role name ("root", "file", "source", ...). Requests a parent sends down go through its edge, so
 * replacing the node behind an edge (mirror completion, {@link BlockBackend#replaceRoot}) redirects them.
 *
 * <p>The request methods have the same contract as {@link BlockBackend}'s: the completion runs later, in the
 * AioContext of the submitting thread (or a block worker thread for plain threads), and the request counts in
 * the node's in-flight counter until the callback has returned. Edges are changed only under the graph lock,
 * and only while the affected nodes are drained.
 */
public final class BdrvChild {
    private final String name;
    private final BlockParent parent;
    /** The parent as a node, or null for backends and jobs. */
    final BlockDriverState parentNode;
    private volatile BlockDriverState bs;
    /** Guarded by the graph lock. */
    boolean attached;

    BdrvChild(String name, BlockParent parent, BlockDriverState parentNode, BlockDriverState bs) {
        this.name = name;
        this.parent = parent;
        this.parentNode = parentNode;
        this.bs = bs;
    }

    public String name() {
        return name;
    }

    public BlockParent parent() {
        return parent;
    }

    /** The child node (after {@link #detach} still the last one, for messages). */
    public BlockDriverState bs() {
        return bs;
    }

    void setBs(BlockDriverState to) {
        bs = to;
    }

    public boolean isAttached() {
        BlockGraph.lock();
        try {
            return attached;
        } finally {
            BlockGraph.unlock();
        }
    }

    /**
     * Tells drain waiters that this edge's parent changed its {@link BlockParent#childDrainedPoll} answer
     * (e.g. a job finished work that was not a request). Request completions report progress by themselves.
     */
    public void reportProgress() {
        AioWait.kick();
    }

    /** Removes the edge (the parent stops using the node). Idempotent. */
    public void detach() {
        BlockGraph.detach(this);
    }

    public void preadv(long offset, IoVec iov, BlockCompletion cb) {
        submit(BlockRequest.READ, offset, iov == null ? -1 : iov.size(), iov, 0, cb);
    }

    /** @param flags 0 or {@link BlockBackend#FUA} */
    public void pwritev(long offset, IoVec iov, int flags, BlockCompletion cb) {
        submit(BlockRequest.WRITE, offset, iov == null ? -1 : iov.size(), iov, flags, cb);
    }

    public void flush(BlockCompletion cb) {
        submit(BlockRequest.FLUSH, 0, 0, null, 0, cb);
    }

    public void pdiscard(long offset, long bytes, BlockCompletion cb) {
        submit(BlockRequest.DISCARD, offset, bytes, null, 0, cb);
    }

    /** @param flags any of {@link BlockBackend#MAY_UNMAP}, {@link BlockBackend#FUA} */
    public void pwriteZeroes(long offset, long bytes, int flags, BlockCompletion cb) {
        submit(BlockRequest.WRITE_ZEROES, offset, bytes, null, flags, cb);
    }

    private void submit(int op, long offset, long bytes, IoVec iov, int flags, BlockCompletion cb) {
        bs.submit(op, offset, bytes, iov, flags, cb, AioContext.current(), BlockRequest.MODE_CONTEXT, null);
    }

    /**
     * A filter driver passes its request {@code r} down: same operation, offset shifted by {@code delta}; the
     * child's completion completes {@code r} directly in the completing thread (r's own completion then hops to
     * its submitter's context once).
     */
    void forward(BlockRequest r, long delta) {
        bs.submit(r.op, r.offset + delta, r.bytes, r.iov, r.flags, r, r.context(), BlockRequest.MODE_DIRECT, null);
    }

    @Override
    public String toString() {
        return "BdrvChild(" + parent.parentName() + " -" + name + "-> " + bs.nodeName() + ")";
    }
}
