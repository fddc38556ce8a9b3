package io.jvhost.virtqueue;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * A fake guest made of real memfds: region A and B are adjacent in guest-physical space (A ends where B starts) but
 * far apart in front-end address space; region C is a sparse memfd of 1 GiB + 2 MiB so it has two ByteBuffer
 * windows (only a few pages are ever touched). A and C have non-zero mmap offsets.
 *
 * <p>The "driver" side writes through its own, independent JNA mappings of the memfds, so tests do not check
 * GuestMemory against itself.
 */
final class TestGuest implements AutoCloseable {
    static final long A_GPA = 0x10_0000, A_SIZE = 0x20_0000, A_UADDR = 0x7f00_0000_0000L, A_OFF = 0x1000;
    static final long B_GPA = A_GPA + A_SIZE, B_SIZE = 0x20_0000, B_UADDR = 0x7e00_0000_0000L, B_OFF = 0;
    static final long C_GPA = 0x1_0000_0000L, C_SIZE = (1L << 30) + 0x20_0000, C_UADDR = 0x7d00_0000_0000L, C_OFF = 0x3000;
    /** First byte of C's second window. */
    static final long C_WINDOW2 = C_GPA + (1L << 30);

    final MemoryRegion a, b, c;
    final GuestMemory mem;
    private final List<long[]> driverMaps = new ArrayList<>(); // {gpa, size, mmapOffset} per driver mapping
    private final List<Pointer> driverPtrs = new ArrayList<>();
    private final List<Long> driverLens = new ArrayList<>();

    TestGuest() throws Exception {
        a = region("A", A_GPA, A_SIZE, A_UADDR, A_OFF);
        b = region("B", B_GPA, B_SIZE, B_UADDR, B_OFF);
        c = region("C", C_GPA, C_SIZE, C_UADDR, C_OFF);
        mem = GuestMemory.empty().with(a).with(b).with(c);
    }

    static int memfd(String name, long len) throws IOException {
        int fd = Libc.memfd_create(name, Libc.MFD_CLOEXEC);
        if (fd < 0) throw new IOException("memfd_create: errno " + Libc.errno());
        if (Libc.ftruncate(fd, len) != 0) {
            Libc.close(fd);
            throw new IOException("ftruncate: errno " + Libc.errno());
        }
        return fd;
    }

    private MemoryRegion region(String name, long gpa, long size, long uaddr, long off) throws IOException {
        int fd = memfd("jvhost-test-" + name, off + size);
        try {
            Pointer p = Libc.mmapOrThrow(off + size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
            driverMaps.add(new long[] {gpa, size, off});
            driverPtrs.add(p);
            driverLens.add(off + size);
            return MemoryRegion.map(fd, gpa, size, uaddr, off);
        } finally {
            Libc.close(fd); // MemoryRegion does not own the fd; both mappings outlive it
        }
    }

    /** The driver's view of one guest byte. */
    private Pointer at(long gpa) {
        for (int i = 0; i < driverMaps.size(); i++) {
            long[] m = driverMaps.get(i);
            if (Long.compareUnsigned(gpa - m[0], m[1]) < 0) return driverPtrs.get(i).share(m[2] + (gpa - m[0]));
        }
        throw new IllegalArgumentException("test bug: gpa 0x" + Long.toHexString(gpa) + " not in the test guest");
    }

    /** Driver-side little-endian store, byte by byte so it may cross region boundaries. */
    void put(long gpa, long v, int n) {
        for (int k = 0; k < n; k++) at(gpa + k).setByte(0, (byte) (v >>> (8 * k)));
    }

    long get(long gpa, int n) {
        long v = 0;
        for (int k = 0; k < n; k++) v |= (at(gpa + k).getByte(0) & 0xffL) << (8 * k);
        return v;
    }

    void fill(long gpa, byte[] data) {
        for (int k = 0; k < data.length; k++) at(gpa + k).setByte(0, data[k]);
    }

    byte[] bytes(long gpa, int n) {
        byte[] r = new byte[n];
        for (int k = 0; k < n; k++) r[k] = at(gpa + k).getByte(0);
        return r;
    }

    @Override
    public void close() {
        a.close();
        b.close();
        c.close();
        for (int i = 0; i < driverPtrs.size(); i++) {
            assertEquals(0, Libc.munmap(driverPtrs.get(i), driverLens.get(i)));
        }
    }

    /** A driver for one split ring placed in this guest, following the virtio spec layout. */
    final class Driver {
        final int size;
        final long desc, avail, used;
        int availIdx;
        int usedSeen;

        Driver(int size, long desc, long avail, long used, int startIdx) {
            this.size = size;
            this.desc = desc;
            this.avail = avail;
            this.used = used;
            this.availIdx = startIdx;
            this.usedSeen = startIdx;
            put(avail, 0, 2);
            put(avail + 2, startIdx, 2);
            put(used, 0, 2);
            put(used + 2, startIdx, 2);
        }

        void desc(int i, long addr, long len, int flags, int next) {
            descAt(desc + 16L * i, addr, len, flags, next);
        }

        /** Writes a descriptor anywhere (indirect tables). */
        void descAt(long gpa, long addr, long len, int flags, int next) {
            put(gpa, addr, 8);
            put(gpa + 8, len, 4);
            put(gpa + 12, flags, 2);
            put(gpa + 14, next, 2);
        }

        /** Makes head available and publishes avail->idx. */
        void offer(int head) {
            put(avail + 4 + 2L * (availIdx % size), head, 2);
            availIdx = (availIdx + 1) & 0xffff;
            put(avail + 2, availIdx, 2);
        }

        int usedIdx() {
            return (int) get(used + 2, 2);
        }

        int usedFlags() {
            return (int) get(used, 2);
        }

        long usedId(int idx) {
            return get(used + 4 + 8L * (idx % size), 4);
        }

        long usedLen(int idx) {
            return get(used + 8 + 8L * (idx % size), 4);
        }

        int availEvent() {
            return (int) get(used + 4 + 8L * size, 2);
        }

        void usedEvent(int v) {
            put(avail + 4 + 2L * size, v, 2);
        }

        void availFlags(int v) {
            put(avail, v, 2);
        }
    }
}
