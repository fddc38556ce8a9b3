package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Drain phase 3 for the export: while its backend's node is drained (from this test thread, as the main thread
 * would), the node has nothing in flight and no request of the guest starts; at drainedEnd every queued request is
 * served. Repeated with requests in flight on both queues at every drainedBegin.
 */
@Timeout(120)
class ExportDrainTest extends ExportTestBase {
    @Test
    void drainedSectionsStopTheQueuesAndLoseNothing() throws Exception {
        open(export().nullCo(1L << 30, 2_000_000).numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        DriverQueue[] qs = {fe.queue(0), fe.queue(1)};
        for (int iter = 0; iter < 40; iter++) {
            List<List<BlkRequest>> before = new ArrayList<>();
            for (DriverQueue q : qs) before.add(submit(q, 6, iter));

            ex.node.drainedBegin(); // remote wait: this thread never runs an iothread's handlers
            try {
                assertEquals(0, ex.node.inFlight(), "in flight after drainedBegin returned");
                // Completions that finished before drainedBegin returned may still be publishing their used index
                // (a bottom half); let them, then nothing else may move.
                for (AioContextRef c : contexts()) c.roundTrip();
                int[] used = {qs[0].usedIdx(), qs[1].usedIdx()};
                // A pop racing with drainedBegin is parked by the backend (at most one per queue); after that the
                // queues must take nothing more from their rings.
                int parked = ex.blk.parkedRequests();
                assertTrue(parked <= qs.length, "parked " + parked);
                List<List<BlkRequest>> during = new ArrayList<>();
                for (DriverQueue q : qs) during.add(submit(q, 3, iter + 1000));
                // Let each iothread run everything queued for it twice: kicks included, nothing may start.
                for (AioContextRef c : contexts()) c.roundTrip();
                for (AioContextRef c : contexts()) c.roundTrip();
                assertEquals(0, ex.node.inFlight(), "a request started inside the drained section");
                assertEquals(parked, ex.blk.parkedRequests(), "the queues took requests from their rings while drained");
                assertEquals(used[0], qs[0].usedIdx(), "queue 0 completed a request inside the drained section");
                assertEquals(used[1], qs[1].usedIdx(), "queue 1 completed a request inside the drained section");
                before.addAll(during);
            } finally {
                ex.node.drainedEnd();
            }
            for (int i = 0; i < before.size(); i++) {
                DriverQueue q = qs[i % 2];
                q.awaitAll(before.get(i), T);
                for (BlkRequest r : before.get(i)) assertEquals(BLK_S_OK, r.status(), r::toString);
            }
        }
    }

    private List<BlkRequest> submit(DriverQueue q, int n, int seed) {
        List<BlkRequest> rs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            BlkRequest r = BlkRequest.read((seed * 64L + i * 8L) % 100_000, 4096).indirect(true);
            q.enqueue(r);
            rs.add(r);
        }
        q.kick();
        return rs;
    }

    private interface AioContextRef {
        void roundTrip() throws Exception;
    }

    private List<AioContextRef> contexts() {
        List<AioContextRef> l = new ArrayList<>();
        for (var c : ex.iothreads) l.add(() -> c.call(() -> null, 10, TimeUnit.SECONDS));
        return l;
    }
}
