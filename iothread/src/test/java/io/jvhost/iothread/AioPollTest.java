package io.jvhost.iothread;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The nested event loop (QEMU's aio_poll) and the context's own bottom-half queue and timers. */
@Timeout(30)
class AioPollTest {
    static final long T = 10;
    AioContext io;

    @BeforeEach
    void setUp() {
        io = AioContext.newIoThread("t-poll");
    }

    @AfterEach
    void tearDown() {
        io.close();
    }

    @Test
    void pollIsRefusedOutsideTheContextThread() throws Exception {
        assertThrows(WrongThreadException.class, () -> io.poll(false));
        try (AioContext other = AioContext.newIoThread("t-other")) {
            Exception e = assertThrows(java.util.concurrent.ExecutionException.class,
                    () -> other.call(() -> io.poll(false), T, TimeUnit.SECONDS));
            assertInstanceOf(WrongThreadException.class, e.getCause());
        }
    }

    @Test
    void nonBlockingPollRunsQueuedBottomHalvesInOrderFromInsideAHandler() throws Exception {
        List<String> order = Collections.synchronizedList(new ArrayList<>());
        CompletableFuture<Boolean[]> polled = new CompletableFuture<>();
        io.execute(() -> {
            order.add("outer-start");
            io.execute(() -> order.add("a"));
            io.execute(() -> order.add("b"));
            boolean first = io.poll(false);   // runs a and b (re-entrantly, inside this bottom half)
            order.add("after-poll");
            boolean second = io.poll(false);  // nothing left
            polled.complete(new Boolean[] {first, second});
        });
        Boolean[] r = polled.get(T, TimeUnit.SECONDS);
        assertTrue(r[0], "first poll made progress");
        assertFalse(r[1], "second poll had nothing to do");
        assertEquals(List.of("outer-start", "a", "b", "after-poll"), order);
    }

    @Test
    void blockingPollWaitsForABottomHalfFromAnotherThread() throws Exception {
        CountDownLatch pollEntered = new CountDownLatch(1);
        CompletableFuture<String> result = new CompletableFuture<>();
        AtomicReference<String> ranOn = new AtomicReference<>();
        io.execute(() -> {
            pollEntered.countDown();
            // Blocks until the BH below is queued by the test thread and run here.
            while (ranOn.get() == null) io.poll(true);
            result.complete(ranOn.get());
        });
        assertTrue(pollEntered.await(T, TimeUnit.SECONDS));
        io.execute(() -> ranOn.set(Thread.currentThread().getName()));
        assertSame(io.thread().getName(), result.get(T, TimeUnit.SECONDS));
    }

    @Test
    void blockingPollRunsDueTimersAndReturnsFalseOnTimeout() throws Exception {
        CompletableFuture<long[]> f = new CompletableFuture<>();
        io.execute(() -> {
            long t0 = System.nanoTime();
            AtomicInteger fired = new AtomicInteger();
            io.newTimer(fired::incrementAndGet).schedule(30, TimeUnit.MILLISECONDS);
            while (fired.get() == 0) io.poll(true); // only the timer can end this wait
            long elapsed = System.nanoTime() - t0;
            long t1 = System.nanoTime();
            boolean progress = io.poll(20, TimeUnit.MILLISECONDS); // nothing pending: times out
            f.complete(new long[] {elapsed, progress ? 1 : 0, System.nanoTime() - t1});
        });
        long[] r = f.get(T, TimeUnit.SECONDS);
        assertTrue(r[0] >= TimeUnit.MILLISECONDS.toNanos(30), "timer fired early: " + r[0]);
        assertEquals(0, r[1]);
        assertTrue(r[2] >= TimeUnit.MILLISECONDS.toNanos(20), "timed poll returned early: " + r[2]);
    }

    @Test
    void wakeupEndsABlockingPollWithoutProgress() throws Exception {
        CountDownLatch entered = new CountDownLatch(1);
        CompletableFuture<Boolean> f = new CompletableFuture<>();
        io.execute(() -> {
            entered.countDown();
            f.complete(io.poll(true));
        });
        assertTrue(entered.await(T, TimeUnit.SECONDS));
        io.wakeup();
        assertFalse(f.get(T, TimeUnit.SECONDS), "woken, nothing ran");
    }

    @Test
    void timersFireInDeadlineOrderOnTheLoopAndCanBeCancelledAndRearmed() throws Exception {
        List<Integer> order = Collections.synchronizedList(new ArrayList<>());
        CountDownLatch done = new CountDownLatch(1);
        AioContext.Timer t3 = io.newTimer(() -> order.add(3));
        AioContext.Timer t1 = io.newTimer(() -> order.add(1));
        AioContext.Timer cancelled = io.newTimer(() -> order.add(99));
        AioContext.Timer last = io.newTimer(() -> {
            order.add(Thread.currentThread() == io.thread() ? 4 : -4);
            done.countDown();
        });
        t3.schedule(60, TimeUnit.MILLISECONDS);
        cancelled.schedule(10, TimeUnit.MILLISECONDS);
        t1.schedule(500, TimeUnit.MILLISECONDS);
        t1.schedule(20, TimeUnit.MILLISECONDS); // re-armed earlier
        last.schedule(100, TimeUnit.MILLISECONDS);
        assertTrue(cancelled.cancel());
        assertFalse(cancelled.cancel());
        assertTrue(t1.isPending());
        assertTrue(done.await(T, TimeUnit.SECONDS));
        assertEquals(List.of(1, 3, 4), order);
        assertFalse(t1.isPending());
    }

    @Test
    void scheduleReturnsACancellableNettyFuture() throws Exception {
        CountDownLatch ran = new CountDownLatch(1);
        AtomicInteger never = new AtomicInteger();
        var f = io.schedule(ran::countDown, 5, TimeUnit.MILLISECONDS);
        var g = io.schedule(never::incrementAndGet, 50, TimeUnit.MILLISECONDS);
        assertTrue(g.cancel(false));
        assertTrue(ran.await(T, TimeUnit.SECONDS));
        f.get(T, TimeUnit.SECONDS);
        assertTrue(f.isSuccess());
        assertTrue(g.isCancelled());
        // A later timer proves the cancelled one's deadline has passed without it running.
        CountDownLatch later = new CountDownLatch(1);
        io.schedule(later::countDown, 80, TimeUnit.MILLISECONDS);
        assertTrue(later.await(T, TimeUnit.SECONDS));
        assertEquals(0, never.get());
    }

    @Test
    void nestedPollFromABottomHalfRunsTheBottomHalfThatIsScheduledAgain() throws Exception {
        // A reusable BH scheduled from inside a poll that it is itself running under: the coalescing flag is
        // cleared before the callback runs, so the inner schedule is not lost.
        AtomicInteger runs = new AtomicInteger();
        CompletableFuture<Integer> f = new CompletableFuture<>();
        BottomHalf[] bh = new BottomHalf[1];
        bh[0] = io.newBottomHalf(() -> {
            int n = runs.incrementAndGet();
            if (n < 5) {
                bh[0].schedule();
                io.poll(false); // re-enters this very callback
            }
            if (n == 1) f.complete(runs.get());
        });
        bh[0].schedule();
        assertEquals(5, f.get(T, TimeUnit.SECONDS));
    }

    @Test
    void executeAfterCloseIsRejected() {
        AioContext c = AioContext.newIoThread("t-closed");
        c.close();
        assertThrows(RejectedExecutionException.class, () -> c.execute(() -> {}));
    }

    @Test
    void manyProducersAllBottomHalvesRunOnceOnTheContextThread() throws Exception {
        int producers = 4, each = 20_000;
        AtomicInteger ran = new AtomicInteger(), wrongThread = new AtomicInteger();
        CountDownLatch all = new CountDownLatch(producers * each);
        List<Thread> ts = new ArrayList<>();
        for (int p = 0; p < producers; p++) {
            Thread t = new Thread(() -> {
                for (int i = 0; i < each; i++) {
                    io.execute(() -> {
                        if (!io.inContextThread()) wrongThread.incrementAndGet();
                        ran.incrementAndGet();
                        all.countDown();
                    });
                }
            });
            ts.add(t);
            t.start();
        }
        // Meanwhile the loop keeps entering nested polls, which share the same queue.
        CountDownLatch nested = new CountDownLatch(200);
        for (int i = 0; i < 200; i++) io.execute(() -> {
            io.poll(false);
            nested.countDown();
        });
        for (Thread t : ts) t.join(TimeUnit.SECONDS.toMillis(T));
        assertTrue(all.await(T, TimeUnit.SECONDS), "left: " + all.getCount());
        assertTrue(nested.await(T, TimeUnit.SECONDS));
        assertEquals(producers * each, ran.get());
        assertEquals(0, wrongThread.get());
    }
}
