package io.jvhost.iothread;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

class BhQueueTest {
    /** An element that knows its producer and sequence number. */
    private record Item(int producer, int seq) implements Runnable {
        @Override
        public void run() {}
    }

    @Test
    void fifoThroughRingAndOverflow() {
        BhQueue q = new BhQueue(4);
        List<Runnable> in = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            Runnable r = new Item(0, i);
            in.add(r);
            q.offer(r); // 4 into the ring, 6 into the overflow
        }
        assertFalse(q.isEmpty());
        assertSame(in.get(0), q.poll());
        q.offer(new Item(0, 10)); // the overflow is not empty: it must queue behind it, not in the free slot
        for (int i = 1; i < 10; i++) assertSame(in.get(i), q.poll());
        assertEquals(new Item(0, 10), q.poll());
        assertNull(q.poll());
        assertTrue(q.isEmpty());
    }

    @Test
    void removeTakesAnElementExactlyOnce() {
        BhQueue q = new BhQueue(2);
        Runnable a = new Item(0, 0), b = new Item(0, 1), c = new Item(0, 2);
        q.offer(a);
        q.offer(b);
        q.offer(c); // overflow
        assertTrue(q.remove(b));
        assertFalse(q.remove(b));
        assertTrue(q.remove(c));
        assertSame(a, q.poll());
        assertNull(q.poll()); // the tombstone of b is skipped
        assertTrue(q.isEmpty());
        assertFalse(q.remove(a));
    }

    @Test
    void concurrentProducersKeepTheirOrder() throws Exception {
        BhQueue q = new BhQueue(64); // small: producers also go through the overflow
        int producers = 4, per = 50_000;
        CountDownLatch start = new CountDownLatch(1);
        List<Thread> threads = new ArrayList<>();
        for (int p = 0; p < producers; p++) {
            int id = p;
            Thread t = new Thread(() -> {
                try {
                    start.await();
                } catch (InterruptedException e) {
                    return;
                }
                for (int i = 0; i < per; i++) q.offer(new Item(id, i));
            });
            t.start();
            threads.add(t);
        }
        start.countDown();
        int[] next = new int[producers];
        int got = 0;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (got < producers * per) {
            Item it = (Item) q.poll();
            if (it == null) {
                assertTrue(System.nanoTime() < deadline, "consumer starved: " + got);
                Thread.onSpinWait();
                continue;
            }
            assertEquals(next[it.producer()], it.seq(), "order of producer " + it.producer());
            next[it.producer()]++;
            got++;
        }
        for (Thread t : threads) t.join(10_000);
        assertNull(q.poll());
        assertTrue(q.isEmpty());
    }
}
