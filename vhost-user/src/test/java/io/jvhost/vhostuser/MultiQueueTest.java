package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static io.jvhost.vhostuser.TestExport.pattern;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Several virtqueues, each on its own iothread or all mapped onto one shared iothread, loaded at the same time by
 * one driver thread per queue; every byte is checked in the guest and in the image file, and every handler must
 * have run on its queue's iothread.
 */
@Timeout(60)
class MultiQueueTest extends ExportTestBase {
    static final int ROUNDS = 6, BATCH = 24, BYTES = 4096;

    @ParameterizedTest(name = "queues={0} sharedIothread={1}")
    @CsvSource({"2,false", "2,true", "4,false", "4,true"})
    void concurrentLoadOnAllQueues(int queues, boolean shared) throws Exception {
        open(export().numQueues(queues).sharedIothread(shared), new VhostUserFrontend.Options().numQueues(queues));
        assertEquals(queues, neg.maxQueues());
        assertEquals(queues, neg.config().numQueues());
        assertEquals(shared ? 1 : queues, ex.iothreads.size());

        ExecutorService pool = Executors.newFixedThreadPool(queues);
        try {
            List<Future<Integer>> done = new ArrayList<>();
            for (int i = 0; i < queues; i++) {
                DriverQueue q = fe.queue(i);
                int qi = i;
                done.add(pool.submit(() -> drive(q, qi)));
            }
            int total = 0;
            for (Future<Integer> f : done) total += f.get(45, TimeUnit.SECONDS);
            assertEquals(queues * ROUNDS * BATCH * 2, total);
        } finally {
            pool.shutdownNow();
            assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
        }
        // The image holds what every queue wrote in its last round.
        for (int qi = 0; qi < queues; qi++) {
            for (int j = 0; j < BATCH; j++) {
                assertArrayEquals(pattern(BYTES, seed(qi, ROUNDS - 1, j)), ex.imageBytes(sector(qi, j) * 512, BYTES));
            }
        }
        // Each queue's handlers ran on exactly its own iothread, never anywhere else.
        Set<String> used = new HashSet<>();
        for (int qi = 0; qi < queues; qi++) {
            String name = ex.queueName(1, qi);
            Set<String> threads = HandlerRuns.THREADS.get(name);
            assertNotNull(threads, name + " ran no handler");
            assertEquals(Set.of(ex.queueThreads.get(qi).thread().getName()), threads, name);
            used.addAll(threads);
        }
        assertEquals(shared ? 1 : queues, used.size());
        assertTrue(HandlerRuns.wrong().stream().noneMatch(w -> w.startsWith("export " + ex.cfg.id() + " ")), HandlerRuns.wrong()::toString);
    }

    static long seed(int q, int round, int j) {
        return q * 1_000_000L + round * 1000L + j;
    }

    static long sector(int q, int j) {
        return (q * 1024L + j) * (BYTES / 512);
    }

    /** One driver thread: rounds of a batch of writes (one kick), then a batch of reads checking them. */
    static int drive(DriverQueue q, int qi) throws Exception {
        int n = 0;
        for (int round = 0; round < ROUNDS; round++) {
            List<BlkRequest> ws = new ArrayList<>();
            for (int j = 0; j < BATCH; j++) {
                BlkRequest w = BlkRequest.write(sector(qi, j), pattern(BYTES, seed(qi, round, j))).segments(1 + j % 3).indirect(j % 2 == 0);
                q.enqueue(w);
                ws.add(w);
            }
            q.kick();
            q.awaitAll(ws, T);
            List<BlkRequest> rs = new ArrayList<>();
            for (int j = 0; j < BATCH; j++) rs.add(q.submit(BlkRequest.read(sector(qi, j), BYTES).segments(1 + j % 4)));
            q.awaitAll(rs, T);
            for (int j = 0; j < BATCH; j++) {
                assertEquals(BLK_S_OK, ws.get(j).status());
                assertEquals(BLK_S_OK, rs.get(j).status());
                assertArrayEquals(pattern(BYTES, seed(qi, round, j)), rs.get(j).data(), "queue " + qi + " round " + round + " req " + j);
            }
            n += 2 * BATCH;
        }
        assertEquals(q.size(), q.freeDescriptors());
        return n;
    }
}
