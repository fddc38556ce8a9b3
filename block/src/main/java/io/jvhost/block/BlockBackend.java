package io.jvhost.block;

import java.util.Objects;

/**
 * What an export (the virtio-blk device) attaches to: the root node of its tree, the permission the export
 * holds on it, and the guest-visible write-cache mode. All request methods complete through the callback,
 * never synchronously, in the AioContext of the submitting thread.
 */
public final class BlockBackend {
    /** Force unit access: the write is on stable storage when it completes. */
    public static final int FUA = 1;
    /** Write-zeroes may deallocate (punch a hole) as long as the range reads back as zeros. */
    public static final int MAY_UNMAP = 2;

    private final BlockDriverState root;
    private final boolean writable;
    private volatile boolean writeCache = true;
    private volatile boolean closed;

    public BlockBackend(BlockDriverState root, boolean writable) {
        this.root = Objects.requireNonNull(root, "root");
        if (writable && root.isReadOnly()) {
            throw new IllegalArgumentException("node '" + root.nodeName() + "' is read-only");
        }
        this.writable = writable;
    }

    public BlockDriverState root() {
        return root;
    }

    public long getLength() {
        return root.getLength();
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

    public void preadv(long offset, IoVec iov, BlockCompletion cb) {
        if (closed) {
            root.fail(cb, -Errno.ENOMEDIUM);
            return;
        }
        root.preadv(offset, iov, cb);
    }

    /** @param flags 0 or {@link #FUA} */
    public void pwritev(long offset, IoVec iov, int flags, BlockCompletion cb) {
        int err = writeError();
        if (err != 0) {
            root.fail(cb, err);
            return;
        }
        root.pwritev(offset, iov, writeCache ? flags : flags | FUA, cb);
    }

    public void flush(BlockCompletion cb) {
        if (closed) {
            root.fail(cb, -Errno.ENOMEDIUM);
            return;
        }
        root.flush(cb);
    }

    public void pdiscard(long offset, long bytes, BlockCompletion cb) {
        int err = writeError();
        if (err != 0) {
            root.fail(cb, err);
            return;
        }
        root.pdiscard(offset, bytes, cb);
    }

    /** @param flags any of {@link #MAY_UNMAP}, {@link #FUA} */
    public void pwriteZeroes(long offset, long bytes, int flags, BlockCompletion cb) {
        int err = writeError();
        if (err != 0) {
            root.fail(cb, err);
            return;
        }
        // Like blk_co_pwritev_part: writethrough applies to zero writes too.
        root.pwriteZeroes(offset, bytes, writeCache ? flags : flags | FUA, cb);
    }

    /**
     * Detaches the export: later requests fail with -ENOMEDIUM. Does not close the node (BlockNodes owns it)
     * and does not wait; wait with {@code root().awaitIdle(...)} if needed.
     */
    public void close() {
        closed = true;
    }

    private int writeError() {
        if (closed) return -Errno.ENOMEDIUM;
        if (!writable) return -Errno.EPERM;
        return 0;
    }

    @Override
    public String toString() {
        return "BlockBackend(" + root.nodeName() + (writable ? ", rw" : ", ro") + ")";
    }
}
