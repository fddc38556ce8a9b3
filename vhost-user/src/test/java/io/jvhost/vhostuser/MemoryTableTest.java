package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

import static io.jvhost.vhostuser.TestExport.pattern;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Guest memory handed over with SET_MEM_TABLE and with ADD_MEM_REG, and changed under running rings: the
 * back-end must drain the rings before it unmaps anything, and must really unmap what it replaced.
 */
@Timeout(30)
class MemoryTableTest extends ExportTestBase {
    static final String MEMFD = "jvhost-guest-ram";

    /**
     * Bytes of the fixture's memfds mapped in this process: the guest's own mappings plus the back-end's. Bytes,
     * not lines: the kernel may merge two adjacent mappings of the same memfd into one line.
     */
    static long guestMappedBytes() throws IOException {
        long n = 0;
        for (String l : TestExport.maps()) {
            if (!l.contains(MEMFD)) continue;
            String[] range = l.substring(0, l.indexOf(' ')).split("-");
            n += Long.parseUnsignedLong(range[1], 16) - Long.parseUnsignedLong(range[0], 16);
        }
        return n;
    }

    /** Three regions at scattered gpas; the rings live in region 0 and are never touched. */
    private DriverQueue threeRegionGuest(TestExport.Builder b) throws Exception {
        ex = b.start();
        mem = guest(GuestMemory.create(List.of(
                new GuestMemory.RegionSpec(0, 8 * MIB, 0x7f00_1000_0000L),
                new GuestMemory.RegionSpec(4L << 30, 8 * MIB, 0x7e00_0000_0000L),
                new GuestMemory.RegionSpec(2L << 30, 8 * MIB, 0x7f80_0000_0000L)), true));
        DriverQueue q = ex.closeLater(new DriverQueue(mem, 0, 128, 0));
        fe = ex.connect(mem);
        neg = fe.handshake(new VhostUserFrontend.Options().reuseQueues(List.of(q), null));
        assertTrue(neg.hasProtocol(PF_CONFIGURE_MEM_SLOTS));
        return q;
    }

    @ParameterizedTest(name = "memSlots={0}")
    @ValueSource(booleans = {true, false})
    void bothWaysOfSendingMemoryServeBuffersInEveryRegion(boolean memSlots) throws Exception {
        ex = export().start();
        mem = guest(GuestMemory.twoRegions(16 * MIB));
        long own = guestMappedBytes();
        fe = ex.connect(mem);
        neg = fe.handshake(new VhostUserFrontend.Options().memSlots(memSlots));
        // The back-end maps each region once, from offset 0 of the (shared) memfd: 16 MiB + (16 + 16) MiB.
        assertEquals(own + 48 * MIB, guestMappedBytes(), "the back-end mapped each region once");
        DriverQueue q = fe.queue(0);
        for (int r = 0; r < 2; r++) {
            byte[] d = pattern(8192, r);
            ok(q, BlkRequest.write(64L * r, d).region(r));
            assertArrayEquals(d, ok(q, BlkRequest.read(64L * r, 8192).region(r)).data());
            assertArrayEquals(d, ex.imageBytes(64L * r * 512, 8192));
        }
    }

    @Test
    void memTableReplacedWhileRunningUnmapsTheOldMappings() throws Exception {
        ex = export().start();
        mem = guest(GuestMemory.twoRegions(16 * MIB));
        long own = guestMappedBytes();
        fe = ex.connect(mem);
        neg = fe.handshake(new VhostUserFrontend.Options().memSlots(false));
        DriverQueue q = fe.queue(0);
        ok(q, BlkRequest.write(0, pattern(4096, 1)));
        for (int i = 0; i < 3; i++) {
            fe.setMemTable(); // same regions again: new mappings, rings drained and restarted, old ones unmapped
            assertEquals(own + 48 * MIB, guestMappedBytes(), "replaced mappings were unmapped (round " + i + ")");
            assertArrayEquals(pattern(4096, 1), ok(q, BlkRequest.read(0, 4096)).data());
        }
        fe.close();
        // The next front-end is accepted only after the previous one's memory is unmapped.
        VhostUserFrontend probe = ex.connect(mem);
        probe.getFeatures();
        assertEquals(own, guestMappedBytes(), "disconnect unmapped everything");
    }

    @Test
    void remMemRegAndAddMemRegWhileRingsRun() throws Exception {
        DriverQueue q = threeRegionGuest(export());
        byte[] d = pattern(8192, 5);
        ok(q, BlkRequest.write(8, d).region(2).segments(2));

        fe.remMemReg(mem.region(2)); // acked 0 (ackAll)
        // The ring keeps running on the remaining regions.
        byte[] e = pattern(4096, 6);
        ok(q, BlkRequest.write(40, e).region(1));
        assertArrayEquals(e, ok(q, BlkRequest.read(40, 4096).region(0)).data());

        fe.addMemReg(mem.region(2));
        BlkRequest r = ok(q, BlkRequest.read(8, 8192).region(2).segments(3));
        assertArrayEquals(d, r.data());
        assertArrayEquals(d, ex.imageBytes(8 * 512L, 8192));
        // Twice more, to be sure remove/add cycles do not accumulate state.
        for (int i = 0; i < 2; i++) {
            fe.remMemReg(mem.region(1));
            fe.addMemReg(mem.region(1));
            assertArrayEquals(e, ok(q, BlkRequest.read(40, 4096).region(1)).data());
        }
    }

    @Test
    void remMemRegDrainsRequestsUsingTheRegionBeforeUnmapping() throws Exception {
        // Slow node: the reads are still in flight when REM_MEM_REG arrives; read-zeroes writes into the region.
        DriverQueue q = threeRegionGuest(export().nullCo(1L << 30, 50_000_000));
        long own = guestMappedBytes();
        List<BlkRequest> rs = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            BlkRequest r = BlkRequest.read(i * 8L, 4096).region(2);
            q.enqueue(r);
            rs.add(r);
        }
        q.kick();
        TestExport.awaitCondition("16 requests in flight", T, () -> ex.node.inFlight() == 16);
        fe.remMemReg(mem.region(2)); // the ack comes only after the ring drained
        assertEquals(16, q.usedIdx(), "every request completed before REM_MEM_REG was acked");
        assertEquals(own - 8 * MIB, guestMappedBytes(), "the back-end unmapped the removed region");
        q.awaitAll(rs, T);
        for (BlkRequest r : rs) {
            assertEquals(BLK_S_OK, r.status());
            assertArrayEquals(new byte[4096], r.data(), "null-co read-zeroes wrote into the region before it went");
        }
        fe.addMemReg(mem.region(2));
        assertEquals(own, guestMappedBytes());
        ok(q, BlkRequest.read(0, 4096).region(2));
    }
}
