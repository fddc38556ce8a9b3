package io.jvhost.daemon.bench;

import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The bench's "guest RAM": one memfd, mapped shared once, shared with the back-end as a single region at
 * guest-physical address 0. Its front-end virtual address (uaddr, what SET_VRING_ADDR carries) is where it is
 * really mapped here, as with QEMU. Everything the rings and requests need is carved out of it once at setup by
 * a bump allocator; nothing is allocated or freed while the run goes.
 *
 * <p>Offsets into {@link #buf} equal guest-physical addresses. The buffer is little-endian (virtio 1.x).
 */
final class GuestRam implements AutoCloseable {
    static final long PAGE = 4096;
    /** 16-bit view with acquire/release access for avail->idx and used->idx. */
    static final VarHandle U16 = MethodHandles.byteBufferViewVarHandle(short[].class, ByteOrder.LITTLE_ENDIAN);

    final int fd;
    final long size;
    final long uaddr;
    final ByteBuffer buf;
    private final Pointer ptr;
    private long next;
    private boolean closed;

    private GuestRam(int fd, long size, Pointer ptr) {
        this.fd = fd;
        this.size = size;
        this.ptr = ptr;
        this.uaddr = Pointer.nativeValue(ptr);
        this.buf = ptr.getByteBuffer(0, size).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** A memfd of {@code size} bytes (rounded up to a page, at most {@link BenchOptions#MAX_GUEST_RAM}), mapped. */
    static GuestRam create(long size) throws IOException {
        long sz = (size + PAGE - 1) & -PAGE;
        if (sz <= 0 || sz > BenchOptions.MAX_GUEST_RAM) {
            throw new BenchException("guest RAM of " + size + " bytes needed; at most " + BenchOptions.MAX_GUEST_RAM
                    + " supported (lower --iodepth, --bs or --queues)");
        }
        int fd = Libc.memfd_create("jvhost-bench-ram", Libc.MFD_CLOEXEC);
        if (fd < 0) throw new IOException("memfd_create failed: errno " + Libc.errno());
        try {
            if (Libc.ftruncate(fd, sz) != 0) throw new IOException("ftruncate(" + sz + ") failed: errno " + Libc.errno());
            Pointer p = Libc.mmapOrThrow(sz, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
            return new GuestRam(fd, sz, p);
        } catch (IOException | RuntimeException e) {
            Libc.close(fd);
            throw e;
        }
    }

    /** Reserves {@code len} bytes aligned to {@code align} (a power of two); returns the guest-physical address. */
    long alloc(long len, long align) {
        long a = (next + align - 1) & -align;
        if (len < 0 || a + len > size) throw new IllegalStateException("guest RAM layout overflow: " + (a + len) + " > " + size);
        next = a + len;
        return a;
    }

    /** Bytes a layout needs, computed by the same rule as {@link #alloc}: round {@code at} up, then add len. */
    static long plan(long at, long len, long align) {
        return ((at + align - 1) & -align) + len;
    }

    /** Writes every page once, so no page fault lands inside the measured run (memfd pages appear on touch). */
    void prefault() {
        for (long off = 0; off < size; off += PAGE) buf.put((int) off, buf.get((int) off));
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        // Our mapping only: the back-end maps the memfd itself, so it keeps its pages whatever we do here.
        Libc.munmap(ptr, size);
        Libc.close(fd);
    }
}
