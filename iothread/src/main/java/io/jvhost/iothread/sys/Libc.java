package io.jvhost.iothread.sys;

import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;

/**
 * The one place where jvhost binds native libc functions (JNA direct mapping: ~70 ns per call, far below the
 * ~1 µs syscall cost on these machines). Callers must never do pointer arithmetic with guest-supplied values:
 * guest memory is reached only through the bounds-checked layer in module virtqueue.
 */
public final class Libc {
    static {
        Native.register(NativeLibrary.getInstance("c"));
    }

    private Libc() {}

    public static final int PROT_READ = 1, PROT_WRITE = 2;
    public static final int MAP_SHARED = 1;
    public static final int MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2;
    public static final int EFD_CLOEXEC = 02000000, EFD_NONBLOCK = 04000;
    public static final int O_RDONLY = 0, O_RDWR = 2, O_CREAT = 0100, O_DIRECT = 040000, O_CLOEXEC = 02000000;
    public static final int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2, FALLOC_FL_ZERO_RANGE = 0x10;
    public static final int EAGAIN = 11, EINTR = 4, EOPNOTSUPP = 95, EINVAL = 22, EIO = 5, ENOSPC = 28;

    public static native Pointer mmap(Pointer addr, long length, int prot, int flags, int fd, long offset);
    public static native int munmap(Pointer addr, long length);
    public static native int memfd_create(String name, int flags);
    public static native int ftruncate(int fd, long length);
    public static native int eventfd(int initval, int flags);
    public static native int eventfd_write(int fd, long value);
    public static native long read(int fd, long[] buf, long count);
    public static native int close(int fd);
    public static native int open(String path, int flags, int mode);
    public static native int fallocate(int fd, int mode, long offset, long len);
    public static native int fdatasync(int fd);
    public static native int fsync(int fd);
    public static native int dup(int fd);
    public static native int dup2(int oldfd, int newfd);
    public static native int getpid();
    public static native int fcntl(int fd, int cmd, int arg);

    public static final int F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 04000;

    /** Puts a peer-supplied fd into non-blocking mode so a hostile peer cannot make a read block a loop. */
    public static void setNonBlocking(int fd) throws java.io.IOException {
        int fl = fcntl(fd, F_GETFL, 0);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            throw new java.io.IOException("fcntl(O_NONBLOCK) on fd " + fd + " failed: errno " + errno());
        }
    }

    public static int errno() {
        return Native.getLastError();
    }

    /** mmap that reports failure as an exception instead of MAP_FAILED. */
    public static Pointer mmapOrThrow(long length, int prot, int flags, int fd, long offset) throws java.io.IOException {
        Pointer p = mmap(null, length, prot, flags, fd, offset);
        if (p == null || Pointer.nativeValue(p) == -1L) {
            throw new java.io.IOException("mmap(len=" + length + ", fd=" + fd + ", off=" + offset + ") failed: errno " + errno());
        }
        return p;
    }

    // ---- open-file-description record locks (QEMU-style image locking in module block) ----

    /**
     * Lock commands on an open file description (Linux >= 3.15): unlike classic POSIX locks they belong to the
     * description, not the process, so two opens in one process conflict like two processes, and closing some other
     * fd of the same file does not drop them.
     */
    public static final int F_OFD_GETLK = 36, F_OFD_SETLK = 37;
    public static final short F_RDLCK = 0, F_WRLCK = 1, F_UNLCK = 2, SEEK_SET = 0;
    public static final int EACCES = 13;
    /**
     * {@code struct flock} on LP64 Linux (x86_64, aarch64): short l_type @0, short l_whence @2, off_t l_start @8,
     * off_t l_len @16, pid_t l_pid @24, padded to 32 bytes. l_pid must be 0 for the OFD commands.
     */
    public static final int FLOCK_SIZE = 32, FLOCK_TYPE = 0, FLOCK_WHENCE = 2, FLOCK_START = 8, FLOCK_LEN = 16,
            FLOCK_PID = 24;

    /** fcntl with a {@code struct flock *} (the lock commands); flock must point at FLOCK_SIZE writable bytes. */
    public static native int fcntl(int fd, int cmd, Pointer flock);

    /** send(2) flags: never block (whatever the socket's mode), no SIGPIPE on a closed peer. */
    public static final int MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000;

    /** send(2) from a Java array: bytes sent, or -1 and {@link #errno()} (EAGAIN: would block). */
    public static native long send(int fd, byte[] buf, long len, int flags);
}
