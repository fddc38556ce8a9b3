package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.List;

import static io.jvhost.vhostuser.TestExport.pattern;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * A front-end goes away (cleanly idle, or with requests in flight on a slow node) and another one connects: it
 * must get full service from a clean device (no ring state, features, memory or fds of the previous session).
 */
@Timeout(30)
class ReconnectTest extends ExportTestBase {

    @Test
    void secondFrontEndAfterIdleDisconnectGetsACleanDevice() throws Exception {
        open(export().numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        byte[] data = pattern(8192, 1);
        ok(fe.queue(0), BlkRequest.write(100, data));
        for (int i = 0; i < 7; i++) ok(fe.queue(1), BlkRequest.flush()); // moves ring 1 to index 7
        fe.setConfig(32, CONFIG_FLAG_WRITABLE, new byte[] {0});         // and switches to writethrough
        assertFalse(ex.blk.isWriteCacheEnabled());
        fe.close();

        // New guest, different negotiation: no EVENT_IDX, no indirect, SET_MEM_TABLE, smaller rings.
        GuestMemory mem2 = guest(GuestMemory.twoRegions(8 * MIB));
        VhostUserFrontend fe2 = ex.connect(mem2);
        VhostUserFrontend.Negotiated n2 = fe2.handshake(new VhostUserFrontend.Options().numQueues(2).eventIdx(false)
                .indirect(false).memSlots(false).queueSize(64));
        assertEquals(2, ex.export.connectionCount());
        assertFalse(n2.has(F_EVENT_IDX));
        assertEquals(1, n2.config().writeback(), "config space reset with the device");
        assertTrue(ex.blk.isWriteCacheEnabled());
        // Rings start from the new front-end's base (0), not where the old session stopped.
        DriverQueue q0 = fe2.queue(0), q1 = fe2.queue(1);
        assertArrayEquals(data, ok(q0, BlkRequest.read(100, 8192).segments(2)).data());
        for (int i = 0; i < 3; i++) ok(q1, BlkRequest.read(i, 512));
        assertArrayEquals(new int[] {1, 3}, fe2.stop());
    }

    @ParameterizedTest(name = "queues={0}")
    @ValueSource(ints = {1, 2})
    void disconnectWithRequestsInFlightDrainsThemBeforeTheNextFrontEnd(int queues) throws Exception {
        open(export().nullCo(1L << 30, 50_000_000).numQueues(queues), new VhostUserFrontend.Options().numQueues(queues));
        int perQueue = 32;
        List<Long> statusGpas = new ArrayList<>();
        long[] usedIdxGpa = new long[queues];
        for (int qi = 0; qi < queues; qi++) {
            DriverQueue q = fe.queue(qi);
            usedIdxGpa[qi] = q.usedGpa() + 2;
            for (int i = 0; i < perQueue; i++) {
                BlkRequest r = BlkRequest.read(i * 8L, 4096).indirect(true);
                q.enqueue(r);
                statusGpas.add(r.statusGpa()); // known once the request is laid out in guest memory
                assertEquals(BlkRequest.STATUS_UNWRITTEN, mem.getU8(r.statusGpa()));
            }
            q.kick();
        }
        TestExport.awaitCondition("requests in flight", T, () -> ex.node.inFlight() == (long) queues * perQueue);
        fe.close(); // gone with every request still in flight (its queues and buffers are abandoned)

        // The next front-end is accepted only after the old session drained: the old guest memory (still mapped
        // here) shows every request completed with its status and used entry written.
        GuestMemory mem2 = guest(GuestMemory.twoRegions(8 * MIB));
        VhostUserFrontend fe2 = ex.connect(mem2);
        long offered = fe2.getFeatures();
        assertTrue((offered & bit(F_VERSION_1)) != 0);
        for (int qi = 0; qi < queues; qi++) assertEquals(perQueue, mem.getU16Acquire(usedIdxGpa[qi]), "queue " + qi + " drained");
        for (long s : statusGpas) assertEquals(BLK_S_OK, mem.getU8(s));
        // The node's counter drops just after each completion callback returned (on the iothread).
        TestExport.awaitCondition("node idle", T, () -> ex.node.inFlight() == 0);

        VhostUserFrontend.Negotiated n2 = fe2.handshake(new VhostUserFrontend.Options().numQueues(queues));
        assertEquals(queues, n2.config().numQueues());
        for (int qi = 0; qi < queues; qi++) {
            DriverQueue q = fe2.queue(qi);
            List<BlkRequest> rs = new ArrayList<>();
            for (int i = 0; i < 8; i++) rs.add(q.submit(BlkRequest.read(i, 512)));
            q.awaitAll(rs, T);
            for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());
        }
        int[] want = new int[queues];
        java.util.Arrays.fill(want, 8);
        assertArrayEquals(want, fe2.stop(), "fresh rings counted from 0");
    }

    @Test
    void frontEndThatVanishesMidHandshakeDoesNotBlockTheNext() throws Exception {
        ex = export().start();
        mem = guest(GuestMemory.twoRegions(8 * MIB));
        // Gone after memory and one ring address, before any kick.
        fe = ex.connect(mem);
        fe.getFeatures();
        fe.setProtocolFeatures(fe.getProtocolFeatures());
        fe.addMemReg(mem.region(0));
        fe.setVringNum(0, 128);
        fe.close();
        // Gone after half a header.
        VhostUserFrontend half = ex.connect(mem);
        half.sendBytes(new byte[] {1, 0, 0, 0, 1, 0});
        half.close();
        VhostUserFrontend fe2 = ex.connect(mem);
        fe2.handshake(new VhostUserFrontend.Options());
        ok(fe2.queue(0), BlkRequest.flush());
        assertEquals(3, ex.export.connectionCount());
    }
}
