package io.jvhost.block;

import com.sun.jna.Memory;
import io.jvhost.iothread.sys.Libc;

/**
 * QEMU's image locking (block/file-posix.c, raw_apply_lock_bytes and raw_check_lock_bytes), byte for byte, so that
 * jvhost, QEMU, qemu-img and qemu-storage-daemon see each other's claims on an image.
 *
 * <p>Each permission bit i (QEMU's numbering: consistent read 0, write 1, write unchanged 2, resize 3) has two lock
 * bytes: a shared lock on byte {@code 100 + i} says "I hold permission i", one on {@code 200 + i} says "I do not
 * share permission i". An opener first takes its own bytes, then tests the other side's: for every permission it
 * wants, nobody may hold the matching "not shared" byte; for every permission it does not share, nobody may hold the
 * matching "held" byte. Taking before testing (QEMU's order) means two openers racing each other cannot both pass:
 * at worst both fail.
 *
 * <p>The locks are open-file-description locks (F_OFD_SETLK): they belong to the one fd the file node keeps open for
 * its whole life, so they conflict between two nodes of one process exactly as between two processes, closing that
 * fd releases them, and closing any other fd of the same file (the node's FileChannel, a test reading the image)
 * does not. Classic POSIX locks would fail on both counts, which is why {@code locking=on} without OFD support is
 * refused here instead of QEMU's fall-back with a warning.
 */
final class ImageLock {
    private ImageLock() {}

    static final int PERM_CONSISTENT_READ = 0x1, PERM_WRITE = 0x2, PERM_WRITE_UNCHANGED = 0x4, PERM_RESIZE = 0x8;
    /**
     * QEMU's BLK_PERM_ALL. Bit 4 (graph-mod, 0x10) was removed from QEMU; like QEMU we neither take nor test its
     * bytes 104 and 204.
     */
    static final int PERM_ALL = 0xf;
    static final int LOCK_PERM_BASE = 100, LOCK_SHARED_BASE = 200;
    private static final int NPERMS = 4;
    private static final String[] PERM_NAMES = {"consistent read", "write", "write unchanged", "resize"};

    /** The file driver's {@code locking} option. */
    enum Mode {
        AUTO, ON, OFF;

        static Mode parse(String v) throws BlockException {
            switch (v) {
                case "auto":
                    return AUTO;
                case "on":
                    return ON;
                case "off":
                    return OFF;
                default:
                    throw new BlockException("blockdev: invalid value '" + v + "' for option 'locking' (expected on, off or auto)");
            }
        }
    }

    /**
     * What a node holds: consistent read, plus write when writable (QEMU's guest device: blkconf_apply_backend_options).
     */
    static int permFor(boolean readOnly) {
        return readOnly ? PERM_CONSISTENT_READ : PERM_CONSISTENT_READ | PERM_WRITE;
    }

    /**
     * What a node lets others do: everything but write, reader or writer alike (QEMU's guest device without
     * share-rw, and qemu-img), or everything with force-share=on (read-only nodes only, as in QEMU).
     */
    static int sharedFor(boolean forceShare) {
        return forceShare ? PERM_ALL : PERM_ALL & ~PERM_WRITE;
    }

    /**
     * Whether the kernel knows OFD locks (QEMU's qemu_has_ofd_lock probe, done on the image's own fd): an unknown
     * fcntl command is EINVAL. Other errors are left for the real lock calls to report.
     */
    static boolean ofdSupported(int fd) {
        try (Memory fl = new Memory(Libc.FLOCK_SIZE)) {
            fill(fl, Libc.F_WRLCK, 0, 0);
            return fcntl(fd, Libc.F_OFD_GETLK, fl) == 0 || Libc.errno() != Libc.EINVAL;
        }
    }

    /**
     * Takes this opener's lock bytes on fd and checks nobody else holds conflicting ones. On failure it releases what
     * it took and throws the QEMU-worded error, with QEMU's hint naming the image.
     */
    static void acquire(int fd, String filename, int perm, int shared) throws BlockException {
        try (Memory fl = new Memory(Libc.FLOCK_SIZE)) {
            try {
                apply(fd, fl, filename, perm, shared);
                check(fd, fl, filename, perm, shared);
            } catch (BlockException | RuntimeException e) {
                // One unlock over both ranges drops only this description's locks (never anyone else's).
                fill(fl, Libc.F_UNLCK, LOCK_PERM_BASE, LOCK_SHARED_BASE + NPERMS - LOCK_PERM_BASE);
                fcntl(fd, Libc.F_OFD_SETLK, fl);
                throw e;
            }
        }
    }

    /** raw_apply_lock_bytes: shared locks on "held" bytes for perm and on "not shared" bytes for ~shared. */
    private static void apply(int fd, Memory fl, String filename, int perm, int shared) throws BlockException {
        for (int i = 0; i < NPERMS; i++) {
            if ((perm & (1 << i)) != 0) lockByte(fd, fl, filename, LOCK_PERM_BASE + i);
        }
        for (int i = 0; i < NPERMS; i++) {
            if ((shared & (1 << i)) == 0) lockByte(fd, fl, filename, LOCK_SHARED_BASE + i);
        }
    }

    /**
     * raw_check_lock_bytes: a lock test as if for an exclusive lock reports any lock another description holds on the
     * byte (never our own: OFD locks of one description do not conflict with each other).
     */
    private static void check(int fd, Memory fl, String filename, int perm, int shared) throws BlockException {
        for (int i = 0; i < NPERMS; i++) {
            if ((perm & (1 << i)) != 0) testByte(fd, fl, filename, LOCK_SHARED_BASE + i, "Failed to get \"" + PERM_NAMES[i] + "\" lock");
        }
        for (int i = 0; i < NPERMS; i++) {
            if ((shared & (1 << i)) == 0) {
                testByte(fd, fl, filename, LOCK_PERM_BASE + i, "Failed to get shared \"" + PERM_NAMES[i] + "\" lock");
            }
        }
    }

    private static void lockByte(int fd, Memory fl, String filename, int off) throws BlockException {
        fill(fl, Libc.F_RDLCK, off, 1);
        if (fcntl(fd, Libc.F_OFD_SETLK, fl) == 0) return;
        throw failure("Failed to lock byte " + off, Libc.errno(), filename);
    }

    private static void testByte(int fd, Memory fl, String filename, int off, String what) throws BlockException {
        fill(fl, Libc.F_WRLCK, off, 1);
        if (fcntl(fd, Libc.F_OFD_GETLK, fl) != 0) throw failure(what, Libc.errno(), filename);
        if (fl.getShort(Libc.FLOCK_TYPE) != Libc.F_UNLCK) throw failure(what, Libc.EAGAIN, filename);
    }

    /**
     * QEMU's wording: EAGAIN/EACCES mean "somebody else holds it", reported without errno and with the hint; other
     * errors (ENOLCK on a filesystem without locks, ...) carry their errno.
     */
    private static BlockException failure(String what, int errno, String filename) {
        if (errno == Libc.EAGAIN || errno == Libc.EACCES) {
            return new BlockException("blockdev: " + what + ". Is another process using the image [" + filename + "]?");
        }
        return new BlockException("blockdev: " + what + " on '" + filename + "': errno " + errno);
    }

    /** Every field, every time: F_OFD_GETLK overwrites the struct, and the OFD commands insist on l_pid == 0. */
    private static void fill(Memory fl, short type, long start, long len) {
        fl.clear();
        fl.setShort(Libc.FLOCK_TYPE, type);
        fl.setShort(Libc.FLOCK_WHENCE, Libc.SEEK_SET);
        fl.setLong(Libc.FLOCK_START, start);
        fl.setLong(Libc.FLOCK_LEN, len);
        fl.setInt(Libc.FLOCK_PID, 0);
    }

    /** fcntl retried on EINTR (QEMU's RETRY_ON_EINTR; the non-blocking lock commands should not see it anyway). */
    private static int fcntl(int fd, int cmd, Memory fl) {
        while (true) {
            int r = Libc.fcntl(fd, cmd, fl);
            if (r == 0 || Libc.errno() != Libc.EINTR) return r;
        }
    }
}
