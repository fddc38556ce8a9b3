package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static io.jvhost.vhostuser.TestExport.pattern;
import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * An export over a file node with aio=io_uring, end to end through the Java front-end: guest reads and writes
 * (multi-segment, indirect, FUA, flush) served by each queue's iothread ring straight into guest memory.
 */
@Timeout(60)
class UringExportTest extends ExportTestBase {
    @Test
    void twoQueuesOnTwoIothreadRingsServeTheGuest() throws Exception {
        open(export().aio("io_uring").numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        assumeTrue(ex.iothreads.get(0).uring() != null, "iothreads are not on io_uring in this run");
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            List<Future<Integer>> done = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                DriverQueue q = fe.queue(i);
                int qi = i;
                done.add(pool.submit(() -> MultiQueueTest.drive(q, qi)));
            }
            for (Future<Integer> f : done) assertEquals(MultiQueueTest.ROUNDS * MultiQueueTest.BATCH * 2, f.get(45, TimeUnit.SECONDS));
        } finally {
            pool.shutdownNow();
            assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
        }
        for (int qi = 0; qi < 2; qi++) {
            for (int j = 0; j < MultiQueueTest.BATCH; j++) {
                assertArrayEquals(pattern(MultiQueueTest.BYTES, MultiQueueTest.seed(qi, MultiQueueTest.ROUNDS - 1, j)),
                        ex.imageBytes(MultiQueueTest.sector(qi, j) * 512, MultiQueueTest.BYTES));
            }
        }

        DriverQueue q = fe.queue(0);
        byte[] b = pattern(8192, 2), host = pattern(4096, 3);
        ok(q, BlkRequest.writeFua(100, b).segmentSizes(512, 4096, 3584));
        assertArrayEquals(b, ex.imageBytes(100 * 512L, b.length), "OUT_FUA data is in the image file");
        ok(q, BlkRequest.flush());
        long cap = TestExport.IMAGE_SIZE / 512;
        ex.writeImage(cap * 512 - 4096, host); // the host writes the last 4 KiB; the guest must read it
        BlkRequest r = ok(q, BlkRequest.read(cap - 8, 4096).segmentSizes(512, 512, 3072).indirect(true));
        assertArrayEquals(host, r.data());
        assertEquals(q.size(), q.freeDescriptors());
    }
}
