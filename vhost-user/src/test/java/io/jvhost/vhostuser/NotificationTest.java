package io.jvhost.vhostuser;

import io.jvhost.iothread.sys.EventFd;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.List;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Interrupt and kick suppression with VIRTIO_RING_F_EVENT_IDX on and off. Signals are counted exactly: the call
 * eventfd is one of the test's own, read by the test thread only, and replacing it (SET_VRING_CALL, acked) is a
 * barrier: the iothread handles the swap after every flush that published what the test already saw.
 */
@Timeout(30)
class NotificationTest extends ExportTestBase {
    private final List<EventFd> calls = new ArrayList<>();

    /** Installs a fresh call eventfd and returns how many signals the previous one got. */
    private long swapCall(DriverQueue q, EventFd[] current) throws Exception {
        EventFd next = EventFd.create();
        calls.add(next);
        fe.setVringCall(q.index(), next.fd()); // acked: after this the old fd is never signalled again
        long n = current[0] == null ? 0 : current[0].drain();
        current[0] = next;
        return n;
    }

    @ParameterizedTest(name = "eventIdx={0}")
    @ValueSource(booleans = {true, false})
    void interruptsAreDeliveredWhenAskedForAndSuppressedOtherwise(boolean eventIdx) throws Exception {
        // Exact counts: without adaptive polling, so that the device never turns kicks off while idle.
        open(export().pollMaxNs(0), new VhostUserFrontend.Options().eventIdx(eventIdx));
        assertEquals(eventIdx, neg.has(F_EVENT_IDX));
        DriverQueue q = fe.queue(0);
        assertEquals(eventIdx, q.eventIdx());
        EventFd[] call = new EventFd[1];
        try {
            swapCall(q, call);

            // Interrupts wanted: one signal per completion when requests go one at a time. The driver waits for
            // the interrupt itself, not just for used->idx: the device decides to signal after publishing it, so a
            // driver that already moved used_event on would legitimately get none for the previous request.
            long[] got = {0};
            for (int i = 0; i < 10; i++) {
                q.enableInterrupts();
                BlkRequest r = q.submit(BlkRequest.read(i, 512));
                q.pollUntil(1, T);
                assertEquals(BLK_S_OK, r.status());
                int want = i + 1;
                TestExport.awaitCondition("interrupt " + want, T, () -> (got[0] += call[0].drain()) >= want);
            }
            assertEquals(10, got[0] + swapCall(q, call), "one interrupt per completion");

            // Interrupts suppressed (used_event far away / VRING_AVAIL_F_NO_INTERRUPT): none at all.
            q.disableInterrupts();
            for (int i = 0; i < 10; i++) {
                BlkRequest r = q.submit(BlkRequest.read(i, 512));
                q.pollUntil(1, T);
                assertEquals(BLK_S_OK, r.status());
            }
            assertEquals(0, swapCall(q, call), "no interrupt while the driver suppresses them");

            // A batch with interrupts wanted: at least one, at most one per request (coalescing is allowed).
            q.enableInterrupts();
            for (int i = 0; i < 16; i++) q.enqueue(BlkRequest.write(i * 8L, TestExport.pattern(4096, i)));
            q.kick();
            q.pollUntil(16, T);
            long batch = swapCall(q, call);
            assertTrue(batch >= 1 && batch <= 16, "batch interrupts: " + batch);

            // The device is idle and asks to be kicked for the next request: kicks were never suppressed here.
            assertEquals(0, q.kicksSuppressed());
            if (eventIdx) {
                assertEquals(q.availIdx(), q.availEvent(), "avail_event = next avail index the device will take");
            } else {
                assertEquals(0, q.usedFlags() & VRING_USED_F_NO_NOTIFY, "NO_NOTIFY cleared while idle");
            }
            // Back to the fixture's own call fd: interrupt-driven waiting works again.
            fe.setVringCall(q.index(), q.callFd());
            q.enableInterrupts();
            ok(q, BlkRequest.flush());
        } finally {
            for (EventFd e : calls) e.close();
        }
    }

    @ParameterizedTest(name = "eventIdx={0}")
    @ValueSource(booleans = {true, false})
    void kicksAreHonouredWhileRequestsAreInFlight(boolean eventIdx) throws Exception {
        // Slow node: requests stay in flight while the driver keeps adding and kicking, honouring suppression.
        open(export().nullCo(1L << 30, 20_000_000), new VhostUserFrontend.Options().eventIdx(eventIdx));
        DriverQueue q = fe.queue(0);
        List<BlkRequest> rs = new ArrayList<>();
        for (int i = 0; i < 40; i++) rs.add(q.submit(BlkRequest.read(i, 4096)));
        q.awaitAll(rs, T); // interrupt-driven: would hang if a kick or an interrupt were lost
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());
        assertEquals(40, q.kicksSent() + q.kicksSuppressed());
        assertTrue(q.kicksSent() >= 1);
        assertEquals(q.size(), q.freeDescriptors());
    }

    @ParameterizedTest(name = "eventIdx={0}")
    @ValueSource(booleans = {true, false})
    void pollingSuppressesKicksWhileBusyAndReenablesThemWhenIdle(boolean eventIdx) throws Exception {
        // 2 ms of polling: back-to-back requests are found by polling, with kicks off meanwhile.
        open(export().pollMaxNs(2_000_000), new VhostUserFrontend.Options().eventIdx(eventIdx));
        DriverQueue q = fe.queue(0);
        int n = 2_000;
        for (int i = 0; i < n; i++) {
            BlkRequest r = q.submit(BlkRequest.read(i, 512)); // kicks only if the device asks for one
            q.pollUntil(1, T);
            assertEquals(BLK_S_OK, r.status());
        }
        assertEquals(n, q.kicksSent() + q.kicksSuppressed());
        assertTrue(q.kicksSuppressed() > 0, "polling never suppressed a kick (sent " + q.kicksSent() + ")");
        assertTrue(ex.iothreads.get(0).pollHits() > 0);
        // Idle: once the iothread stops polling it must ask for kicks again, or the next request would hang.
        TestExport.awaitCondition("kicks re-enabled on the idle device", T,
                () -> eventIdx ? q.availEvent() == q.availIdx() : (q.usedFlags() & VRING_USED_F_NO_NOTIFY) == 0);
        long sent = q.kicksSent();
        BlkRequest last = q.submit(BlkRequest.read(1, 512));
        assertEquals(sent + 1, q.kicksSent(), "an idle device must be kicked");
        q.awaitAll(List.of(last), T);
        assertEquals(BLK_S_OK, last.status());
    }
}
