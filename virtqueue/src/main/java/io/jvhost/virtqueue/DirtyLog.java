package io.jvhost.virtqueue;

import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;
import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The front-end's dirty-page log for live migration (vhost-user SET_LOG_BASE with LOG_SHMFD): a bitmap in shared
 * memory, one bit per 4 KiB guest page ({@code page = gpa / 4096; log[page / 8] |= 1 << page % 8}), that the
 * front-end clears concurrently while it copies pages. The ONE way jvhost touches that memory.
 *
 * <p>Every mark is an atomic OR ({@code VarHandle.getAndBitwiseOr}) on the naturally aligned 64-bit word holding the
 * bit, so a concurrent clear by the front-end (QEMU exchanges whole words with 0) can never lose it. On x86 the OR
 * is a locked instruction, a full barrier: the guest-memory writes that precede a mark are visible before it, so a
 * page the front-end copies after clearing the bit already holds them (mark AFTER writing, never before).
 *
 * <p>The log may start at any byte offset of the fd; the words used are those of the fd, aligned to 8 bytes. The
 * bytes of the first and last word that lie outside the log are ORed with 0 (unchanged, atomically), so
 * {@link #map} requires the fd to extend to the end of the last word: QEMU's log is an array of u64 chunks
 * anyway. Marks of pages the log does not cover write nothing and return false. Thread-safe.
 */
public final class DirtyLog implements AutoCloseable {
    /** VHOST_LOG_PAGE: one bit per 4 KiB of guest-physical memory. */
    public static final int PAGE_SHIFT = 12;
    /**
     * Largest bitmap accepted, in bytes: 1 GiB covers 32 TiB of guest-physical space and still fits one Java 17
     * direct ByteBuffer. Anything larger is a hostile or broken front-end.
     */
    public static final long MAX_SIZE = 1L << 30;

    private static final VarHandle LONG_LE = MethodHandles.byteBufferViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

    private final long size, offset, pages;
    private final Pointer base;
    private final long mapLen;
    /** The 8-byte words covering the log; byte 0 of the buffer is 8-byte aligned in host memory. */
    private final ByteBuffer words;
    /** Bit number (within {@link #words}, little-endian words) of log bit 0: (offset % 8) * 8. */
    private final long firstBit;
    private volatile boolean closed;

    private DirtyLog(long size, long offset, Pointer base, long mapLen, long wordsStart) {
        this.size = size;
        this.offset = offset;
        this.pages = size * 8;
        this.base = base;
        this.mapLen = mapLen;
        this.words = base.getByteBuffer(wordsStart, mapLen - wordsStart).order(ByteOrder.LITTLE_ENDIAN);
        this.firstBit = (offset - wordsStart) * 8;
        if (((Pointer.nativeValue(base) + wordsStart) & 7) != 0) {
            throw new IllegalStateException("dirty log words not 8-byte aligned"); // mmap returns page-aligned memory
        }
    }

    /**
     * Maps bytes [offset, offset+size) of {@code fd} as the log. Does not take ownership of the fd (the caller closes
     * it; the mapping stays).
     *
     * @throws IOException if the geometry is unusable (size 0 or above {@link #MAX_SIZE}, negative or overflowing
     *     offset, fd shorter than the log's last 8-byte word), the fd is not memory we accept (see
     *     {@link MemoryRegion}: memfd, tmpfs, hugetlbfs, local disk filesystems) or mmap fails
     */
    public static DirtyLog map(int fd, long size, long offset) throws IOException {
        String what = String.format("dirty log size=0x%x offset=0x%x", size, offset);
        if (fd < 0) throw new IOException(what + ": no fd");
        if (size <= 0) throw new IOException(what + ": size must be > 0");
        if (size > MAX_SIZE) throw new IOException(what + ": larger than " + MAX_SIZE + " bytes");
        if (offset < 0 || offset > Long.MAX_VALUE - size - 8) throw new IOException(what + ": offset out of range");
        long wordsStart = offset & ~7L;
        long wordsEnd = (offset + size + 7) & ~7L;
        MemoryRegion.checkMemoryFd(fd, what);
        long fileSize;
        try {
            fileSize = Files.size(Path.of("/proc/self/fd/" + fd));
        } catch (IOException | RuntimeException e) {
            throw new IOException(what + ": cannot stat fd " + fd + ": " + e, e);
        }
        // Touching a page past EOF would SIGBUS: the whole last word must be inside the file.
        if (fileSize < wordsEnd) {
            throw new IOException(what + ": fd is only " + fileSize + " bytes, the log needs " + wordsEnd
                    + (wordsEnd != offset + size ? " (to its last 8-byte word)" : ""));
        }
        // As for guest RAM: map from offset 0 (mmap offsets must be page-aligned, the log offset need not be).
        Pointer p = Libc.mmapOrThrow(wordsEnd, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
        try {
            return new DirtyLog(size, offset, p, wordsEnd, wordsStart);
        } catch (RuntimeException | Error e) {
            Libc.munmap(p, wordsEnd);
            throw e;
        }
    }

    /** Bytes of bitmap (the SET_LOG_BASE size). */
    public long size() {
        return size;
    }

    public long offset() {
        return offset;
    }

    /** Number of pages the log covers: guest-physical addresses below {@code pages() << PAGE_SHIFT}. */
    public long pages() {
        return pages;
    }

    /**
     * Atomically sets the bit of guest page {@code page} (= gpa >>> {@link #PAGE_SHIFT}). Returns false, writing
     * nothing, if the log does not cover that page or was closed.
     */
    public boolean markPage(long page) {
        if (Long.compareUnsigned(page, pages) >= 0 || closed) return false;
        long bit = firstBit + page;
        // Byte b = bit/8, bit b%8 within it; in a little-endian word that is simply bit (bit % 64).
        LONG_LE.getAndBitwiseOr(words, (int) ((bit >>> 6) << 3), 1L << (bit & 63));
        return true;
    }

    /** Whether the bit of {@code page} is set (a volatile read); false outside the log or after close. */
    public boolean isMarked(long page) {
        if (Long.compareUnsigned(page, pages) >= 0 || closed) return false;
        long bit = firstBit + page;
        return ((long) LONG_LE.getVolatile(words, (int) ((bit >>> 6) << 3)) & (1L << (bit & 63))) != 0;
    }

    public boolean isClosed() {
        return closed;
    }

    /**
     * Unmaps the log; idempotent. Like {@link MemoryRegion#close}, callers close it only once no thread can be
     * inside {@link #markPage} any more (queues switch to the next log first).
     */
    @Override
    public void close() {
        synchronized (this) {
            if (closed) return;
            closed = true;
        }
        Libc.munmap(base, mapLen);
    }

    @Override
    public String toString() {
        return String.format("DirtyLog[size=0x%x offset=0x%x pages=%d%s]", size, offset, pages, closed ? " closed" : "");
    }
}
