package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import io.jvhost.iothread.AioContext;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** Drained sections: quiesce propagation, parking, nesting, remote and nested-poll waits, plugging, sync I/O. */
@Timeout(60)
class DrainTest {
    static final long T = 20;
    @TempDir
    Path dir;
    BlockNodes nodes;
    AioContext io1, io2;

    @BeforeEach
    void setUp() {
        nodes = new BlockNodes();
        io1 = AioContext.newIoThread("drain-io1");
        io2 = AioContext.newIoThread("drain-io2");
    }

    @AfterEach
    void tearDown() {
        nodes.close();
        io1.close();
        io2.close();
    }

    /** A device stand-in that records its drain callbacks. */
    static final class RecordingDevice implements BlockDevOps {
        final List<String> calls = Collections.synchronizedList(new ArrayList<>());
        final List<Thread> threads = Collections.synchronizedList(new ArrayList<>());

        @Override
        public void drainedBegin() {
            calls.add("begin");
            threads.add(Thread.currentThread());
        }

        @Override
        public void drainedEnd() {
            calls.add("end");
            threads.add(Thread.currentThread());
        }
    }

    BlockDriverState nullCo(String name, long latencyNs) throws BlockException {
        return nodes.add(opts("driver", "null-co", "node-name", name, "size", "1M", "latency-ns", Long.toString(latencyNs)));
    }

    @Test
    void drainedBeginWaitsThenParksUntilTheEndInOrder() throws Exception {
        BlockDriverState n = nullCo("n", 150_000_000);
        BlockBackend blk = new BlockBackend(n, true);
        RecordingDevice dev = new RecordingDevice();
        blk.setDevOps(dev);
        AtomicInteger starts = new AtomicInteger();
        n.observer = (bs, op, off, len) -> starts.incrementAndGet();

        // Five requests in flight from an iothread, each completing after 150 ms on that iothread's timer.
        ConcurrentLinkedQueue<String> done = new ConcurrentLinkedQueue<>();
        io1.submit(() -> {
            for (int i = 0; i < 5; i++) {
                int k = i;
                blk.preadv(i * 512L, iov(ByteBuffer.allocate(512)), ret -> done.add("early" + k + "@" + Thread.currentThread().getName()));
            }
            return null;
        }).get(T, TimeUnit.SECONDS);
        assertEquals(5, n.inFlight());

        n.drainedBegin(T, TimeUnit.SECONDS);
        assertEquals(0, n.inFlight());
        assertEquals(0, blk.inFlight());
        assertEquals(5, done.size(), "every request completed before drainedBegin returned");
        for (String s : done) assertTrue(s.endsWith("@" + io1.thread().getName()), s);
        assertEquals(List.of("begin"), dev.calls);
        assertSame(Thread.currentThread(), dev.threads.get(0), "device callbacks run on the draining thread");
        assertTrue(blk.isQuiesced());
        int startsBefore = starts.get();

        // Requests submitted now are parked: not started, not counted.
        List<String> order = Collections.synchronizedList(new ArrayList<>());
        CountDownLatch all = new CountDownLatch(5);
        io1.submit(() -> {
            for (String name : new String[] {"a", "b", "c"}) {
                blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> {
                    order.add(name + (io1.inContextThread() ? "" : "!wrong-thread"));
                    all.countDown();
                });
            }
            return null;
        }).get(T, TimeUnit.SECONDS);
        for (int i = 0; i < 2; i++) blk.flush(ret -> all.countDown()); // from this plain thread
        assertEquals(5, blk.parkedRequests());
        assertEquals(0, n.inFlight());
        assertEquals(0, blk.inFlight());

        // Nested: a second section keeps everything parked when the first one ends.
        n.drainedBegin(T, TimeUnit.SECONDS);
        assertEquals(2, n.quiesceCounter());
        n.drainedEnd();
        assertEquals(5, blk.parkedRequests());
        assertEquals(List.of("begin"), dev.calls, "the device hears about the outermost section only");
        assertEquals(startsBefore, starts.get(), "no request started inside the drained section");

        n.drainedEnd();
        assertEquals(0, n.quiesceCounter());
        assertFalse(blk.isQuiesced());
        assertEquals(List.of("begin", "end"), dev.calls);
        awaitOrDump(all, T, "parked requests");
        assertEquals(List.of("a", "b", "c"), order, "parked requests restart in submission order on their iothread");
        assertEquals(0, blk.parkedRequests());
        n.awaitIdle(T, TimeUnit.SECONDS);
        assertThrows(IllegalStateException.class, n::drainedEnd, "drainedEnd without begin");
    }

    @Test
    void drainingAChildQuiescesItsParentsAndSubtreeDrainCoversChildren() throws Exception {
        BlockDriverState f = nullCo("f", 150_000_000);
        BlockDriverState r = nodes.add(opts("driver", "raw", "node-name", "r", "file", "f"));
        BlockBackend blk = new BlockBackend(r, true);
        CountDownLatch done = new CountDownLatch(8);
        io2.submit(() -> {
            for (int i = 0; i < 8; i++) blk.preadv(0, iov(ByteBuffer.allocate(4096)), ret -> done.countDown());
            return null;
        }).get(T, TimeUnit.SECONDS);
        assertEquals(8, r.inFlight());
        // Draining the leaf waits for the requests that came through the parent, and quiesces the parent chain.
        f.drainedBegin(T, TimeUnit.SECONDS);
        assertEquals(0, done.getCount(), "requests through the parent finished");
        assertEquals(0, r.inFlight());
        assertEquals(0, f.inFlight());
        assertTrue(r.isQuiesced());
        assertTrue(blk.isQuiesced());
        f.drainedEnd();
        assertFalse(r.isQuiesced());
        assertFalse(blk.isQuiesced());

        // A plain drain of the parent leaves the child alone; a subtree drain takes it too.
        r.drainedBegin(T, TimeUnit.SECONDS);
        assertFalse(f.isQuiesced());
        r.drainedEnd();
        r.subtreeDrainedBegin(T, TimeUnit.SECONDS);
        assertTrue(f.isQuiesced());
        assertEquals(2, r.quiesceCounter(), "once for the subtree section, once through its drained child");
        r.subtreeDrainedEnd();
        assertEquals(0, r.quiesceCounter());
        assertEquals(0, f.quiesceCounter());
        assertFalse(blk.isQuiesced());
    }

    @Test
    void drainFromInsideAnIoThreadPollsItsOwnContext() throws Exception {
        // Requests submitted by io1 complete through io1's own bottom halves and timers; a drain issued by a
        // bottom half on io1 can only finish if it runs them itself (nested poll).
        BlockDriverState quick = nullCo("quick", 0);
        BlockDriverState slow = nullCo("slow", 15_000_000);
        BlockBackend bq = new BlockBackend(quick, true), bs = new BlockBackend(slow, true);
        CompletableFuture<String> result = new CompletableFuture<>();
        io1.execute(() -> {
            AtomicInteger completed = new AtomicInteger();
            List<Thread> threads = new ArrayList<>();
            for (int i = 0; i < 10; i++) {
                bq.preadv(0, iov(ByteBuffer.allocate(512)), ret -> {
                    completed.incrementAndGet();
                    threads.add(Thread.currentThread());
                });
                bs.flush(ret -> {
                    completed.incrementAndGet();
                    threads.add(Thread.currentThread());
                });
            }
            try {
                quick.drainedBegin(T, TimeUnit.SECONDS);
                slow.drainedBegin(T, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                result.complete("timed out: " + e.getMessage());
                return;
            }
            String r = completed.get() + " " + quick.inFlight() + " " + slow.inFlight() + " "
                    + threads.stream().allMatch(t -> t == io1.thread());
            quick.drainedEnd();
            slow.drainedEnd();
            result.complete(r);
        });
        assertEquals("20 0 0 true", getOrDump(result, T, "drain from io1"));
    }

    @Test
    void drainFromAnIoThreadAlsoWaitsForOtherIoThreadsRequests() throws Exception {
        BlockDriverState n = nullCo("n", 25_000_000);
        BlockBackend blk = new BlockBackend(n, true);
        CountDownLatch submitted = new CountDownLatch(1);
        AtomicInteger done = new AtomicInteger();
        io2.execute(() -> {
            for (int i = 0; i < 6; i++) blk.flush(ret -> done.incrementAndGet());
            submitted.countDown();
        });
        awaitOrDump(submitted, T, "submission on io2");
        // io1 drains: io2's completions run on io2 and wake io1's poll through the node's progress report.
        String r = io1.call(() -> {
            n.drainedBegin(T, TimeUnit.SECONDS);
            String s = done.get() + " " + n.inFlight();
            n.drainedEnd();
            return s;
        }, T, TimeUnit.SECONDS);
        assertEquals("6 0", r);
    }

    @Test
    void drainFlushesPluggedBatches() throws Exception {
        Path p = patternFile(dir, "plug.img", 1 << 16);
        BlockDriverState f = nodes.add(fileOpts("f", p));
        FileDriver drv = (FileDriver) f.driver();
        BlockBackend blk = new BlockBackend(f, true);

        // Plain plug/unplug: batched until the end of the section.
        CountDownLatch first = new CountDownLatch(3);
        blk.plug();
        blk.plug(); // nests
        for (int i = 0; i < 3; i++) blk.preadv(i * 4096L, iov(ByteBuffer.allocateDirect(4096)), ret -> first.countDown());
        assertEquals(3, drv.batched());
        blk.unplug();
        assertEquals(3, drv.batched(), "still inside the outer section");
        blk.unplug();
        awaitOrDump(first, T, "unplugged requests");
        assertThrows(IllegalStateException.class, blk::unplug);

        // A thread sits inside a plugged section with requests batched: drain must not wait for its unplug.
        CountDownLatch batched = new CountDownLatch(1), release = new CountDownLatch(1), later = new CountDownLatch(1);
        CountDownLatch batchDone = new CountDownLatch(4);
        Thread t = new Thread(() -> {
            blk.plug();
            for (int i = 0; i < 4; i++) blk.preadv(0, iov(ByteBuffer.allocateDirect(4096)), ret -> batchDone.countDown());
            batched.countDown();
            try {
                release.await(T, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                return;
            }
            blk.preadv(0, iov(ByteBuffer.allocateDirect(512)), ret -> later.countDown());
            blk.unplug();
        }, "plugger");
        t.start();
        awaitOrDump(batched, T, "batching");
        assertEquals(4, drv.batched());
        f.drainedBegin(T, TimeUnit.SECONDS); // phase 2 hands the batch over
        assertEquals(0, drv.batched());
        assertEquals(0, batchDone.getCount());
        assertEquals(0, f.inFlight());
        f.drainedEnd();
        release.countDown();
        awaitOrDump(later, T, "request after the drained section");
        t.join(TimeUnit.SECONDS.toMillis(T));
    }

    @Test
    void synchronousRequestsFromTheMainThreadAndFromAnIoThread() throws Exception {
        Path p = patternFile(dir, "sync.img", 1 << 16);
        BlockDriverState f = nodes.add(fileOpts("f", p));
        BlockBackend blk = new BlockBackend(f, true);
        ByteBuffer w = ByteBuffer.allocateDirect(4096);
        for (int i = 0; i < 4096; i++) w.put(i, (byte) (i * 7));
        assertEquals(0, blk.writeSync(8192, w, 0, T, TimeUnit.SECONDS));
        assertEquals(0, f.inFlight(), "returns only when the node has nothing in flight");
        ByteBuffer r = ByteBuffer.allocateDirect(4096);
        assertEquals(0, blk.readSync(8192, r, T, TimeUnit.SECONDS));
        for (int i = 0; i < 4096; i++) assertEquals((byte) (i * 7), r.get(i));
        assertEquals(0, blk.flushSync(T, TimeUnit.SECONDS));
        assertEquals(-Errno.EIO, blk.readSync(1 << 16, r.clear(), T, TimeUnit.SECONDS));

        // From an iothread: the completion is a bottom half of that iothread, so the wait polls it.
        int ret = io1.call(() -> blk.readSync(0, ByteBuffer.allocateDirect(512), T, TimeUnit.SECONDS), T, TimeUnit.SECONDS);
        assertEquals(0, ret);

        // Inside a drained section held by the caller, synchronous I/O is not parked.
        f.drainedBegin(T, TimeUnit.SECONDS);
        assertEquals(0, blk.readSync(0, r.clear(), T, TimeUnit.SECONDS));
        for (int i = 0; i < 4096; i++) assertEquals(pat(i), r.get(i));
        f.drainedEnd();
    }

    @Test
    void replaceRootUnderDrainSendsParkedRequestsToTheNewRoot() throws Exception {
        Path pa = patternFile(dir, "a.img", 1 << 16);
        Path pb = dir.resolve("b.img");
        java.nio.file.Files.write(pb, new byte[1 << 16]); // zeros
        BlockDriverState a = nodes.add(fileOpts("a", pa));
        BlockDriverState b = nodes.add(fileOpts("b", pb));
        BlockBackend blk = new BlockBackend(a, true);
        RecordingDevice dev = new RecordingDevice();
        blk.setDevOps(dev);
        a.drainedBegin(T, TimeUnit.SECONDS);
        ByteBuffer buf = ByteBuffer.allocateDirect(512);
        for (int i = 0; i < 512; i++) buf.put(i, (byte) 0x55);
        CompletableFuture<Integer> parkedRead = new CompletableFuture<>();
        blk.preadv(1024, iov(buf), parkedRead::complete);
        assertEquals(1, blk.parkedRequests());
        blk.replaceRoot(b);
        assertSame(b, blk.root());
        assertEquals(1, b.parentEdges().size());
        assertFalse(a.hasParents());
        // The backend's part of a's drained section went with the edge: it resumed on the new root.
        assertEquals(0, getOrDump(parkedRead, T, "parked read"));
        for (int i = 0; i < 512; i++) assertEquals(0, buf.get(i), "read came from the new root");
        assertEquals(List.of("begin", "end"), dev.calls);
        a.drainedEnd();
        assertEquals(0, a.quiesceCounter());
        assertEquals(0, b.quiesceCounter());
    }

    @Test
    void closingADrainedBackendFailsItsParkedRequests() throws Exception {
        BlockDriverState n = nullCo("n", 0);
        BlockBackend blk = new BlockBackend(n, true);
        n.drainedBegin(T, TimeUnit.SECONDS);
        CompletableFuture<Integer> r = new CompletableFuture<>();
        blk.preadv(0, iov(ByteBuffer.allocate(512)), r::complete);
        assertEquals(1, blk.parkedRequests());
        blk.close();
        assertEquals(-Errno.ENOMEDIUM, getOrDump(r, T, "parked request after close"));
        assertFalse(n.hasParents());
        n.drainedEnd();
    }

    @Test
    void drainThatTimesOutUndoesItsSection() throws Exception {
        Path p = patternFile(dir, "t.img", 4096);
        BlockDriverState f = nodes.add(fileOpts("f", p));
        BlockBackend blk = new BlockBackend(f, true);
        CountDownLatch inCallback = new CountDownLatch(1), release = new CountDownLatch(1);
        blk.preadv(0, iov(ByteBuffer.allocateDirect(512)), ret -> {
            inCallback.countDown();
            try {
                release.await(T, TimeUnit.SECONDS); // the request stays in flight until its callback returns
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        awaitOrDump(inCallback, T, "callback");
        TimeoutException e = assertThrows(TimeoutException.class, () -> f.drainedBegin(100, TimeUnit.MILLISECONDS));
        assertTrue(e.getMessage().contains("'f'"), e.getMessage());
        assertEquals(0, f.quiesceCounter(), "a failed begin leaves nothing to end");
        assertFalse(blk.isQuiesced());
        release.countDown();
        f.drain();
        assertEquals(0, f.inFlight());

        // Drain with the graph lock held is refused rather than risking a deadlock.
        BlockGraph.lock();
        try {
            assertThrows(IllegalStateException.class, f::drainedBegin);
        } finally {
            BlockGraph.unlock();
        }
    }
}
