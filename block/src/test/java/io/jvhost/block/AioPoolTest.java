package io.jvhost.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class AioPoolTest {
    @Test
    void runsEverythingFromManyThreadsOnAtMostMaxWorkers() throws Exception {
        AioPool pool = AioPool.acquire();
        try {
            int producers = 4, per = 20_000;
            CountDownLatch done = new CountDownLatch(producers * per);
            Set<Thread> workers = ConcurrentHashMap.newKeySet();
            AtomicInteger ran = new AtomicInteger();
            Runnable task = () -> {
                workers.add(Thread.currentThread());
                ran.incrementAndGet();
                done.countDown();
            };
            List<Thread> threads = new ArrayList<>();
            for (int p = 0; p < producers; p++) {
                Thread t = new Thread(() -> {
                    for (int i = 0; i < per; i++) pool.execute(task);
                });
                t.start();
                threads.add(t);
            }
            assertTrue(done.await(60, TimeUnit.SECONDS), "ran only " + ran.get());
            for (Thread t : threads) t.join(10_000);
            assertEquals(producers * per, ran.get());
            assertTrue(workers.size() <= AioPool.MAX_WORKERS, workers.size() + " workers");
            assertTrue(workers.stream().allMatch(t -> t.getName().startsWith("jvhost-aio-") && t.isDaemon()));
        } finally {
            pool.release();
        }
    }

    @Test
    void blockedWorkersMakeThePoolGrowAndQueuedWorkRunsAfterRelease() throws Exception {
        AioPool pool = AioPool.acquire();
        CountDownLatch gate = new CountDownLatch(1);
        int n = AioPool.MAX_WORKERS + 5;
        CountDownLatch started = new CountDownLatch(AioPool.MAX_WORKERS), finished = new CountDownLatch(n);
        for (int i = 0; i < n; i++) {
            pool.execute(() -> {
                started.countDown();
                try {
                    gate.await(60, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                finished.countDown();
            });
        }
        // All MAX_WORKERS block at once (the pool grew to its limit); the rest wait in the queue.
        assertTrue(started.await(30, TimeUnit.SECONDS), "workers did not grow to " + AioPool.MAX_WORKERS);
        pool.release(); // last reference: no new work, but the queued work still runs
        assertThrows(RejectedExecutionException.class, () -> pool.execute(() -> {}));
        gate.countDown();
        assertTrue(finished.await(30, TimeUnit.SECONDS), "queued work did not run after shutdown");
    }
}
