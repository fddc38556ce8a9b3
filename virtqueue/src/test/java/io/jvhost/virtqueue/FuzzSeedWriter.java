package io.jvhost.virtqueue;

import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_INDIRECT;
import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_NEXT;
import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_WRITE;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfSystemProperty;

/**
 * Writes the hand-made seed corpus of this module's fuzz tests into src/test/resources (the fuzzer starts from
 * these, and regression runs replay them). Not part of the build (the class name matches no Surefire pattern):
 * {@code mvn -o -pl virtqueue test -Dtest=FuzzSeedWriter -Djvhost.fuzz.writeSeeds=true}.
 */
@EnabledIfSystemProperty(named = "jvhost.fuzz.writeSeeds", matches = "true")
class FuzzSeedWriter {
    static final int N = VIRTQ_DESC_F_NEXT, W = VIRTQ_DESC_F_WRITE, I = VIRTQ_DESC_F_INDIRECT;
    static final Path RES = Path.of("src/test/resources/io/jvhost/virtqueue");

    static void write(String test, String method, String name, byte[] seed) throws IOException {
        Path dir = RES.resolve(test + "Inputs").resolve(method);
        Files.createDirectories(dir);
        Files.write(dir.resolve("seed-" + name), seed);
    }

    // ---------------------------------------------------------------------------------- SplitRingFuzzTest

    /** Ring header: log2(size), mode, three arena offsets, first avail index, used->idx, capacity - 1. */
    static FuzzInput.Seed ring(int log2, int mode, long desc, long avail, long used, int capMinus1) {
        return new FuzzInput.Seed().u8(log2).u8(mode).u32(desc).u32(avail).u32(used).u16(0).u16(0).u8(capMinus1);
    }

    /** Op 1: descriptor idx of the table (addr as arena u32, len u16, flags u8). */
    static FuzzInput.Seed desc(FuzzInput.Seed s, int idx, long addr, int len, int flags, int next) {
        return s.u8(1).u16(idx).u8(0).u32(addr).u16(len).u8(flags).u16(next);
    }

    /** Op 2: a descriptor anywhere (indirect table entry). */
    static FuzzInput.Seed descAt(FuzzInput.Seed s, long at, long addr, int len, int flags, int next) {
        return s.u8(2).u32(at).u8(0).u32(addr).u16(len).u8(flags).u16(next);
    }

    static FuzzInput.Seed offer(FuzzInput.Seed s, int head) {
        return s.u8(3).u16(head);
    }

    /** pop, push the popped head with len, publish, needsNotify. */
    static FuzzInput.Seed complete(FuzzInput.Seed s, long len) {
        return s.u8(5).u8(6).u8(1).u32(len).u8(7).u8(8);
    }

    @Test
    void splitRingSeeds() throws IOException {
        String t = "SplitRingFuzzTest", m = "popChains";
        // A virtio-blk-like chain: header, data, status.
        FuzzInput.Seed s = ring(3, 0, 0x1000, 0x2000, 0x3000, 15);
        desc(s, 0, 0x10000, 16, N, 1);
        desc(s, 1, 0x11000, 512, N | W, 2);
        desc(s, 2, 0x12000, 1, W, 0);
        offer(s, 0);
        write(t, m, "direct-chain", complete(s, 513).toBytes());

        // EVENT_IDX, an indirect table of three entries, two rounds.
        s = ring(4, 1, 0x4000, 0x6000, 0x7000, 15);
        descAt(s, 0x20000, 0x30000, 16, N, 1);
        descAt(s, 0x20010, 0x31000, 4096, N | W, 2);
        descAt(s, 0x20020, 0x33000, 1, W, 0);
        desc(s, 5, 0x20000, 48, I, 0);
        offer(s, 5);
        complete(s, 4097);
        s.u8(10); // enableNotification
        offer(s, 5);
        write(t, m, "indirect-event-idx", complete(s, 1).toBytes());

        // Buffers straddling the A/B border and the border of C's two ByteBuffer windows.
        s = ring(2, 0, 0x1000, 0x2000, 0x3000, 7);
        desc(s, 3, 0x7ff00, 0x200, N, 1);
        desc(s, 1, 0x8000_0000L | 0xff00, 0x200, W, 0);
        offer(s, 3);
        write(t, m, "cross-region-and-window", complete(s, 0x200).toBytes());

        // The largest queue: 512 KiB descriptor table.
        s = ring(15, 0, 0, 0x80000, 0x91000, 3);
        desc(s, 32767, 0xe0000, 16, N, 0);
        desc(s, 0, 0xe1000, 8, W, 0);
        offer(s, 32767);
        write(t, m, "queue-32768", complete(s, 9).toBytes());

        // Malformed rings: a loop, nested indirect, an avail index running away, a head out of range.
        s = ring(3, 0, 0x1000, 0x2000, 0x3000, 15);
        desc(s, 0, 0x10000, 16, N, 1);
        desc(s, 1, 0x10000, 16, N, 0);
        write(t, m, "loop", complete(offer(s, 0), 1).toBytes());
        s = ring(3, 0, 0x1000, 0x2000, 0x3000, 15);
        descAt(s, 0x20000, 0x21000, 32, I, 0);
        desc(s, 2, 0x20000, 16, I, 0);
        write(t, m, "nested-indirect", complete(offer(s, 2), 1).toBytes());
        s = ring(3, 0, 0x1000, 0x2000, 0x3000, 15);
        write(t, m, "avail-runaway", s.u8(4).u16(9).u8(5).toBytes());
        s = ring(3, 0, 0x1000, 0x2000, 0x3000, 15);
        write(t, m, "head-out-of-range", complete(offer(s, 8), 1).toBytes());
        // Ring addresses that are not mapped / not aligned.
        write(t, m, "raw-geometry", new FuzzInput.Seed().u8(3).u8(2).u64(-16).u64(0x1000).u64(0x2000).toBytes());
        write(t, m, "misaligned", ring(3, 4, 0x1008, 0x2001, 0x3002, 15).toBytes());
    }

    // -------------------------------------------------------------------------------- GuestMemoryFuzzTest

    /** Op 0 with mode 0: fd, gpa = g << 12, offset = o << 12, size = fd size - offset - (cut << 12), uaddr = u << 12. */
    static FuzzInput.Seed map(FuzzInput.Seed s, int fd, int g, int o, int cut, int u) {
        return s.u8(0).u8(fd).u8(0).u16(g).u8(o).u8(cut).u16(u);
    }

    /** Op 0 with mode 0x40: adjacent (in gpa) to region k. */
    static FuzzInput.Seed mapAdjacent(FuzzInput.Seed s, int fd, int k, int o, int cut, int u) {
        return s.u8(0).u8(fd).u8(0x40).u8(k).u8(o).u8(cut).u16(u);
    }

    /** An address operand near the end (or start) of region k. */
    static FuzzInput.Seed nearRegion(FuzzInput.Seed s, boolean end, int k, int delta) {
        return s.u8(end ? 1 : 0).u8(k).u16(delta);
    }

    @Test
    void guestMemorySeeds() throws IOException {
        String t = "GuestMemoryFuzzTest", m = "memoryTable";
        // 1 MiB at gpa 0, then 1 GiB + 16 KiB of the sparse memfd adjacent to it (two ByteBuffer windows).
        FuzzInput.Seed s = map(new FuzzInput.Seed(), 1, 0, 0, 0, 0x1000);
        mapAdjacent(s, 2, 0, 0, 0x1c, 0x8000);
        nearRegion(s.u8(3), true, 0, -8).u16(16).bytes(new byte[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
        nearRegion(s.u8(2), true, 0, -8).u16(16);                          // read back across the region border
        nearRegion(s.u8(4).u8(3), true, 1, -0x4000 - 4).u64(0x1122334455667788L); // u64 read across the window border
        nearRegion(s.u8(4).u8(4 | 3), true, 1, -0x4000 - 3).u64(-1);        // u64 write across it
        nearRegion(s.u8(4).u8(8 | 1), true, 0, -1).u64(0);                  // u16 acquire across the region border
        nearRegion(s.u8(5), true, 1, -0x4000 - 100).u8(0).u16(200);        // slices across the window border
        s.u8(6).u8(0).u8(0).u16(0x10).u8(0).u8(0).u16(64);                   // uaddrToGpa inside region 0
        s.u8(7).u8(1).u8(0).u16(-16).u16(32);                                // isMapped across the end of region 0
        s.u8(1).u8(1).u8(0);                                                 // remove region 0 (closes it)
        s.u8(8).u8(3).u64(0).u8(64);                                         // read gpa 0 through the old snapshot
        write(t, m, "two-regions", s.toBytes());

        // Refusals: past the end of the fd, a wrapping gpa, an overlap in gpa and in uaddr, the empty memfd.
        s = map(new FuzzInput.Seed(), 0, 0, 0, 0, 0x100);
        s.u8(0).u8(0).u8(0xa0).u16(0x20).u32(0x1000).u16(0x10).u32(0x300000); // offset + size past EOF
        s.u8(0).u8(0).u8(0x01).u16(1).u8(0).u8(0).u16(0x300);               // gpa = -4096: wraps
        map(s, 0, 0, 0, 0, 0x400);                                           // overlaps region 0 in gpa
        map(s, 0, 0x100, 0, 0, 0x100);                                       // overlaps region 0 in uaddr
        map(s, 3, 0x200, 0, 0, 0x500);                                       // empty memfd
        s.u8(1).u8(0).u64(0).u64(0x10000).u64(0x100001);                    // remove with the wrong uaddr
        write(t, m, "refusals", s.toBytes());
    }
}
