package io.jvhost.block;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A node of the block graph: one driver instance plus the generic request layer (QEMU's block/io.c): range
 * and permission checks, and the in-flight counter that drain will build on. Created by {@link BlockNodes}.
 *
 * <p>In-flight accounting follows the fine-grained-locking series: a counter raised when a request is
 * initiated and lowered only after its completion callback has returned, including the bottom half that
 * carries the completion into the submitter's AioContext. Zero therefore means nothing can still touch a
 * caller's buffers through this node.
 */
public final class BlockDriverState {
    private static final Logger LOG = Logger.getLogger(BlockDriverState.class.getName());
    /** How long close() waits for in-flight requests before closing the driver under them. */
    static final long CLOSE_DRAIN_TIMEOUT_MS = 10_000;

    private final String nodeName;
    private final BlockDriver drv;
    private final boolean readOnly;
    private final AioPool pool;
    private final long length;
    private final AtomicLong inFlight = new AtomicLong();
    private final ReentrantLock idleLock = new ReentrantLock();
    private final Condition idle = idleLock.newCondition();
    private volatile boolean closed;

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

    /**
     * Waits until no request is in flight. Must not be called from a thread whose AioContext still has to run
     * completions of this node (they could never run); the full drain with remote waiting comes later.
     */
    public void awaitIdle(long timeout, TimeUnit unit) throws TimeoutException, InterruptedException {
        if (inFlight.get() == 0) return;
        long nanos = unit.toNanos(timeout);
        idleLock.lock();
        try {
            // Holding the lock between the check and await: requestDone() signals under the same lock, so the
            // drop to zero cannot slip between them.
            while (inFlight.get() != 0) {
                if (nanos <= 0) {
                    throw new TimeoutException("node '" + nodeName + "': " + inFlight.get() + " requests still in flight");
                }
                nanos = idle.awaitNanos(nanos);
            }
        } finally {
            idleLock.unlock();
        }
    }

    /**
     * Waits (bounded) for in-flight requests, then closes the driver. Later requests fail with -ENOMEDIUM.
     * Called from a completion callback of this node, it can only time out; callers drain first.
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
        drv.close();
    }

    @Override
    public String toString() {
        return "BlockDriverState(" + nodeName + ", " + drv.name() + (readOnly ? ", ro" : "") + ")";
    }

    // ------------------------------------------------------------------------------------------------------
    // Request entry points (used by BlockBackend and, later, by jobs and parent nodes).

    void preadv(long offset, IoVec iov, BlockCompletion cb) {
        BlockRequest r = begin(cb, BlockRequest.READ, offset, iov == null ? -1 : iov.size(), iov, 0);
        int err = iov == null ? -Errno.EINVAL : check(offset, iov.size(), false);
        if (err == 0 && iov.hasReadOnlySegment()) err = -Errno.EINVAL;
        if (err != 0) {
            r.done(err);
        } else {
            drv.read(offset, iov, r);
        }
    }

    void pwritev(long offset, IoVec iov, int flags, BlockCompletion cb) {
        BlockRequest r = begin(cb, BlockRequest.WRITE, offset, iov == null ? -1 : iov.size(), iov, flags);
        int err = iov == null || (flags & ~BlockBackend.FUA) != 0 ? -Errno.EINVAL : check(offset, iov.size(), true);
        if (err != 0) {
            r.done(err);
        } else {
            drv.write(offset, iov, flags, r);
        }
    }

    void flush(BlockCompletion cb) {
        BlockRequest r = begin(cb, BlockRequest.FLUSH, 0, 0, null, 0);
        if (closed) {
            r.done(-Errno.ENOMEDIUM);
        } else {
            drv.flush(r);
        }
    }

    void pdiscard(long offset, long bytes, BlockCompletion cb) {
        BlockRequest r = begin(cb, BlockRequest.DISCARD, offset, bytes, null, 0);
        int err = check(offset, bytes, true);
        if (err != 0) {
            r.done(err);
        } else {
            drv.discard(offset, bytes, r);
        }
    }

    void pwriteZeroes(long offset, long bytes, int flags, BlockCompletion cb) {
        BlockRequest r = begin(cb, BlockRequest.WRITE_ZEROES, offset, bytes, null, flags);
        int err = (flags & ~(BlockBackend.FUA | BlockBackend.MAY_UNMAP)) != 0 ? -Errno.EINVAL : check(offset, bytes, true);
        if (err != 0) {
            r.done(err);
        } else {
            drv.writeZeroes(offset, bytes, flags, r);
        }
    }

    /** Completes a request with an error decided above the node (e.g. by the BlockBackend), with full accounting. */
    void fail(BlockCompletion cb, int err) {
        begin(cb, BlockRequest.READ, 0, 0, null, 0).done(err);
    }

    BlockDriver driver() {
        return drv;
    }

    void plug() {
        drv.plug();
    }

    void unplug() {
        drv.unplug();
    }

    // ------------------------------------------------------------------------------------------------------

    private BlockRequest begin(BlockCompletion cb, int op, long offset, long bytes, IoVec iov, int flags) {
        if (cb == null) throw new NullPointerException("completion");
        // Raised before anything else: from here on the request counts, whatever its outcome.
        inFlight.incrementAndGet();
        BlockRequest r = BlockRequest.obtain(this, pool, cb);
        r.op = op;
        r.offset = offset;
        r.bytes = bytes;
        r.iov = iov;
        r.flags = flags;
        return r;
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
        if (inFlight.decrementAndGet() == 0) {
            idleLock.lock();
            try {
                idle.signalAll();
            } finally {
                idleLock.unlock();
            }
        }
    }
}
