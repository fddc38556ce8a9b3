package io.jvhost.block;

import java.io.IOException;
import java.nio.channels.ClosedChannelException;

/** Linux errno values the block layer reports (as negatives) through {@link BlockCompletion}. */
final class Errno {
    private Errno() {}

    static final int EPERM = 1, EINTR = 4, EIO = 5, EBADF = 9, EFBIG = 27, ENOSPC = 28, EROFS = 30,
            EINVAL = 22, EOPNOTSUPP = 95, EDQUOT = 122, ENOMEDIUM = 123;

    /**
     * Best-effort errno of a failed FileChannel call. The JDK only keeps strerror() text, but the guest-visible
     * difference that matters (ENOSPC vs EIO, for werror=enospc style policies later) is recoverable from it.
     */
    static int of(IOException e) {
        if (e instanceof ClosedChannelException) return -EIO;
        String m = e.getMessage();
        if (m == null) return -EIO;
        if (m.contains("No space left")) return -ENOSPC;
        if (m.contains("Disk quota exceeded")) return -EDQUOT;
        if (m.contains("Read-only file system")) return -EROFS;
        if (m.contains("Operation not permitted")) return -EPERM;
        if (m.contains("File too large")) return -EFBIG;
        if (m.contains("Invalid argument")) return -EINVAL;
        if (m.contains("Bad file descriptor")) return -EBADF;
        return -EIO;
    }

    /**
     * The errno of a failed system call (positive, e.g. an io_uring CQE's -res), reduced to the values
     * {@link #of(IOException)} reports for the same failure through FileChannel, so both engines look alike.
     */
    static int ofErrno(int errno) {
        switch (errno) {
            case EPERM: case EIO: case EBADF: case EFBIG: case ENOSPC: case EROFS: case EINVAL: case EDQUOT:
                return -errno;
            default:
                return -EIO;
        }
    }
}
