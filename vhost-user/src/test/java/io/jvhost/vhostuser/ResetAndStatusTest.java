package io.jvhost.vhostuser;

import io.jvhost.iothread.sys.EventFd;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.MigrationLog;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * RESET_DEVICE, SET_STATUS/GET_STATUS and SET_VRING_ENABLE stop rings the way GET_VRING_BASE does: the ack comes
 * only after every request taken from the rings completed (used entry published, interrupt sent), and from then
 * on the device is suspended: not one byte of any used ring changes and no call eventfd is signalled. Restarting
 * (new SET_VRING_* messages, or ENABLE 1) serves I/O again.
 */
@Timeout(60)
class ResetAndStatusTest extends ExportTestBase {
    static final long LATENCY_NS = 50_000_000;
    static final int N = 32;
    static final int DRIVER_OK_STATUS = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;

    private static VhostUserFrontend.Options withStatus(int queues) {
        return new VhostUserFrontend.Options().numQueues(queues)
                .wantedProtocolFeatures(VhostUserFrontend.DEFAULT_PROTOCOL_FEATURES | bit(PF_STATUS));
    }

    /** Submits {@code n} slow reads on q (kicked at once); the caller waits for them to be in flight. */
    private static List<BlkRequest> submitReads(DriverQueue q, int n) {
        List<BlkRequest> rs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            BlkRequest r = BlkRequest.read(i * 8L, 4096).segments(1 + i % 3).indirect(i % 4 != 0);
            q.enqueue(r);
            rs.add(r);
        }
        q.kick();
        return rs;
    }

    private void awaitInFlight(int n) {
        TestExport.awaitCondition(n + " requests in flight", T, () -> ex.node.inFlight() >= n);
    }

    /** Replaces q's call fd with one only this test reads (handed to a watcher, which closes it, later). */
    private EventFd ownCallFd(DriverQueue q) throws Exception {
        EventFd call = EventFd.create();
        try {
            fe.setVringCall(q.index(), call.fd());
        } catch (Exception e) {
            call.close();
            throw e;
        }
        return call;
    }

    private byte[] usedRing(DriverQueue q) {
        return mem.read(q.usedGpa(), 6 + 8 * q.size());
    }

    /**
     * Right after the ack: every request taken from each queue is in its used ring and was signalled. Then, for
     * four times the node's latency, no call fd is signalled and no used-ring byte changes, although a new
     * request was made available on every queue (and kicked): the device is suspended.
     */
    private List<BlkRequest> assertDrainedThenSuspended(List<DriverQueue> qs, List<EventFd> calls, int[] expectUsed) throws Exception {
        List<byte[]> atAck = new ArrayList<>();
        for (int i = 0; i < qs.size(); i++) {
            assertEquals(expectUsed[i], qs.get(i).usedIdx(), "queue " + i + ": every request completed before the ack");
            assertTrue(calls.get(i).drain() >= 1, "queue " + i + ": the completions were signalled before the ack");
            atAck.add(usedRing(qs.get(i)));
        }
        List<TestExport.Watched> watches = new ArrayList<>();
        for (EventFd c : calls) watches.add(ex.watch(c)); // the watcher owns (and closes) the eventfd from now on
        List<BlkRequest> late = new ArrayList<>();
        for (DriverQueue q : qs) {
            BlkRequest r = BlkRequest.read(0, 512);
            q.enqueue(r);
            q.publish();
            q.notifyDevice();
            late.add(r);
        }
        for (int i = 0; i < qs.size(); i++) {
            assertFalse(watches.get(i).await(Duration.ofNanos(4 * LATENCY_NS / qs.size())), "queue " + i + ": a notification while suspended");
        }
        for (int i = 0; i < qs.size(); i++) {
            assertArrayEquals(atAck.get(i), usedRing(qs.get(i)), "queue " + i + ": the used ring was written while suspended");
            assertFalse(late.get(i).isDone());
        }
        assertEquals(0, ex.node.inFlight(), "nothing was taken from a stopped ring");
        return late;
    }

    @Test
    void resetDeviceDrainsInFlightRequestsAndRestartServesIo() throws Exception {
        open(export().nullCo(1L << 30, LATENCY_NS).numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        assertTrue(neg.hasProtocol(PF_RESET_DEVICE), "RESET_DEVICE negotiated");
        List<DriverQueue> qs = fe.queues();
        List<EventFd> calls = List.of(ownCallFd(qs.get(0)), ownCallFd(qs.get(1)));
        List<BlkRequest> rs = submitReads(qs.get(0), N);
        rs.addAll(submitReads(qs.get(1), 8));
        awaitInFlight(N + 8);

        fe.resetDevice(); // acked (REPLY_ACK): the ack is the drain's end
        List<BlkRequest> late = assertDrainedThenSuspended(qs, calls, new int[] {N, 8});
        for (DriverQueue q : qs) q.pollUsed();
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status(), r::toString);

        // The device state is gone (features, ring state: GET_VRING_BASE of a reset ring is 0), the session is
        // not (memory table, protocol features): QEMU's start sequence alone brings it back, from the bases the
        // driver knows.
        assertEquals(0, fe.getVringBase(0));
        fe.setFeatures(neg.features());
        fe.restart(new int[] {N, 8});
        for (int i = 0; i < 2; i++) {
            qs.get(i).await(late.get(i), T);
            assertEquals(BLK_S_OK, late.get(i).status());
            ok(qs.get(i), BlkRequest.write(i, TestExport.pattern(512, i)));
        }
        assertArrayEquals(new int[] {N + 2, 10}, fe.stop());
        assertEquals(1, ex.export.connectionCount());
    }

    @Test
    void resetDeviceEndsLoggingAndARingMayComeBackElsewhere() throws Exception {
        open(export(), new VhostUserFrontend.Options());
        MigrationLog log = ex.closeLater(MigrationLog.covering(mem.region(1).gpaEnd()));
        assertEquals(0, fe.setLogBase(log));
        fe.setFeatures(neg.features() | bit(F_LOG_ALL));
        ok(fe.queue(0), BlkRequest.read(0, 4096));
        assertFalse(log.sync().isEmpty());
        try (TestExport.LogCapture cap = new TestExport.LogCapture(BlkDevice.class)) {
            fe.resetDevice();
            assertEquals(1, cap.count("dirty log:"), "resetting with logging on ends the logging session");
        }
        assertEquals(1, DirtyLoggingTest.mapsOf(log), "the back-end unmapped the log");

        // A new ring, at other addresses and of another size, without LOG_ALL: served, nothing logged.
        DriverQueue q = ex.closeLater(new DriverQueue(mem, 0, 64));
        q.setEventIdx(neg.has(F_EVENT_IDX));
        fe.setFeatures(neg.features());
        fe.setVringCall(0, q.callFd());
        fe.setVringNum(0, 64);
        fe.setVringBase(0, 0);
        fe.setVringAddr(q);
        fe.setVringKick(0, q.kickFd());
        fe.setVringEnable(0, true);
        byte[] d = TestExport.pattern(8192, 9);
        ok(q, BlkRequest.write(100, d));
        assertArrayEquals(d, ok(q, BlkRequest.read(100, 8192)).data());
        assertTrue(log.dirtyPages().isEmpty());
        assertEquals(2, fe.getVringBase(0));
    }

    @ParameterizedTest(name = "new status {0}")
    @ValueSource(ints = {0, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK, (DRIVER_OK_STATUS | STATUS_FAILED) & ~STATUS_DRIVER_OK})
    void leavingDriverOkDrainsAndKeepsTheRingState(int newStatus) throws Exception {
        open(export().nullCo(1L << 30, LATENCY_NS), withStatus(1));
        assertTrue(neg.hasProtocol(PF_STATUS), "STATUS negotiated");
        assertEquals(0, fe.getStatus());
        fe.setStatus(DRIVER_OK_STATUS);
        assertEquals(DRIVER_OK_STATUS, fe.getStatus());
        DriverQueue q = fe.queue(0);
        EventFd call = ownCallFd(q);
        List<BlkRequest> rs = submitReads(q, N);
        awaitInFlight(N);

        fe.setStatus(newStatus);
        List<BlkRequest> late = assertDrainedThenSuspended(List.of(q), List.of(call), new int[] {N});
        q.pollUsed();
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());
        assertEquals(newStatus, fe.getStatus());
        // Unlike RESET_DEVICE the ring state is kept: QEMU 8+ sends SET_STATUS 0 before GET_VRING_BASE and
        // migrates the base it gets.
        assertEquals(N, fe.getVringBase(0));

        // QEMU's start: ring setup, then DRIVER_OK. The request made while suspended is served.
        fe.restart(new int[] {N});
        fe.setStatus(DRIVER_OK_STATUS);
        q.await(late.get(0), T);
        assertEquals(BLK_S_OK, late.get(0).status());
        ok(q, BlkRequest.flush());
        assertEquals(N + 2, fe.getVringBase(0));
    }

    @Test
    void statusChangesThatKeepDriverOkLeaveRingsRunning() throws Exception {
        open(export().nullCo(1L << 30, 1_000_000_000L), withStatus(1));
        fe.setStatus(DRIVER_OK_STATUS);
        DriverQueue q = fe.queue(0);
        List<BlkRequest> rs = submitReads(q, N);
        awaitInFlight(N);
        fe.setStatus(DRIVER_OK_STATUS | STATUS_NEEDS_RESET);
        fe.setStatus(DRIVER_OK_STATUS);
        assertEquals(N, ex.node.inFlight(), "no drain: the ring kept running");
        assertEquals(DRIVER_OK_STATUS, fe.getStatus());
        q.awaitAll(rs, T);
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());
    }

    @Test
    void statusMessagesAreCheckedAndNeedTheFeature() throws Exception {
        open(export(), withStatus(1));
        assertNotEquals(0, fe.sendWithAck(SET_STATUS, ProtocolErrorTest.le(8).putLong(0x100).array()), "not a status byte");
        assertNotEquals(0, fe.sendWithAck(SET_STATUS, ProtocolErrorTest.le(4).putInt(4).array()), "4-byte payload");
        assertEquals(0, fe.getStatus());
        ok(fe.queue(0), BlkRequest.read(0, 512));

        // A ring the driver broke (avail->idx runs away) shows as DEVICE_NEEDS_RESET until a reset.
        fe.setStatus(DRIVER_OK_STATUS);
        DriverQueue q = fe.queue(0);
        q.setAvailIdx(q.availIdx() + 1000);
        q.notifyDevice();
        TestExport.awaitCondition("DEVICE_NEEDS_RESET", T, () -> {
            try {
                return fe.getStatus() == (DRIVER_OK_STATUS | STATUS_NEEDS_RESET);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        fe.resetDevice();
        assertEquals(0, fe.getStatus(), "reset clears the status, NEEDS_RESET included");

        VhostUserFrontend other = ex.connect(mem);
        fe.close();
        VhostUserFrontend.Negotiated n2 = other.handshake(new VhostUserFrontend.Options());
        assertFalse(n2.hasProtocol(PF_STATUS));
        assertTrue((n2.offeredProtocolFeatures() & bit(PF_STATUS)) != 0, "offered");
        assertNotEquals(0, other.sendWithAck(GET_STATUS, null), "GET_STATUS without STATUS negotiated");
        assertNotEquals(0, other.sendWithAck(SET_STATUS, ProtocolErrorTest.le(8).putLong(0).array()), "SET_STATUS without STATUS negotiated");
        ok(other.queue(0), BlkRequest.read(0, 512));
    }

    @Test
    void disableThenEnableDrainsAndResumes() throws Exception {
        open(export().nullCo(1L << 30, LATENCY_NS), new VhostUserFrontend.Options());
        DriverQueue q = fe.queue(0);
        EventFd call = ownCallFd(q);
        List<BlkRequest> rs = submitReads(q, N);
        awaitInFlight(N);
        fe.setVringEnable(0, false);
        List<BlkRequest> late = assertDrainedThenSuspended(List.of(q), List.of(call), new int[] {N});
        q.pollUsed();
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());

        // ENABLE 1 alone resumes (same kick fd, from where it stopped): the request made meanwhile is served.
        fe.setVringCall(0, q.callFd());
        fe.setVringEnable(0, true);
        q.await(late.get(0), T);
        assertEquals(BLK_S_OK, late.get(0).status());
        rs = submitReads(q, 4);
        q.awaitAll(rs, T);
        assertEquals(N + 5, fe.getVringBase(0));
    }
}
