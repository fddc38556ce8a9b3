package io.jvhost.virtqueue;

import static io.jvhost.virtqueue.TestGuest.*;
import static org.junit.jupiter.api.Assertions.*;

import io.jvhost.iothread.sys.Libc;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class GuestMemoryTest {
    private TestGuest g;

    @BeforeEach
    void setUp() throws Exception {
        g = new TestGuest();
    }

    @AfterEach
    void tearDown() {
        g.close();
    }

    @Test
    void regionGeometryAndSortedTable() {
        assertEquals(List.of(g.a, g.b, g.c), g.mem.regions());
        assertEquals(A_GPA, g.a.gpa());
        assertEquals(A_SIZE, g.a.size());
        assertEquals(A_UADDR, g.a.uaddr());
        assertEquals(A_OFF, g.a.mmapOffset());
        assertEquals(2, g.c.windows.length, "C must be split into two 1 GiB windows");
        assertEquals(509, GuestMemory.maxRegions());
    }

    @Test
    void scalarReadsSeeDriverWritesLittleEndian() throws Exception {
        g.put(A_GPA + 0x100, 0x1122334455667788L, 8);
        assertEquals(0x1122334455667788L, g.mem.readU64(A_GPA + 0x100));
        assertEquals(0x55667788L, g.mem.readU32(A_GPA + 0x100));
        assertEquals(0x7788, g.mem.readU16(A_GPA + 0x100));
        assertEquals(0x88, g.mem.readU8(A_GPA + 0x100));
        g.put(B_GPA + 8, 0xfffffffeL, 4);
        assertEquals(0xfffffffeL, g.mem.readU32(B_GPA + 8), "u32 is unsigned");
        g.put(C_WINDOW2 + 64, 0xbeef, 2);
        assertEquals(0xbeef, g.mem.readU16(C_WINDOW2 + 64));
        assertEquals(0xbeef, g.mem.readU16Acquire(C_WINDOW2 + 64));
    }

    @Test
    void scalarWritesReachTheDriversMapping() throws Exception {
        g.mem.writeU8(A_GPA, 0xab);
        g.mem.writeU16(A_GPA + 2, 0xcdef);
        g.mem.writeU32(A_GPA + 4, 0x89abcdefL);
        g.mem.writeU64(A_GPA + 8, -2L);
        g.mem.writeU16Release(C_GPA + 0x1000, 0x4242);
        assertEquals(0xab, g.get(A_GPA, 1));
        assertEquals(0xcdef, g.get(A_GPA + 2, 2));
        assertEquals(0x89abcdefL, g.get(A_GPA + 4, 4));
        assertEquals(-2L, g.get(A_GPA + 8, 8));
        assertEquals(0x4242, g.get(C_GPA + 0x1000, 2));
    }

    @Test
    void scalarsStraddlingRegionAndWindowBoundariesArePiecewise() throws Exception {
        long ab = B_GPA - 3; // 3 bytes in A, 5 in B
        g.mem.writeU64(ab, 0x0102030405060708L);
        assertEquals(0x0102030405060708L, g.get(ab, 8));
        assertEquals(0x0102030405060708L, g.mem.readU64(ab));
        assertEquals(0x05060708L, g.mem.readU32(ab));
        long cw = C_WINDOW2 - 1; // odd address: a u16 across the window boundary
        g.mem.writeU16(cw, 0xa55a);
        assertEquals(0x5a, g.get(cw, 1));
        assertEquals(0xa5, g.get(C_WINDOW2, 1));
        assertEquals(0xa55a, g.mem.readU16(cw));
        assertEquals(0xa55a, g.mem.readU16Acquire(cw));
        g.mem.writeU16Release(cw, 0x1234);
        assertEquals(0x1234, g.get(cw, 2));
        g.mem.writeU32(cw - 1, 0xdeadbeefL);
        assertEquals(0xdeadbeefL, g.mem.readU32(cw - 1));
    }

    @Test
    void outOfRangeAccessThrows() {
        long[] bad = {0, A_GPA - 1, B_GPA + B_SIZE, C_GPA - 1, C_GPA + C_SIZE, -1L, Long.MIN_VALUE, 0x7fff_ffff_ffff_ffffL};
        for (long gpa : bad) {
            assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU8(gpa), () -> Long.toHexString(gpa));
            assertThrows(InvalidGuestAddressException.class, () -> g.mem.writeU8(gpa, 1));
        }
        // Partly mapped: starts inside, ends outside (B's end is followed by a gap).
        long end = B_GPA + B_SIZE;
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU16(end - 1));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU32(end - 2));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU64(end - 4));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.writeU64(end - 4, 0));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU16Acquire(end - 1));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.writeU16Release(end - 1, 0));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU64(-4L)); // wraps past 2^64
        byte[] buf = new byte[16];
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.read(end - 8, buf, 0, 16));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.write(end - 8, buf, 0, 16));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.slices(end - 8, 16, bb -> fail("no slice")));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.slices(A_GPA, -1, bb -> fail("no slice")));
        assertThrows(IndexOutOfBoundsException.class, () -> g.mem.read(A_GPA, buf, 8, 9));
        // A failed write must not have written the mapped part.
        assertEquals(0L, g.get(end - 8, 8));
    }

    @Test
    void isMappedAcrossAdjacentRegionsButNotGaps() {
        assertTrue(g.mem.isMapped(A_GPA, A_SIZE + B_SIZE));
        assertTrue(g.mem.isMapped(B_GPA - 1, 2));
        assertTrue(g.mem.isMapped(C_GPA, C_SIZE));
        assertTrue(g.mem.isMapped(A_GPA, 0));
        assertFalse(g.mem.isMapped(A_GPA, A_SIZE + B_SIZE + 1));
        assertFalse(g.mem.isMapped(A_GPA - 1, 2));
        assertFalse(g.mem.isMapped(C_GPA + C_SIZE - 1, 2));
        assertFalse(g.mem.isMapped(A_GPA, -1));
        assertFalse(g.mem.isMapped(A_GPA, Long.MAX_VALUE));
        assertFalse(g.mem.isMapped(-16L, 32));
    }

    @Test
    void bulkReadWriteAcrossBoundaries() throws Exception {
        byte[] src = new byte[3 * 4096];
        for (int i = 0; i < src.length; i++) src[i] = (byte) (i * 7 + 3);
        long ab = B_GPA - 5000;
        g.mem.write(ab, src, 0, src.length);
        assertArrayEquals(src, g.bytes(ab, src.length));
        long cw = C_WINDOW2 - 1234;
        g.fill(cw, src);
        byte[] dst = new byte[src.length + 2];
        g.mem.read(cw, dst, 1, src.length);
        for (int i = 0; i < src.length; i++) assertEquals(src[i], dst[i + 1]);
    }

    @Test
    void slicesSplitAtRegionAndWindowBoundaries() throws Exception {
        byte[] data = new byte[8192];
        for (int i = 0; i < data.length; i++) data[i] = (byte) (i ^ 0x5a);
        long ab = B_GPA - 100;
        g.fill(ab, data);
        List<ByteBuffer> out = new ArrayList<>();
        assertEquals(2, g.mem.slices(ab, data.length, out::add));
        assertEquals(100, out.get(0).remaining());
        assertEquals(data.length - 100, out.get(1).remaining());
        assertArrayEquals(data, concat(out));

        out.clear();
        long cw = C_WINDOW2 - 4096;
        g.fill(cw, data);
        assertEquals(2, g.mem.slices(cw, data.length, out::add));
        assertEquals(4096, out.get(0).remaining());
        assertArrayEquals(data, concat(out));
        // Writing through a slice is visible to the driver (zero-copy I/O goes this way).
        out.get(1).put(0, (byte) 0x77);
        assertEquals(0x77, g.get(C_WINDOW2, 1));

        out.clear();
        assertEquals(1, g.mem.slices(A_GPA + 8, 16, out::add));
        assertEquals(0, g.mem.slices(A_GPA, 0, bb -> fail("empty")));
    }

    private static byte[] concat(List<ByteBuffer> parts) {
        int n = parts.stream().mapToInt(ByteBuffer::remaining).sum();
        byte[] r = new byte[n];
        int o = 0;
        for (ByteBuffer p : parts) {
            ByteBuffer d = p.duplicate();
            int len = d.remaining();
            d.get(r, o, len);
            o += len;
        }
        return r;
    }

    @Test
    void uaddrTranslationMustStayInOneRegion() throws Exception {
        assertEquals(A_GPA + 0x1234, g.mem.uaddrToGpa(A_UADDR + 0x1234, 0x100));
        assertEquals(B_GPA, g.mem.uaddrToGpa(B_UADDR, B_SIZE));
        assertEquals(C_WINDOW2 + 8, g.mem.uaddrToGpa(C_UADDR + (1L << 30) + 8, 16));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.uaddrToGpa(A_UADDR + A_SIZE - 8, 16));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.uaddrToGpa(A_UADDR - 1, 1));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.uaddrToGpa(A_GPA, 1), "gpa is not a uaddr");
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.uaddrToGpa(A_UADDR, -1));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.uaddrToGpa(-1L, 1));
    }

    @Test
    void overlappingRegionsAreRejected() throws Exception {
        int fd = memfd("overlap", 0x10000);
        try (MemoryRegion gpaOverlap = MemoryRegion.map(fd, B_GPA - 0x1000, 0x2000, 0x1000_0000L, 0);
                MemoryRegion uaddrOverlap = MemoryRegion.map(fd, 0x8000_0000L, 0x2000, C_UADDR + C_SIZE - 1, 0);
                MemoryRegion fine = MemoryRegion.map(fd, 0x8000_0000L, 0x10000, 0x1000_0000L, 0)) {
            assertThrows(InvalidGuestAddressException.class, () -> g.mem.with(gpaOverlap));
            assertThrows(InvalidGuestAddressException.class, () -> g.mem.with(uaddrOverlap));
            assertThrows(InvalidGuestAddressException.class, () -> g.mem.with(g.a), "same region twice");
            GuestMemory m = g.mem.with(fine);
            assertEquals(4, m.regions().size());
            assertEquals(3, g.mem.regions().size(), "snapshots are immutable");
            assertEquals(fine, m.regions().get(2), "sorted by gpa");
        } finally {
            Libc.close(fd);
        }
    }

    @Test
    void withoutReturnsNewSnapshotAndKeepsOldOneWorking() throws Exception {
        g.put(B_GPA + 16, 0x99, 1);
        GuestMemory m = g.mem.without(B_GPA, B_SIZE, B_UADDR);
        assertEquals(List.of(g.a, g.c), m.regions());
        assertThrows(InvalidGuestAddressException.class, () -> m.readU8(B_GPA + 16));
        assertEquals(0x99, g.mem.readU8(B_GPA + 16), "old snapshot unaffected and region not closed");
        assertFalse(g.b.isClosed());
        assertFalse(m.isMapped(A_GPA, A_SIZE + 1));
        assertThrows(IllegalArgumentException.class, () -> m.without(B_GPA, B_SIZE, B_UADDR));
        assertThrows(IllegalArgumentException.class, () -> g.mem.without(A_GPA, A_SIZE, B_UADDR), "uaddr must match");
        assertEquals(0, GuestMemory.empty().with(g.a).without(A_GPA, A_SIZE, A_UADDR).regions().size());
    }

    @Test
    void tableIsLimitedToMaxRegions() throws Exception {
        int fd = memfd("many", 4096);
        List<MemoryRegion> maps = new ArrayList<>();
        try {
            GuestMemory m = GuestMemory.empty();
            for (int i = 0; i < GuestMemory.maxRegions(); i++) {
                MemoryRegion r = MemoryRegion.map(fd, 0x10_0000_0000L + 0x2000L * i, 4096, 0x20_0000_0000L + 0x2000L * i, 0);
                maps.add(r);
                m = m.with(r);
            }
            MemoryRegion extra = MemoryRegion.map(fd, 0x50_0000_0000L, 4096, 0x60_0000_0000L, 0);
            maps.add(extra);
            GuestMemory full = m;
            assertThrows(InvalidGuestAddressException.class, () -> full.with(extra));
            // Lookup still works with many regions (binary search).
            full.writeU32(0x10_0000_0000L + 0x2000L * 300 + 12, 0xcafef00dL);
            assertEquals(0xcafef00dL, full.readU32(0x10_0000_0000L + 0x2000L * 300 + 12));
            assertEquals(0xcafef00dL, full.readU32(0x10_0000_0000L + 12), "all map the same fd page");
            assertThrows(InvalidGuestAddressException.class, () -> full.readU8(0x10_0000_0000L + 4096));
        } finally {
            maps.forEach(MemoryRegion::close);
            Libc.close(fd);
        }
    }

    @Test
    void accessAfterCloseThrowsInsteadOfCrashing() throws Exception {
        g.put(B_GPA, 7, 1);
        assertEquals(7, g.mem.readU8(B_GPA));
        g.b.close();
        g.b.close(); // idempotent
        assertTrue(g.b.isClosed());
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU8(B_GPA));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU64(B_GPA + 8));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.writeU32(B_GPA, 1));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU16Acquire(B_GPA));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.writeU16Release(B_GPA, 1));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.readU32(B_GPA - 2), "straddles A|B");
        byte[] buf = new byte[64];
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.read(B_GPA, buf, 0, 64));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.write(B_GPA - 32, buf, 0, 64));
        assertThrows(InvalidGuestAddressException.class, () -> g.mem.slices(B_GPA, 64, bb -> {}));
        assertThrows(InvalidGuestAddressException.class, () -> GuestMemory.empty().with(g.b));
        assertEquals(0, g.mem.readU8(A_GPA), "other regions keep working");
    }

    @Test
    void mapValidatesGeometry() throws Exception {
        int fd = memfd("geom", 0x4000);
        try {
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, 0, 0, 0, 0), "empty");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, 0, -4096, 0, 0), "negative size");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, -0x1000L, 0x2000, 0, 0), "gpa wraps");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, -0x1000L, 0x1000, 0, 0), "gpa ends at 2^64");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, 0, 0x2000, -0x1000L, 0), "uaddr wraps");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, 0, 0x2000, 0, -1), "negative offset");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, 0, 0x2000, 0, Long.MAX_VALUE - 0x1000), "offset+size overflows");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, 0, 0x4000, 0, 0x1000), "past end of file (SIGBUS)");
            assertThrows(IOException.class, () -> MemoryRegion.map(fd, 0, 0x8000, 0, 0), "larger than file");
            assertThrows(IOException.class, () -> MemoryRegion.map(-1, 0, 0x1000, 0, 0), "bad fd");
            assertThrows(IOException.class, () -> MemoryRegion.map(999_999, 0, 0x1000, 0, 0), "closed fd");
            // Unaligned mmap offset is fine: we map from 0 and skip it.
            try (MemoryRegion r = MemoryRegion.map(fd, 0x1000, 0x1000, 0x5000, 0x123)) {
                GuestMemory m = GuestMemory.empty().with(r);
                m.writeU16Release(0x1000, 0xabcd); // odd host address: fence fallback
                assertEquals(0xabcd, m.readU16Acquire(0x1000));
                byte[] raw = new byte[2];
                m.read(0x1000, raw, 0, 2);
                assertEquals((byte) 0xcd, raw[0]);
            }
        } finally {
            Libc.close(fd);
        }
    }

    @Test
    void mappingOutlivesTheFd() throws Exception {
        int fd = memfd("outlive", 0x2000);
        MemoryRegion r = MemoryRegion.map(fd, 0, 0x2000, 0, 0);
        assertEquals(0, Libc.close(fd));
        try (r) {
            GuestMemory m = GuestMemory.empty().with(r);
            m.writeU64(0x1ff8, 42);
            assertEquals(42, m.readU64(0x1ff8));
        }
    }
}
