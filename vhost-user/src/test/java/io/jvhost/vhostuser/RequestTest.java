package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static io.jvhost.vhostuser.TestExport.IMAGE_SIZE;
import static io.jvhost.vhostuser.TestExport.pattern;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Every virtio-blk request type against an in-process export on a real image file, with the exact status the
 * virtio spec (1.2, 5.2.6) and QEMU's virtio-blk give for each malformed request, and descriptor layouts a
 * back-end must walk (multi-segment, indirect, tables and buffers straddling two adjacent memory regions).
 */
@Timeout(30)
class RequestTest extends ExportTestBase {
    static final long CAP = IMAGE_SIZE / 512;

    @ParameterizedTest(name = "memSlots={0} indirect={1}")
    @CsvSource({"true,true", "false,false"})
    void readWriteAndFuaWriteReachTheImageFile(boolean memSlots, boolean indirect) throws Exception {
        open(export(), new VhostUserFrontend.Options().memSlots(memSlots).indirect(indirect));
        assertEquals(indirect, neg.has(F_INDIRECT_DESC));
        DriverQueue q = fe.queue(0);
        byte[] a = pattern(16384, 1), b = pattern(8192, 2), host = pattern(4096, 3);

        BlkRequest w = ok(q, BlkRequest.write(0, a).segments(4).indirect(indirect));
        assertEquals(1, w.usedLen(), "a write writes only the status byte");
        BlkRequest fua = ok(q, BlkRequest.writeFua(100, b).segmentSizes(512, 4096, 3584));
        assertEquals(1, fua.usedLen());
        assertArrayEquals(a, ex.imageBytes(0, a.length), "OUT data is in the image file");
        assertArrayEquals(b, ex.imageBytes(100 * 512L, b.length), "OUT_FUA data is in the image file");

        ex.writeImage(CAP * 512 - 4096, host); // the host writes the last 4 KiB; the guest must read it
        BlkRequest r1 = ok(q, BlkRequest.read(0, 16384).segments(3).indirect(indirect));
        BlkRequest r2 = ok(q, BlkRequest.read(100, 8192).statusInLastData(true));
        BlkRequest r3 = ok(q, BlkRequest.read(CAP - 8, 4096).segmentSizes(512, 512, 3072));
        assertArrayEquals(a, r1.data());
        assertArrayEquals(b, r2.data());
        assertArrayEquals(host, r3.data());
        assertEquals(16384 + 1, r1.usedLen(), "used len = data written + status");
        assertEquals(8192 + 1, r2.usedLen());
        assertEquals(q.size(), q.freeDescriptors());
        assertTrue(q.unexpectedUsed().isEmpty());
    }

    @Test
    void flushAndDefaultGetId() throws Exception {
        open(export());
        DriverQueue q = fe.queue(0);
        BlkRequest f = ok(q, BlkRequest.flush());
        assertEquals(1, f.usedLen());
        BlkRequest id = ok(q, BlkRequest.getId());
        assertEquals("jvhost", id.idString());
        byte[] want = Arrays.copyOf("jvhost".getBytes(StandardCharsets.US_ASCII), 20);
        assertArrayEquals(want, id.data(), "id padded with NULs to 20 bytes");
        assertEquals(21, id.usedLen());
    }

    @ParameterizedTest(name = "serial={0}")
    @ValueSource(strings = {"SN-0042", "ABCDEFGHIJKLMNOPQRST", "ABCDEFGHIJKLMNOPQRSTUVWXY"})
    void getIdWithCustomSerialIsAtMost20BytesAndTruncatedToTheBuffer(String serial) throws Exception {
        open(export().serial(serial));
        DriverQueue q = fe.queue(0);
        byte[] s = serial.getBytes(StandardCharsets.US_ASCII);
        byte[] want20 = Arrays.copyOf(s, 20); // longer serials are cut, shorter padded with NULs

        BlkRequest id = ok(q, BlkRequest.getId());
        assertArrayEquals(want20, id.data());
        assertEquals(21, id.usedLen());

        // A buffer shorter than 20 bytes gets what fits, nothing more.
        BlkRequest small = ok(q, BlkRequest.custom(BLK_T_GET_ID, 0, null, 8));
        assertArrayEquals(Arrays.copyOf(s, 8), small.data());
        assertEquals(9, small.usedLen());

        // A larger buffer gets exactly 20 bytes; the rest is not touched.
        BlkRequest big = ok(q, BlkRequest.custom(BLK_T_GET_ID, 0, null, 64).segments(3));
        assertArrayEquals(want20, Arrays.copyOf(big.data(), 20));
        byte[] rest = new byte[44];
        Arrays.fill(rest, BlkRequest.IN_FILL);
        assertArrayEquals(rest, Arrays.copyOfRange(big.data(), 20, 64));
        assertEquals(21, big.usedLen());
    }

    @Test
    void discardAndWriteZeroesWithAndWithoutUnmap() throws Exception {
        open(export());
        DriverQueue q = fe.queue(0);
        byte[] data = pattern(65536, 9);
        ex.writeImage(1000 * 512L, data);
        ex.writeImage(2000 * 512L, data);

        ok(q, BlkRequest.writeZeroes(1000 + 8, 16, false));
        ok(q, BlkRequest.writeZeroes(1000 + 64, 8, true));
        ok(q, BlkRequest.discard(2000, 8));
        ok(q, BlkRequest.discard(40000, 32768)); // exactly max_discard_sectors
        BlkRequest maxWz = ok(q, BlkRequest.writeZeroes(4096, 32768, true));
        assertEquals(1, maxWz.usedLen());

        byte[] expect = data.clone();
        Arrays.fill(expect, 8 * 512, 24 * 512, (byte) 0);
        Arrays.fill(expect, 64 * 512, 72 * 512, (byte) 0);
        assertArrayEquals(expect, ex.imageBytes(1000 * 512L, data.length), "zeroed exactly the requested sectors");
        BlkRequest r = ok(q, BlkRequest.read(1000, 65536));
        assertArrayEquals(expect, r.data());
        // Discarded sectors may read as anything; the sectors next to them must be intact.
        assertArrayEquals(Arrays.copyOfRange(data, 8 * 512, 64 * 512), ex.imageBytes(2008 * 512L, 56 * 512));
    }

    /** Submits all at once and returns status by name. */
    private Map<String, Integer> statuses(DriverQueue q, Map<String, BlkRequest> rs) throws Exception {
        for (BlkRequest r : rs.values()) q.enqueue(r);
        q.kick();
        q.awaitAll(rs.values(), T);
        Map<String, Integer> out = new LinkedHashMap<>();
        for (Map.Entry<String, BlkRequest> e : rs.entrySet()) {
            out.put(e.getKey(), e.getValue().status());
            if (e.getValue().status() != BLK_S_OK) {
                assertEquals(1, e.getValue().usedLen(), e.getKey() + ": a failed request writes only the status");
            }
        }
        return out;
    }

    @Test
    void errorStatusesAreExactlyWhatTheSpecSays() throws Exception {
        open(export());
        DriverQueue q = fe.queue(0);
        Map<String, BlkRequest> rs = new LinkedHashMap<>();
        Map<String, Integer> want = new LinkedHashMap<>();
        // Range: past the end, straddling the end, and sector*512 overflowing 64 bits are I/O errors.
        rs.put("read at capacity", BlkRequest.read(CAP, 512));
        want.put("read at capacity", BLK_S_IOERR);
        rs.put("read straddling the end", BlkRequest.read(CAP - 1, 1024));
        want.put("read straddling the end", BLK_S_IOERR);
        rs.put("read of the last sector", BlkRequest.read(CAP - 1, 512));
        want.put("read of the last sector", BLK_S_OK);
        rs.put("write past the end", BlkRequest.write(CAP + 10, new byte[512]));
        want.put("write past the end", BLK_S_IOERR);
        rs.put("sector*512 overflows (2^55)", BlkRequest.read(1L << 55, 512));
        want.put("sector*512 overflows (2^55)", BLK_S_IOERR);
        rs.put("sector*512 overflows (2^63/256)", BlkRequest.write(Long.MAX_VALUE / 256, new byte[512]));
        want.put("sector*512 overflows (2^63/256)", BLK_S_IOERR);
        rs.put("sector 2^64-1", BlkRequest.read(-1L, 512));
        want.put("sector 2^64-1", BLK_S_IOERR);
        rs.put("read length not a multiple of 512", BlkRequest.read(0, 100));
        want.put("read length not a multiple of 512", BLK_S_IOERR);
        rs.put("write length not a multiple of 512", BlkRequest.write(0, new byte[700]));
        want.put("write length not a multiple of 512", BLK_S_IOERR);
        // Unknown types are unsupported, with or without data.
        rs.put("type 0x77", BlkRequest.custom(0x77, 0, null, 0));
        want.put("type 0x77", BLK_S_UNSUPP);
        rs.put("type 3 with in data", BlkRequest.custom(3, 0, null, 512));
        want.put("type 3 with in data", BLK_S_UNSUPP);
        rs.put("GET_LIFETIME", BlkRequest.custom(BLK_T_GET_LIFETIME, 0, null, 16));
        want.put("GET_LIFETIME", BLK_S_UNSUPP);
        rs.put("SECURE_ERASE", BlkRequest.ranges(BLK_T_SECURE_ERASE, new long[] {0, 8, 0}));
        want.put("SECURE_ERASE", BLK_S_UNSUPP);
        // DISCARD / WRITE_ZEROES flags and segments.
        rs.put("DISCARD with UNMAP", BlkRequest.discard(0, 8, BLK_WRITE_ZEROES_FLAG_UNMAP));
        want.put("DISCARD with UNMAP", BLK_S_UNSUPP);
        rs.put("DISCARD with unknown flag", BlkRequest.discard(0, 8, 0x4));
        want.put("DISCARD with unknown flag", BLK_S_UNSUPP);
        rs.put("WRITE_ZEROES with unknown flag", BlkRequest.ranges(BLK_T_WRITE_ZEROES, new long[] {0, 8, 0x80}));
        want.put("WRITE_ZEROES with unknown flag", BLK_S_UNSUPP);
        rs.put("DISCARD with 2 segments", BlkRequest.ranges(BLK_T_DISCARD, new long[] {0, 8, 0}, new long[] {16, 8, 0}));
        want.put("DISCARD with 2 segments", BLK_S_UNSUPP);
        rs.put("WRITE_ZEROES with 2 segments", BlkRequest.ranges(BLK_T_WRITE_ZEROES, new long[] {0, 8, 0}, new long[] {16, 8, 0}));
        want.put("WRITE_ZEROES with 2 segments", BLK_S_UNSUPP);
        rs.put("DISCARD of 32769 sectors", BlkRequest.discard(0, 32769));
        want.put("DISCARD of 32769 sectors", BLK_S_IOERR);
        rs.put("WRITE_ZEROES of 32769 sectors", BlkRequest.writeZeroes(0, 32769, false));
        want.put("WRITE_ZEROES of 32769 sectors", BLK_S_IOERR);
        rs.put("DISCARD past the end", BlkRequest.discard(CAP - 4, 8));
        want.put("DISCARD past the end", BLK_S_IOERR);
        rs.put("WRITE_ZEROES past the end", BlkRequest.writeZeroes(CAP - 4, 8, true));
        want.put("WRITE_ZEROES past the end", BLK_S_IOERR);
        rs.put("WRITE_ZEROES sector overflow", BlkRequest.writeZeroes(1L << 56, 8, false));
        want.put("WRITE_ZEROES sector overflow", BLK_S_IOERR);
        rs.put("DISCARD with a short segment", BlkRequest.custom(BLK_T_DISCARD, 0, new byte[8], 0));
        want.put("DISCARD with a short segment", BLK_S_IOERR);
        rs.put("DISCARD of the last 8 sectors", BlkRequest.discard(CAP - 8, 8));
        want.put("DISCARD of the last 8 sectors", BLK_S_OK);
        assertEquals(want, statuses(q, rs));
        assertEquals(q.size(), q.freeDescriptors());
    }

    /** Hand-built chain: an out header of {@code hdrLens} pieces (a FLUSH), then one status byte. */
    private int rawFlushStatus(DriverQueue q, int... hdrLens) throws Exception {
        List<DriverQueue.Segment> segs = new ArrayList<>();
        List<Long> allocs = new ArrayList<>();
        byte[] hdr = ByteBuffer.allocate(32).order(ByteOrder.LITTLE_ENDIAN).putInt(BLK_T_FLUSH).array();
        int off = 0;
        for (int len : hdrLens) {
            long g = mem.alloc(len, 8);
            allocs.add(g);
            mem.write(g, hdr, off, len);
            off += len;
            segs.add(new DriverQueue.Segment(g, len, false));
        }
        long status = mem.alloc(1, 1);
        allocs.add(status);
        mem.putU8(status, BlkRequest.STATUS_UNWRITTEN);
        segs.add(new DriverQueue.Segment(status, 1, true));
        int head = q.addChain(segs, false, 0);
        q.kick();
        List<DriverQueue.UsedElem> used = q.awaitUsed(1, T);
        assertEquals(head, used.get(0).id());
        int st = mem.getU8(status);
        if (st != BLK_S_OK) assertEquals(1, used.get(0).len());
        for (long a : allocs) mem.free(a);
        return st;
    }

    @Test
    void headerShorterThan16BytesIsAnIoError() throws Exception {
        open(export());
        DriverQueue q = fe.queue(0);
        assertEquals(BLK_S_IOERR, rawFlushStatus(q, 8), "8-byte header");
        assertEquals(BLK_S_IOERR, rawFlushStatus(q, 15), "15-byte header");
        assertEquals(BLK_S_IOERR, rawFlushStatus(q, 4, 4, 4), "12 bytes in 3 descriptors");
        assertEquals(BLK_S_OK, rawFlushStatus(q, 8, 8), "a 16-byte header in two descriptors is legal");
        assertEquals(BLK_S_OK, rawFlushStatus(q, 3, 13), "split anywhere");
        assertEquals(BLK_S_OK, ok(q, BlkRequest.flush()).status(), "queue still serves");
    }

    @Test
    void logicalBlockSize4096RejectsUnalignedRequests() throws Exception {
        open(export().logicalBlockSize(4096));
        assertEquals(4096, neg.config().blkSize());
        DriverQueue q = fe.queue(0);
        Map<String, BlkRequest> rs = new LinkedHashMap<>();
        Map<String, Integer> want = new LinkedHashMap<>();
        byte[] d = pattern(8192, 4);
        rs.put("aligned write", BlkRequest.write(8, d));
        want.put("aligned write", BLK_S_OK);
        rs.put("512-byte read", BlkRequest.read(0, 512));
        want.put("512-byte read", BLK_S_IOERR);
        rs.put("6 KiB write", BlkRequest.write(32, pattern(6144, 7)));
        want.put("6 KiB write", BLK_S_IOERR);
        rs.put("4 KiB read at sector 1", BlkRequest.read(1, 4096));
        want.put("4 KiB read at sector 1", BLK_S_IOERR);
        rs.put("4 KiB FUA write at sector 4", BlkRequest.writeFua(4, pattern(4096, 8)));
        want.put("4 KiB FUA write at sector 4", BLK_S_IOERR);
        rs.put("DISCARD of 4 sectors", BlkRequest.discard(64, 4));
        want.put("DISCARD of 4 sectors", BLK_S_IOERR);
        rs.put("DISCARD at sector 4", BlkRequest.discard(68, 8));
        want.put("DISCARD at sector 4", BLK_S_IOERR);
        rs.put("WRITE_ZEROES of 1 sector", BlkRequest.writeZeroes(64, 1, false));
        want.put("WRITE_ZEROES of 1 sector", BLK_S_IOERR);
        rs.put("aligned WRITE_ZEROES", BlkRequest.writeZeroes(128, 16, true));
        want.put("aligned WRITE_ZEROES", BLK_S_OK);
        assertEquals(want, statuses(q, rs));
        assertArrayEquals(d, ex.imageBytes(8 * 512L, d.length));
        assertArrayEquals(d, ok(q, BlkRequest.read(8, 8192)).data());
        assertArrayEquals(new byte[2048], ex.imageBytes(4 * 512L, 2048), "the misaligned FUA write did not happen");
        assertArrayEquals(new byte[6144], ex.imageBytes(32 * 512L, 6144), "the 6 KiB write did not happen");
    }

    @Test
    void readOnlyExportOffersRoAndFailsEveryWrite() throws Exception {
        TestExport.Builder b = export().writable(false);
        ex = b.start();
        byte[] host = pattern(4096, 5);
        ex.writeImage(0, host);
        mem = guest(GuestMemory.twoRegions(16 * MIB));
        fe = ex.connect(mem);
        neg = fe.handshake(new VhostUserFrontend.Options());
        assertTrue((neg.offeredFeatures() & bit(BLK_F_RO)) != 0, "VIRTIO_BLK_F_RO offered");
        assertTrue(neg.has(BLK_F_RO));
        DriverQueue q = fe.queue(0);
        Map<String, BlkRequest> rs = new LinkedHashMap<>();
        Map<String, Integer> want = new LinkedHashMap<>();
        rs.put("read", BlkRequest.read(0, 4096));
        want.put("read", BLK_S_OK);
        rs.put("write", BlkRequest.write(0, new byte[4096]));
        want.put("write", BLK_S_IOERR);
        rs.put("FUA write", BlkRequest.writeFua(0, new byte[4096]));
        want.put("FUA write", BLK_S_IOERR);
        rs.put("discard", BlkRequest.discard(0, 8));
        want.put("discard", BLK_S_IOERR);
        rs.put("write zeroes", BlkRequest.writeZeroes(0, 8, false));
        want.put("write zeroes", BLK_S_IOERR);
        rs.put("write zeroes unmap", BlkRequest.writeZeroes(0, 8, true));
        want.put("write zeroes unmap", BLK_S_IOERR);
        rs.put("flush", BlkRequest.flush());
        want.put("flush", BLK_S_OK);
        rs.put("get id", BlkRequest.getId());
        want.put("get id", BLK_S_OK);
        assertEquals(want, statuses(q, rs));
        assertArrayEquals(host, rs.get("read").data());
        assertArrayEquals(host, ex.imageBytes(0, 4096), "image untouched");
    }

    @Test
    void indirectTablesAndBuffersStraddlingAdjacentRegions() throws Exception {
        ex = export().start();
        long rs = 4 * MIB;
        // Three regions, contiguous in guest-physical space (separate mappings on the back-end side): a table and a
        // buffer of the same request can each straddle a different boundary.
        mem = guest(GuestMemory.adjacentRegions(3, rs));
        long b1 = mem.region(1).gpa(), b2 = mem.region(2).gpa();
        assertEquals(rs, b1);
        assertEquals(2 * rs, b2);
        DriverQueue q = ex.closeLater(new DriverQueue(mem, 0, 128, 0)); // rings far from the boundaries
        fe = ex.connect(mem);
        neg = fe.handshake(new VhostUserFrontend.Options().reuseQueues(List.of(q), null));
        assertTrue(neg.has(F_INDIRECT_DESC));
        byte[] a = pattern(3072, 11), b = pattern(8192, 12), c = pattern(12288, 13);

        // The table starts 24 bytes before the boundary: its second entry is split between the regions.
        BlkRequest w1 = ok(q, BlkRequest.write(10, a).segmentSizes(1024, 2048).region(0).indirectTableAt(b1 - 24));
        assertArrayEquals(a, ex.imageBytes(10 * 512L, a.length));
        // Data contiguous across the boundary, cut in 3 descriptors (the middle one straddles).
        BlkRequest w2 = ok(q, BlkRequest.write(100, b).dataAt(b1 - 3000).segmentSizes(2048, 4096, 2048).region(0));
        assertArrayEquals(b, ex.imageBytes(100 * 512L, b.length));
        // One descriptor whose buffer straddles, inside an indirect table that straddles the other boundary.
        BlkRequest w3 = ok(q, BlkRequest.write(200, c).dataAt(b1 - 5000).indirectTableAt(b2 - 8).region(0));
        assertArrayEquals(c, ex.imageBytes(200 * 512L, c.length));
        for (BlkRequest w : List.of(w1, w2, w3)) assertEquals(1, w.usedLen());

        BlkRequest r1 = ok(q, BlkRequest.read(10, 3072).segments(3).region(0).indirectTableAt(b2 - 40));
        BlkRequest r2 = ok(q, BlkRequest.read(100, 8192).dataAt(b2 - 1000).segmentSizes(512, 7168, 512).region(0));
        BlkRequest r3 = ok(q, BlkRequest.read(200, 12288).dataAt(b1 - 6000).statusInLastData(true).indirectTableAt(b2 - 16).region(0));
        assertArrayEquals(a, r1.data());
        assertArrayEquals(b, r2.data());
        assertArrayEquals(c, r3.data());
        assertEquals(8193, r2.usedLen());
        // Long chains: 64 direct descriptors, and 120 in an indirect table.
        byte[] d = pattern(64 * 512, 14);
        ok(q, BlkRequest.write(300, d).segments(64));
        assertArrayEquals(d, ok(q, BlkRequest.read(300, d.length).segments(120).indirect(true)).data());
        assertArrayEquals(d, ex.imageBytes(300 * 512L, d.length));
        // Header and data in one descriptor (any layout).
        byte[] e = pattern(4096, 15);
        ok(q, BlkRequest.write(400, e).headerWithData(true));
        assertArrayEquals(e, ex.imageBytes(400 * 512L, e.length));
        assertEquals(q.size(), q.freeDescriptors());
    }
}
