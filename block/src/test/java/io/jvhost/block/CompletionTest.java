package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import io.jvhost.iothread.AioContext;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Where completions run, that they never run inline, and the in-flight counter around them. */
class CompletionTest {
    @TempDir
    Path dir;
    BlockNodes nodes;
    AioContext io1, io2;

    @BeforeEach
    void setUp() {
        nodes = new BlockNodes();
        io1 = AioContext.newIoThread("test-io1");
        io2 = AioContext.newIoThread("test-io2");
    }

    @AfterEach
    void tearDown() {
        nodes.close();
        io1.close();
        io2.close();
    }

    /** What a completion saw. */
    record Seen(int ret, AioContext ctx, Thread thread, boolean inline, long inFlight) {}

    /** Submits from inside ctx and reports where and how the completion ran. */
    Seen submitOn(AioContext ctx, BlockDriverState bs, java.util.function.Consumer<BlockCompletion> submit) throws Exception {
        CompletableFuture<Seen> seen = new CompletableFuture<>();
        ctx.submit(() -> {
            boolean[] submitting = {true};
            submit.accept(ret -> seen.complete(new Seen(ret, AioContext.current(), Thread.currentThread(), submitting[0], bs.inFlight())));
            submitting[0] = false;
            return null;
        }).get(TIMEOUT_S, TimeUnit.SECONDS);
        return seen.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    @Test
    void fileCompletionsRunOnTheSubmittingIoThreadNeverInline() throws Exception {
        Path p = patternFile(dir, "ctx.img", 65536);
        BlockBackend blk = new BlockBackend(nodes.add(fileOpts("f", p)), true);
        BlockDriverState bs = blk.root();
        ByteBuffer b = ByteBuffer.allocateDirect(4096);
        for (AioContext ctx : new AioContext[] {io1, io2}) {
            for (Seen s : new Seen[] {
                    submitOn(ctx, bs, cb -> blk.preadv(4096, iov(b), cb)),
                    submitOn(ctx, bs, cb -> blk.pwritev(4096, iov(b), 0, cb)),
                    submitOn(ctx, bs, blk::flush),
                    submitOn(ctx, bs, cb -> blk.pwriteZeroes(0, 512, 0, cb)),
                    submitOn(ctx, bs, cb -> blk.pdiscard(0, 512, cb)),
                    // errors decided before the driver is reached are deferred the same way
                    submitOn(ctx, bs, cb -> blk.preadv(1 << 20, iov(b), cb)),
                    submitOn(ctx, bs, cb -> new BlockBackend(bs, false).pwritev(0, iov(b), 0, cb)),
            }) {
                assertSame(ctx, s.ctx());
                assertSame(ctx.thread(), s.thread());
                assertFalse(s.inline(), "completion ran inside the submitting call");
                assertEquals(1, s.inFlight(), "request must still count while its callback runs");
            }
        }
        bs.awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
        assertEquals(0, bs.inFlight());
    }

    @Test
    void nullCoCompletionsAreDeferredToo() throws Exception {
        BlockDriverState bs = nodes.add(Map.of("driver", "null-co", "node-name", "nul", "size", "1M"));
        BlockBackend blk = new BlockBackend(bs, true);
        Seen s = submitOn(io1, bs, cb -> blk.preadv(0, iov(ByteBuffer.allocate(512)), cb));
        assertEquals(0, s.ret());
        assertSame(io1, s.ctx());
        assertFalse(s.inline());

        // A plain submitting thread: the completion runs on another (worker) thread, never inside preadv.
        Thread me = Thread.currentThread();
        boolean[] submitting = {true};
        CompletableFuture<Seen> f = new CompletableFuture<>();
        blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> f.complete(
                new Seen(ret, AioContext.current(), Thread.currentThread(), submitting[0], bs.inFlight())));
        submitting[0] = false;
        Seen plain = f.get(TIMEOUT_S, TimeUnit.SECONDS);
        assertNotSame(me, plain.thread());
        assertNull(plain.ctx());
        assertEquals(1, plain.inFlight());
    }

    @Test
    void plainThreadFileCompletionRunsInWorker() throws Exception {
        Path p = patternFile(dir, "plain.img", 8192);
        BlockBackend blk = new BlockBackend(nodes.add(fileOpts("f", p)), true);
        CompletableFuture<Thread> t = new CompletableFuture<>();
        blk.preadv(0, iov(ByteBuffer.allocateDirect(512)), ret -> t.complete(Thread.currentThread()));
        Thread worker = t.get(TIMEOUT_S, TimeUnit.SECONDS);
        assertNotSame(Thread.currentThread(), worker);
        assertTrue(worker.getName().startsWith("jvhost-aio-"), worker.getName());
        assertTrue(worker.isDaemon());
    }

    @Test
    void inFlightDropsOnlyAfterTheCallbackReturned() throws Exception {
        Path p = patternFile(dir, "inflight.img", 8192);
        BlockDriverState bs = nodes.add(fileOpts("f", p));
        BlockBackend blk = new BlockBackend(bs, true);
        CountDownLatch entered = new CountDownLatch(1), release = new CountDownLatch(1);
        AtomicLong seenInside = new AtomicLong(-1);
        io1.execute(() -> blk.preadv(0, iov(ByteBuffer.allocateDirect(4096)), ret -> {
            seenInside.set(bs.inFlight());
            entered.countDown();
            try {
                release.await(TIMEOUT_S, TimeUnit.SECONDS); // hold the callback open
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        assertTrue(entered.await(TIMEOUT_S, TimeUnit.SECONDS));
        assertEquals(1, seenInside.get());
        assertEquals(1, bs.inFlight(), "the I/O is done but the callback has not returned");
        assertThrows(TimeoutException.class, () -> bs.awaitIdle(50, TimeUnit.MILLISECONDS));
        release.countDown();
        bs.awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
        assertEquals(0, bs.inFlight());
    }

    @Test
    void callbackThatThrowsStillCompletesAccounting() throws Exception {
        BlockDriverState bs = nodes.add(Map.of("driver", "null-co", "node-name", "n", "size", "4096"));
        BlockBackend blk = new BlockBackend(bs, true);
        CountDownLatch ran = new CountDownLatch(1);
        io1.execute(() -> blk.flush(ret -> {
            ran.countDown();
            throw new IllegalStateException("callback bug (expected by the test)");
        }));
        assertTrue(ran.await(TIMEOUT_S, TimeUnit.SECONDS));
        bs.awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
        assertEquals(0, bs.inFlight());
    }

    @Test
    void manyConcurrentRequestsFromTwoIoThreads() throws Exception {
        int perThread = 400, block = 4096;
        Path p = patternFile(dir, "conc.img", 2 * perThread * block);
        BlockDriverState bs = nodes.add(fileOpts("f", p));
        BlockBackend blk = new BlockBackend(bs, true);
        ConcurrentLinkedQueue<String> problems = new ConcurrentLinkedQueue<>();
        AtomicInteger left = new AtomicInteger(2 * perThread);
        CountDownLatch done = new CountDownLatch(1);
        AioContext[] ctxs = {io1, io2};
        long maxInFlight[] = {0};
        for (int t = 0; t < 2; t++) {
            AioContext ctx = ctxs[t];
            int base = t * perThread;
            // All writes submitted in one go from the loop; each completion reads its block back.
            ctx.execute(() -> {
                for (int i = 0; i < perThread; i++) {
                    int blockNo = base + i;
                    ByteBuffer w = ByteBuffer.allocateDirect(block);
                    for (int k = 0; k < block; k += 4) w.putInt(k, blockNo * 7919 + k);
                    blk.pwritev((long) blockNo * block, iov(w), 0, ret -> {
                        if (AioContext.current() != ctx) problems.add("write completion on " + Thread.currentThread().getName());
                        if (ret != 0) problems.add("write " + blockNo + " -> " + ret);
                        ByteBuffer r = ByteBuffer.allocateDirect(block);
                        blk.preadv((long) blockNo * block, iov(r), ret2 -> {
                            if (AioContext.current() != ctx) problems.add("read completion on " + Thread.currentThread().getName());
                            if (ret2 != 0) problems.add("read " + blockNo + " -> " + ret2);
                            for (int k = 0; k < block; k += 4) {
                                if (r.getInt(k) != blockNo * 7919 + k) {
                                    problems.add("block " + blockNo + " offset " + k);
                                    break;
                                }
                            }
                            if (left.decrementAndGet() == 0) done.countDown();
                        });
                    });
                }
                synchronized (maxInFlight) {
                    maxInFlight[0] = Math.max(maxInFlight[0], bs.inFlight());
                }
            });
        }
        assertTrue(done.await(60, TimeUnit.SECONDS), "requests left: " + left.get());
        assertTrue(problems.isEmpty(), problems.toString());
        bs.awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
        assertEquals(0, bs.inFlight());
        assertTrue(maxInFlight[0] > 1, "requests were not concurrent");
        byte[] file = Files.readAllBytes(p);
        ByteBuffer fb = ByteBuffer.wrap(file);
        for (int blockNo = 0; blockNo < 2 * perThread; blockNo++) {
            for (int k = 0; k < block; k += 4) {
                assertEquals(blockNo * 7919 + k, fb.getInt(blockNo * block + k));
            }
        }
    }
}
