package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import io.jvhost.iothread.AioContext;
import java.nio.ByteBuffer;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Throttle groups shared by several nodes and threads, and drain phase 1 (no waiting for the throttle timer). */
@Timeout(60)
class ThrottleTest {
    static final long T = 20;
    BlockNodes nodes;
    AioContext io1, io2;

    @BeforeEach
    void setUp() {
        nodes = new BlockNodes();
        io1 = AioContext.newIoThread("thr-io1");
        io2 = AioContext.newIoThread("thr-io2");
    }

    @AfterEach
    void tearDown() {
        nodes.close();
        io1.close();
        io2.close();
    }

    /** A throttle node named t over its own null-co child. */
    BlockDriverState throttled(String t, String group) throws BlockException {
        nodes.add(opts("driver", "null-co", "node-name", t + "-n", "size", "1M"));
        return nodes.add(opts("driver", "throttle", "node-name", t, "throttle-group", group, "file", t + "-n"));
    }

    /** Keeps {@code depth} reads in flight from ctx until the deadline; records completion times. */
    static void keepBusy(AioContext ctx, BlockBackend blk, int depth, long deadline, ConcurrentLinkedQueue<Long> times,
                         AtomicIntegerArray wrongThread, int idx, CountDownLatch stopped) {
        ctx.execute(() -> {
            int[] active = {0};
            Runnable[] submit = new Runnable[1];
            submit[0] = () -> {
                active[0]++;
                blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> {
                    long now = System.nanoTime();
                    if (!ctx.inContextThread() || ret != 0) wrongThread.incrementAndGet(idx);
                    times.add(now);
                    active[0]--;
                    if (now < deadline) submit[0].run();
                    else if (active[0] == 0) stopped.countDown();
                });
            };
            for (int i = 0; i < depth; i++) submit[0].run();
        });
    }

    @Test
    void twoNodesSharingAGroupStayWithinItsIopsLimit() throws Exception {
        int limit = 200;
        nodes.addThrottleGroup(opts("id", "g", "x-iops-total", Integer.toString(limit)));
        BlockBackend b1 = new BlockBackend(throttled("t1", "g"), true);
        BlockBackend b2 = new BlockBackend(throttled("t2", "g"), true);
        ConcurrentLinkedQueue<Long> t1 = new ConcurrentLinkedQueue<>(), t2 = new ConcurrentLinkedQueue<>();
        AtomicIntegerArray bad = new AtomicIntegerArray(2);
        CountDownLatch stopped = new CountDownLatch(2);
        long start = System.nanoTime();
        long windowStart = start + TimeUnit.MILLISECONDS.toNanos(500); // after the initial burst allowance
        long windowEnd = windowStart + TimeUnit.SECONDS.toNanos(2);
        keepBusy(io1, b1, 8, windowEnd, t1, bad, 0, stopped);
        keepBusy(io2, b2, 8, windowEnd, t2, bad, 1, stopped);
        awaitOrDump(stopped, T, "throttled load");
        long n1 = t1.stream().filter(t -> t >= windowStart && t < windowEnd).count();
        long n2 = t2.stream().filter(t -> t >= windowStart && t < windowEnd).count();
        long total = n1 + n2;
        long expected = 2L * limit;
        System.out.println("iops window: " + n1 + " + " + n2 + " = " + total + " (limit " + expected + ")");
        assertTrue(total <= expected * 115 / 100 + limit / 10 + 2, "together over the limit: " + total + " in 2 s (limit " + limit + "/s)");
        assertTrue(total >= expected * 60 / 100, "far below the limit: " + total + " in 2 s");
        assertTrue(n1 >= total / 4 && n2 >= total / 4, "one node starved: " + n1 + " vs " + n2);
        assertEquals(0, bad.get(0) + bad.get(1), "completions on the wrong thread or failed");
        assertEquals(0, nodes.throttleGroup("g").queuedRequests());
    }

    @Test
    void drainReleasesQueuedRequestsWithoutWaitingForTheTimer() throws Exception {
        ThrottleGroup g = nodes.addThrottleGroup(opts("id", "slow", "x-iops-total", "1"));
        BlockDriverState ta = throttled("ta", "slow"), tb = throttled("tb", "slow");
        BlockBackend a = new BlockBackend(ta, true), b = new BlockBackend(tb, true);
        AtomicIntegerArray completions = new AtomicIntegerArray(40);
        AtomicLong wrong = new AtomicLong();
        CountDownLatch aDone = new CountDownLatch(20), bDone = new CountDownLatch(20);
        for (int k = 0; k < 2; k++) {
            BlockBackend blk = k == 0 ? a : b;
            AioContext ctx = k == 0 ? io1 : io2;
            CountDownLatch done = k == 0 ? aDone : bDone;
            int base = k * 20;
            ctx.submit(() -> {
                for (int i = 0; i < 20; i++) {
                    int id = base + i;
                    blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> {
                        if (completions.incrementAndGet(id) != 1 || ret != 0 || !ctx.inContextThread()) wrong.incrementAndGet();
                        done.countDown();
                    });
                }
                return null;
            }).get(T, TimeUnit.SECONDS);
        }
        // At 1 iops the group lets one request through and queues the other 39 (about 39 s of budget).
        assertEquals(39, g.queuedRequests());

        long t0 = System.nanoTime();
        ta.drainedBegin(T, TimeUnit.SECONDS);
        long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        assertTrue(tookMs < 3000, "drain waited for the throttle timer: " + tookMs + " ms");
        assertEquals(0, aDone.getCount(), "all of ta's requests completed");
        assertEquals(0, ta.inFlight());
        assertEquals(20, g.queuedRequests(), "only the drained node's requests were released");
        assertEquals(20, tb.inFlight(), "queued requests count as in flight");

        // While drained, the node's requests go through at once (but still use up the shared budget).
        tb.drainedBegin(T, TimeUnit.SECONDS);
        assertEquals(0, bDone.getCount());
        assertEquals(0, g.queuedRequests());
        ta.drainedEnd();
        tb.drainedEnd();
        assertEquals(0, wrong.get(), "a request completed twice, failed, or on the wrong thread");
        for (int i = 0; i < 40; i++) assertEquals(1, completions.get(i), "request " + i);

        // After the drained sections throttling is back: the budget is overdrawn, so a new request queues...
        CountDownLatch late = new CountDownLatch(1);
        io1.submit(() -> {
            a.preadv(0, iov(ByteBuffer.allocate(512)), ret -> late.countDown());
            return null;
        }).get(T, TimeUnit.SECONDS);
        assertEquals(1, g.queuedRequests());
        // ...until the next drain lets it out.
        ta.drain();
        awaitOrDump(late, T, "request released by the drain");
    }

    @Test
    void queuedRequestsAreReleasedByTimersInTheirOwnContext() throws Exception {
        nodes.addThrottleGroup(opts("id", "g", "limits.iops-total", "100"));
        BlockBackend b1 = new BlockBackend(throttled("t1", "g"), true);
        BlockBackend b2 = new BlockBackend(throttled("t2", "g"), true);
        CountDownLatch done = new CountDownLatch(60);
        AtomicLong wrong = new AtomicLong();
        for (int k = 0; k < 2; k++) {
            BlockBackend blk = k == 0 ? b1 : b2;
            AioContext ctx = k == 0 ? io1 : io2;
            ctx.execute(() -> {
                for (int i = 0; i < 30; i++) {
                    blk.pwritev(0, iov(ByteBuffer.allocate(512)), 0, ret -> {
                        if (ret != 0 || !ctx.inContextThread()) wrong.incrementAndGet();
                        done.countDown();
                    });
                }
            });
        }
        long t0 = System.nanoTime();
        awaitOrDump(done, T, "throttled requests");
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        // 60 requests at 100/s with a burst of 10: about half a second; certainly not instantaneous.
        assertTrue(ms >= 300, "not throttled: " + ms + " ms");
        assertEquals(0, wrong.get());
    }

    @Test
    void readAndWriteLimitsAreSeparate() throws Exception {
        ThrottleGroup g = nodes.addThrottleGroup(opts("id", "w", "x-iops-write", "1"));
        BlockDriverState t = throttled("t", "w");
        BlockBackend blk = new BlockBackend(t, true);
        CountDownLatch reads = new CountDownLatch(50), writes = new CountDownLatch(3);
        io1.submit(() -> {
            for (int i = 0; i < 3; i++) blk.pwriteZeroes(0, 512, 0, ret -> writes.countDown());
            for (int i = 0; i < 50; i++) blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> reads.countDown());
            return null;
        }).get(T, TimeUnit.SECONDS);
        awaitOrDump(reads, T, "unthrottled reads");
        assertEquals(2, g.queuedRequests(), "writes wait, reads do not");
        t.drain();
        awaitOrDump(writes, T, "writes released by drain");
    }

    /** Submits n reads of blk from ctx (all before returning) and counts their completions on done. */
    static void reads(AioContext ctx, BlockBackend blk, int n, CountDownLatch done, AtomicLong wrong) throws Exception {
        ctx.submit(() -> {
            for (int i = 0; i < n; i++) {
                blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> {
                    if (ret != 0 || !ctx.inContextThread()) wrong.incrementAndGet();
                    done.countDown();
                });
            }
            return null;
        }).get(T, TimeUnit.SECONDS);
    }

    @Test
    void loosenedLimitsReleaseQueuedRequestsAndTightenedOnesQueueTheNext() throws Exception {
        ThrottleGroup g = nodes.addThrottleGroup(opts("id", "g", "x-iops-total", "1"));
        BlockBackend blk = new BlockBackend(throttled("t", "g"), true);
        AtomicLong wrong = new AtomicLong();
        CountDownLatch first = new CountDownLatch(1), queued = new CountDownLatch(3);
        // At 1 iops the first read uses up the budget (about a second of it); the next three wait.
        reads(io1, blk, 1, first, wrong);
        awaitOrDump(first, T, "first read");
        reads(io1, blk, 3, queued, wrong);
        assertEquals(3, g.queuedRequests());

        // Loosened: released at once, not when the old timer (about 1 s away, then 1 s per request) would fire.
        long t0 = System.nanoTime();
        g.updateLimits(java.util.Map.of("iops-total", 10_000L));
        awaitOrDump(queued, T, "requests released by the new limit");
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        assertTrue(ms < 900, "released only by the old timer: " + ms + " ms");
        assertEquals(0, g.queuedRequests());
        assertEquals(10_000L, g.config().toLimits().get("iops-total"));

        // Tightened: the budget used so far is kept. Fill it at 10 000 iops (burst 1000), then tighten to 1:
        // the next request waits.
        CountDownLatch burst = new CountDownLatch(900);
        reads(io1, blk, 900, burst, wrong);
        awaitOrDump(burst, T, "burst within the loose limit");
        g.updateLimits(java.util.Map.of("iops-total", 1L));
        CountDownLatch next = new CountDownLatch(1);
        reads(io1, blk, 1, next, wrong);
        assertEquals(1, g.queuedRequests(), "the tightened limit applies to the next request");
        assertEquals(1, next.getCount());
        // Removing the limit altogether lets it go.
        g.setLimits(ThrottleConfig.of(java.util.Map.of()));
        awaitOrDump(next, T, "request released by removing the limit");
        assertEquals(0, g.queuedRequests());
        assertEquals(0, wrong.get(), "a request failed or completed on the wrong thread");
    }

    @Test
    void limitsChangeForRequestsOfPlainThreadsToo() throws Exception {
        // Submitted outside any AioContext: the pool's timer holds the release; re-arming must cancel it, so
        // no request is released twice when the old timer fires later.
        ThrottleGroup g = nodes.addThrottleGroup(opts("id", "p", "x-iops-read", "2"));
        BlockBackend blk = new BlockBackend(throttled("t", "p"), true);
        AtomicIntegerArray completions = new AtomicIntegerArray(6);
        CountDownLatch done = new CountDownLatch(6);
        for (int i = 0; i < 6; i++) {
            int id = i;
            blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> {
                completions.incrementAndGet(id);
                done.countDown();
            });
        }
        assertTrue(g.queuedRequests() >= 4, "queued: " + g.queuedRequests());
        g.updateLimits(java.util.Map.of("iops-read", 1000L, "iops-read-max", 2000L, "iops-read-max-length", 3L));
        awaitOrDump(done, T, "released by the new limit");
        for (int i = 0; i < 6; i++) assertEquals(1, completions.get(i), "request " + i);
        assertEquals(java.util.Map.of("iops-read", 1000L, "iops-read-max", 2000L, "iops-read-max-length", 3L), g.limits());
    }

    @Test
    void invalidLimitsAreRefusedAndChangeNothing() throws Exception {
        ThrottleGroup g = nodes.addThrottleGroup(opts("id", "v", "x-iops-total", "100", "x-bps-write", "1000"));
        java.util.Map<String, Long> before = g.config().toLimits();
        assertEquals(19, before.size(), "every ThrottleLimits member");
        assertEquals(1L, before.get("iops-total-max-length"));
        String[][] cases = {
                {"iops-total-max", "50", "bps_max/iops_max cannot be lower than bps/iops (iops-total-max)"},
                {"iops-read", "5", "bps/iops/max total values and read/write values cannot be used at the same time"},
                {"bps-read-max", "10", "bps_max/iops_max require corresponding bps/iops values (bps-read-max)"},
                {"iops-total", "1000000000000001", "bps/iops/max values must be within [0, 1000000000000000]"},
                {"bps-write", "-1", "bps/iops/max values must be within [0, 1000000000000000]"},
                {"iops-total-max-length", "0", "the burst length cannot be 0"},
                {"iops-total-max-length", "4294967296", "iops-total-max-length value must be in the range [0, 4294967295]"},
                {"bps-write-max-length", "2", "burst length set without burst rate (bps-write-max-length)"},
                {"iops-size", "-1", "iops-size value must be in the range [0, 9223372036854775807]"},
        };
        for (String[] c : cases) {
            BlockException e = assertThrows(BlockException.class, () -> g.updateLimits(java.util.Map.of(c[0], Long.parseLong(c[1]))), c[0]);
            assertEquals(c[2], e.getMessage(), c[0] + "=" + c[1]);
            assertEquals(before, g.config().toLimits(), "unchanged after " + c[0]);
        }
        // Members not named are kept (QEMU merges into the current configuration).
        g.updateLimits(java.util.Map.of("iops-total-max", 300L));
        assertEquals(java.util.Map.of("iops-total", 100L, "iops-total-max", 300L, "bps-write", 1000L), g.limits());
        // A change from total to read/write limits must be made in one step.
        g.updateLimits(java.util.Map.of("iops-total", 0L, "iops-total-max", 0L, "iops-read", 10L, "iops-write", 20L));
        assertEquals(java.util.Map.of("iops-read", 10L, "iops-write", 20L, "bps-write", 1000L), g.limits());
    }
}
