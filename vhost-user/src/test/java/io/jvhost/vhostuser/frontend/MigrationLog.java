package io.jvhost.vhostuser.frontend;

import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The front-end's side of live migration's dirty log, as QEMU keeps it: a memfd holding one bit per 4 KiB guest
 * page ({@code log[page / 8] |= 1 << page % 8}), sent with SET_LOG_BASE, read and cleared by the front-end while
 * the back-end keeps marking. The bitmap starts {@link #offset()} bytes into the fd. Reads go through this
 * process's own mapping; {@link #sync} clears the way QEMU's log sync does (atomic exchange of aligned 64-bit
 * words), so a concurrent mark is never lost between reading and clearing.
 */
public final class MigrationLog implements AutoCloseable {
    public static final int PAGE_SHIFT = 12;
    private static final AtomicInteger SEQ = new AtomicInteger();
    private static final VarHandle WORD = MethodHandles.byteBufferViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

    private final String name;
    private final int fd;
    private final long size, offset, fileSize;
    private final Pointer ptr;
    private final ByteBuffer file;
    private boolean closed;

    private MigrationLog(String name, int fd, long size, long offset, long fileSize, Pointer ptr) {
        this.name = name;
        this.fd = fd;
        this.size = size;
        this.offset = offset;
        this.fileSize = fileSize;
        this.ptr = ptr;
        this.file = ptr.getByteBuffer(0, fileSize).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** A log for guest-physical [0, gpaEnd), sized like QEMU's: whole u64 chunks, at offset 0 of its memfd. */
    public static MigrationLog covering(long gpaEnd) throws IOException {
        long pages = (gpaEnd + (1L << PAGE_SHIFT) - 1) >>> PAGE_SHIFT;
        long size = ((pages + 63) / 64) * 8;
        return create(size, 0, size);
    }

    /** A log of {@code size} bytes at {@code offset} of a memfd of {@code fileSize} bytes (hostile geometries too). */
    public static MigrationLog create(long size, long offset, long fileSize) throws IOException {
        if (fileSize <= 0 || fileSize > (1L << 30)) throw new IllegalArgumentException("fixture log file of " + fileSize + " bytes");
        String name = "jvhost-fe-dirty-log-" + ProcessHandle.current().pid() + "-" + SEQ.incrementAndGet();
        int fd = Libc.memfd_create(name, Libc.MFD_CLOEXEC);
        if (fd < 0) throw new IOException("memfd_create failed: errno " + Libc.errno());
        try {
            if (Libc.ftruncate(fd, fileSize) != 0) throw new IOException("ftruncate failed: errno " + Libc.errno());
            Pointer p = Libc.mmapOrThrow(fileSize, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
            return new MigrationLog(name, fd, size, offset, fileSize, p);
        } catch (IOException | RuntimeException e) {
            Libc.close(fd);
            throw e;
        }
    }

    /** The memfd (owned by this object; the back-end gets its own copy over the socket). */
    public int fd() { return fd; }
    public long size() { return size; }
    public long offset() { return offset; }
    /** The memfd's name as /proc/PID/maps shows it ("/memfd:NAME (deleted)"). */
    public String memfdName() { return name; }

    /** Whether the bit of guest page {@code page} is set (without clearing it). */
    public boolean isDirty(long page) {
        checkOpen();
        if (page < 0 || page >= size * 8) throw new IllegalArgumentException("page " + page + " outside the log");
        return (file.get((int) (offset + page / 8)) & (1 << (page % 8))) != 0;
    }

    /** Every page whose bit is set, without clearing. */
    public SortedSet<Long> dirtyPages() {
        checkOpen();
        SortedSet<Long> out = new TreeSet<>();
        for (long i = 0; i < size; i++) {
            int b = file.get((int) (offset + i)) & 0xff;
            for (int k = 0; k < 8; k++) if ((b & (1 << k)) != 0) out.add(i * 8 + k);
        }
        return out;
    }

    /** QEMU's log sync: takes every set bit and clears it atomically, word by word (the log must start 8-aligned). */
    public SortedSet<Long> sync() {
        checkOpen();
        if (offset % 8 != 0 || size % 8 != 0) throw new IllegalStateException("sync needs an 8-byte aligned log");
        SortedSet<Long> out = new TreeSet<>();
        for (long w = 0; w < size / 8; w++) {
            long v = (long) WORD.getAndSet(file, (int) (offset + w * 8), 0L);
            for (int k = 0; k < 64; k++) if ((v & (1L << k)) != 0) out.add(w * 64 + k);
        }
        return out;
    }

    /** The raw bytes of the bitmap. */
    public byte[] bytes() {
        checkOpen();
        byte[] b = new byte[(int) size];
        file.get((int) offset, b);
        return b;
    }

    /** The raw bytes of the whole memfd (to check nothing outside the bitmap was written). */
    public byte[] fileBytes() {
        checkOpen();
        byte[] b = new byte[(int) fileSize];
        file.get(0, b);
        return b;
    }

    /** Writes {@code v} into every byte of the memfd (bitmap included). */
    public void fillFile(byte v) {
        checkOpen();
        for (int i = 0; i < fileSize; i++) file.put(i, v);
    }

    /** The bitmap {@code pages} would give: for comparing with {@link #bytes()} bit for bit. */
    public byte[] expectedBytes(Iterable<Long> pages) {
        byte[] b = new byte[(int) size];
        for (long p : pages) b[(int) (p / 8)] |= (byte) (1 << (p % 8));
        return b;
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("log closed");
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        Libc.munmap(ptr, fileSize);
        Libc.close(fd);
    }

    @Override
    public String toString() {
        return "MigrationLog[" + name + " size=" + size + " offset=" + offset + " file=" + fileSize + "]";
    }
}
