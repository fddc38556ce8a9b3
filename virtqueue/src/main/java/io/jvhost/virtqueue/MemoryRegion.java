package io.jvhost.virtqueue;

import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * One mmap'd region from the front-end: guest-physical [gpa, gpa+size) == front-end virtual [uaddr, uaddr+size),
 * backed by bytes [mmapOffset, mmapOffset+size) of the front-end's fd.
 *
 * <p>The mapping is exposed only as ≤1 GiB little-endian direct ByteBuffer windows, built once at map time
 * ({@code Pointer.getByteBuffer} costs hundreds of ns, and Java 17 ByteBuffers stop at 2 GiB). Only
 * {@link GuestMemory} reads them, after bounds checks.
 *
 * <p>{@link #close()} unmaps. {@link GuestMemory} checks {@link #isClosed()} before every access, so a use after
 * close fails with {@link InvalidGuestAddressException}. It cannot protect a thread that is <em>inside</em> an
 * access (or holds a {@link GuestMemory#slices} view) while another thread closes: callers close a region only
 * after every queue has stopped using the snapshot that contained it.
 *
 * <p>{@link #map} refuses a region that extends past the end of the fd (that would SIGBUS). If the front-end later
 * shrinks an unsealed fd, HotSpot turns the SIGBUS of an access into an asynchronous {@link InternalError} in the
 * accessing thread (verified on 17 and 25; the JVM survives): queue threads should treat any Throwable from
 * request processing as a broken device. Only regular files are accepted (their size must cover the region).
 */
public final class MemoryRegion implements AutoCloseable {
    static final int WINDOW_SHIFT = 30;
    static final long WINDOW_SIZE = 1L << WINDOW_SHIFT;
    static final long WINDOW_MASK = WINDOW_SIZE - 1;

    private final long gpa, size, uaddr, mmapOffset;
    private final Pointer base;
    private final long mapLen;
    /** windows[i] covers region offsets [i*WINDOW_SIZE, min((i+1)*WINDOW_SIZE, size)). */
    final ByteBuffer[] windows;
    /** Host virtual address of byte 0 of each window (for alignment checks of atomic accesses). */
    final long[] windowAddr;
    private volatile boolean closed;

    private MemoryRegion(long gpa, long size, long uaddr, long mmapOffset, Pointer base, long mapLen) {
        this.gpa = gpa;
        this.size = size;
        this.uaddr = uaddr;
        this.mmapOffset = mmapOffset;
        this.base = base;
        this.mapLen = mapLen;
        int n = (int) ((size + WINDOW_SIZE - 1) >>> WINDOW_SHIFT);
        windows = new ByteBuffer[n];
        windowAddr = new long[n];
        long hostBase = Pointer.nativeValue(base) + mmapOffset;
        for (int i = 0; i < n; i++) {
            long off = (long) i << WINDOW_SHIFT;
            long len = Math.min(WINDOW_SIZE, size - off);
            windows[i] = base.getByteBuffer(mmapOffset + off, len).order(ByteOrder.LITTLE_ENDIAN);
            windowAddr[i] = hostBase + off;
        }
    }

    /**
     * Maps a region. Does not take ownership of {@code fd}: the caller closes it afterwards (the mapping stays).
     *
     * @throws IOException if the geometry is invalid (empty, wraps 64 bits, extends past the end of the file) or
     *     mmap fails
     */
    public static MemoryRegion map(int fd, long gpa, long size, long uaddr, long mmapOffset) throws IOException {
        String what = String.format("region gpa=0x%x size=0x%x uaddr=0x%x offset=0x%x", gpa, size, uaddr, mmapOffset);
        if (fd < 0) throw new IOException(what + ": bad fd " + fd);
        if (size <= 0) throw new IOException(what + ": size must be > 0 (and < 2^63)");
        // Ends are exclusive and must not wrap (an end of exactly 2^64 is rejected too: simpler unsigned checks).
        if (Long.compareUnsigned(gpa + size, gpa) <= 0) throw new IOException(what + ": gpa range wraps");
        if (Long.compareUnsigned(uaddr + size, uaddr) <= 0) throw new IOException(what + ": uaddr range wraps");
        if (mmapOffset < 0 || mmapOffset + size < 0) throw new IOException(what + ": mmap offset out of range");
        long mapLen = mmapOffset + size;
        checkMemoryFd(fd, what);
        // A mapping past EOF would SIGBUS on access: check the file really is that long.
        long fileSize;
        try {
            fileSize = Files.size(Path.of("/proc/self/fd/" + fd));
        } catch (IOException | RuntimeException e) {
            throw new IOException(what + ": cannot stat fd " + fd + ": " + e, e);
        }
        if (fileSize < mapLen) {
            throw new IOException(what + ": fd " + fd + " is only " + fileSize + " bytes, region needs " + mapLen);
        }
        // mmap's offset must be (huge)page-aligned, mmapOffset need not be: map from 0, as libvhost-user does.
        Pointer p = Libc.mmapOrThrow(mapLen, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
        try {
            return new MemoryRegion(gpa, size, uaddr, mmapOffset, p, mapLen);
        } catch (RuntimeException | Error e) {
            Libc.munmap(p, mapLen);
            throw e;
        }
    }

    /** Filesystems whose pages cannot stall us on a remote server or a user-space daemon (FUSE, NFS, ...). */
    private static final java.util.Set<String> LOCAL_FS = java.util.Set.of("tmpfs", "hugetlbfs", "ramfs", "ext2", "ext3",
            "ext4", "xfs", "btrfs", "f2fs");

    /**
     * Refuses guest-RAM fds whose filesystem could block a thread (stat, page faults). Decided only from what the
     * kernel reports about the fd in /proc (readlink, fdinfo, mountinfo), never by calling into the filesystem.
     */
    static void checkMemoryFd(int fd, String what) throws IOException {
        String target;
        try {
            target = Files.readSymbolicLink(Path.of("/proc/self/fd/" + fd)).toString();
        } catch (IOException | RuntimeException e) {
            throw new IOException(what + ": fd " + fd + " is not open", e);
        }
        if (target.startsWith("/memfd:")) return;
        String mntId = null;
        for (String line : Files.readAllLines(Path.of("/proc/self/fdinfo/" + fd))) {
            if (line.startsWith("mnt_id:")) mntId = line.substring(7).trim();
        }
        if (mntId != null) {
            for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
                int sep = line.indexOf(" - ");
                if (sep < 0 || !line.startsWith(mntId + " ")) continue;
                String fstype = line.substring(sep + 3).split(" ", 2)[0];
                if (LOCAL_FS.contains(fstype)) return;
                throw new IOException(what + ": guest memory on a " + fstype + " filesystem is refused (" + target + ")");
            }
        }
        throw new IOException(what + ": cannot tell the filesystem of fd " + fd + " (" + target + ")");
    }

    public long gpa() {
        return gpa;
    }

    public long size() {
        return size;
    }

    public long uaddr() {
        return uaddr;
    }

    public long mmapOffset() {
        return mmapOffset;
    }

    public boolean isClosed() {
        return closed;
    }

    /** Unmaps the region; idempotent. */
    @Override
    public void close() {
        synchronized (this) {
            if (closed) return;
            closed = true; // published before munmap so checked accessors fail from now on
        }
        Libc.munmap(base, mapLen);
    }

    @Override
    public String toString() {
        return String.format("MemoryRegion[gpa=0x%x size=0x%x uaddr=0x%x offset=0x%x%s]", gpa, size, uaddr, mmapOffset,
                closed ? " closed" : "");
    }
}
