package io.jvhost.vhostuser;

import io.jvhost.iothread.sys.EventFd;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * GET_VRING_BASE stops a ring: the reply carries the next avail index and comes only after every request taken
 * from that ring has completed, with its used entry published and its interrupt sent. After the reply the ring is
 * silent: no used-ring write and no call notification (qemu-storage-daemon 7.2 gets this wrong, see
 * vhost-user-facts.md §7).
 */
@Timeout(30)
class GetVringBaseTest extends ExportTestBase {
    static final long LATENCY_NS = 50_000_000;
    static final int N = 48;

    /** Everything the device may write in the used ring: flags, idx, ring[], avail_event. */
    private byte[] usedRing(DriverQueue q) {
        return mem.read(q.usedGpa(), 6 + 8 * q.size());
    }

    /** Submits N slow reads on queue q and waits until the node has all of them in flight. */
    private List<BlkRequest> fill(DriverQueue q) {
        List<BlkRequest> rs = new ArrayList<>();
        for (int i = 0; i < N; i++) {
            BlkRequest r = BlkRequest.read(i * 8L, 4096).segments(1 + i % 3).indirect(i % 4 != 0);
            q.enqueue(r);
            rs.add(r);
        }
        q.kick();
        TestExport.awaitCondition(N + " requests in flight", T, () -> ex.node.inFlight() >= N);
        return rs;
    }

    /** Replaces queue q's call fd with one only this thread reads (no irq thread draining it behind our back). */
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

    /**
     * Right after the reply: all N used entries are there and were signalled. Then the ring must stay silent
     * during a window of several times the node's latency: no signal on the call fd (watched from the moment
     * its pre-reply signals were read) and not one byte of the used ring changed.
     */
    private void assertCompleteAtReplyAndSilentAfter(DriverQueue q, EventFd call) throws Exception {
        byte[] atReply = usedRing(q);
        assertEquals(N, q.usedIdx(), "every request completed before the reply");
        assertTrue(call.drain() >= 1, "the completions were signalled before the reply");
        TestExport.Watched after = ex.watch(call);
        assertFalse(after.await(Duration.ofNanos(4 * LATENCY_NS)), "a notification came after GET_VRING_BASE");
        assertArrayEquals(atReply, usedRing(q), "the used ring was written after GET_VRING_BASE");
    }

    @Test
    void replyWaitsForInFlightRequestsAndTheRingIsSilentAfterIt() throws Exception {
        open(export().nullCo(1L << 30, LATENCY_NS).numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        DriverQueue q = fe.queue(0), other = fe.queue(1);
        EventFd call = ownCallFd(q);
        List<BlkRequest> rs = fill(q);
        // Queue 1 is busy too and must not be affected.
        List<BlkRequest> others = new ArrayList<>();
        for (int i = 0; i < 8; i++) others.add(other.submit(BlkRequest.read(i, 512)));

        int base = fe.getVringBase(0); // raw GET_VRING_BASE, without SET_VRING_ENABLE 0 before it
        assertEquals(N, base, "next avail index");
        assertCompleteAtReplyAndSilentAfter(q, call);
        assertEquals(N, q.pollUsed().size());
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status(), r::toString);
        assertArrayEquals(new byte[4096], rs.get(0).data());
        other.awaitAll(others, T);

        // A request added while stopped is not taken; after a restart from the returned base (QEMU's cont) it is.
        BlkRequest late = q.submit(BlkRequest.read(0, 512));
        assertEquals(N, q.usedIdx());
        fe.setVringCall(0, q.callFd());
        fe.setVringNum(0, q.size());
        fe.setVringBase(0, base);
        fe.setVringAddr(q);
        fe.setVringKick(0, q.kickFd());
        q.await(late, T);
        assertEquals(BLK_S_OK, late.status());
        assertEquals(N + 1, fe.getVringBase(0));
    }

    @Test
    void qemuStopSequenceDrainsToo() throws Exception {
        // QEMU 7.2 sends SET_VRING_ENABLE 0 first (its ack already waits for the drain), then GET_VRING_BASE.
        open(export().nullCo(1L << 30, LATENCY_NS), new VhostUserFrontend.Options());
        DriverQueue q = fe.queue(0);
        EventFd call = ownCallFd(q);
        List<BlkRequest> rs = fill(q);
        int[] bases = fe.stop();
        assertArrayEquals(new int[] {N}, bases);
        assertCompleteAtReplyAndSilentAfter(q, call);
        q.pollUsed();
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());

        fe.restart(bases); // stop/cont: resumes where it stopped
        q.awaitAll(fill(q), T);
        assertArrayEquals(new int[] {2 * N}, fe.stop());
    }

    @Test
    void idleRingReturnsItsBaseAtOnceAndSurvivesRepeatedStops() throws Exception {
        open(export(), new VhostUserFrontend.Options().numQueues(1));
        DriverQueue q = fe.queue(0);
        for (int i = 0; i < 5; i++) ok(q, BlkRequest.read(i, 512));
        assertEquals(5, fe.getVringBase(0));
        assertEquals(5, fe.getVringBase(0), "a second GET_VRING_BASE on a stopped ring returns the same index");
        fe.restart(new int[] {5});
        ok(q, BlkRequest.flush());
        assertArrayEquals(new int[] {6}, fe.stop());
    }
}
