package io.jvhost.block;

import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.sys.Libc;
import io.netty.channel.uring.IoUring;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The file driver's aio=io_uring engine on real iothreads, against real files. */
class UringFileTest {
    @TempDir
    Path dir;
    BlockNodes nodes;
    AioContext io;

    @BeforeEach
    void setUp() {
        assumeTrue(IoUring.isAvailable(), "no io_uring here");
        nodes = new BlockNodes();
        io = AioContext.newIoThread("t-uring", true);
        assumeTrue(io.uring() != null, "iothreads forced to epoll");
    }

    @AfterEach
    void tearDown() {
        if (nodes != null) nodes.close();
        if (io != null) io.close();
    }

    private BlockBackend open(Path p, boolean writable, String... extra) throws BlockException {
        String[] all = new String[extra.length + 2];
        all[0] = "aio";
        all[1] = "io_uring";
        System.arraycopy(extra, 0, all, 2, extra.length);
        return new BlockBackend(nodes.add(fileOpts("n" + nodes.all().size(), p, all)), writable);
    }

    private static FileDriver driver(BlockBackend blk) {
        return (FileDriver) blk.root().driver();
    }

    /** Submits on {@code ctx}'s thread and waits for the completion value. */
    private static int on(AioContext ctx, Consumer<BlockCompletion> submit) throws Exception {
        CompletableFuture<Integer> f = new CompletableFuture<>();
        ctx.execute(() -> submit.accept(f::complete));
        return getOrDump(f, TIMEOUT_S, "completion");
    }

    /** Splits [0, len) of a fresh direct buffer into random segments (some are slices inside bigger buffers). */
    private static IoVec randomSegments(Random rnd, int len, int maxSegs) {
        List<ByteBuffer> segs = new ArrayList<>();
        int left = len;
        while (left > 0) {
            int n = segs.size() == maxSegs - 1 ? left : Math.min(left, 1 + rnd.nextInt(Math.max(1, len / 2)));
            int pad = rnd.nextInt(64);
            ByteBuffer b = ByteBuffer.allocateDirect(n + 2 * pad);
            b.position(pad).limit(pad + n);
            segs.add(b);
            left -= n;
        }
        IoVec v = new IoVec(segs.size());
        for (ByteBuffer b : segs) v.add(b);
        return v;
    }

    private static void fill(IoVec v, byte[] src, int from) {
        int k = from;
        for (int i = 0; i < v.count(); i++) {
            ByteBuffer b = v.get(i);
            for (int j = v.start(i); j < v.start(i) + v.length(i); j++) b.put(j, src[k++]);
        }
    }

    private static byte[] collect(IoVec v) {
        byte[] out = new byte[(int) v.size()];
        int k = 0;
        for (int i = 0; i < v.count(); i++) {
            ByteBuffer b = v.get(i);
            for (int j = v.start(i); j < v.start(i) + v.length(i); j++) out[k++] = b.get(j);
        }
        return out;
    }

    @Test
    void randomReadsWritesAndFlushesThroughTheRing() throws Exception {
        int size = 4 << 20;
        Path p = patternFile(dir, "disk.img", size);
        byte[] shadow = Files.readAllBytes(p);
        BlockBackend blk = open(p, true);
        Random rnd = new Random(42);
        for (int it = 0; it < 300; it++) {
            int len = 1 + rnd.nextInt(200_000);
            long off = rnd.nextInt(size - len);
            // Now and then more segments than one SQE's iovec array holds (the request continues in pieces).
            int maxSegs = it % 10 == 0 ? 300 : 6;
            if (maxSegs == 300) len = Math.max(len, 300 * 16);
            off = Math.min(off, size - len);
            long o = off;
            IoVec v = randomSegments(rnd, len, maxSegs);
            if (rnd.nextBoolean()) {
                byte[] data = new byte[len];
                rnd.nextBytes(data);
                fill(v, data, 0);
                int flags = rnd.nextInt(4) == 0 ? BlockBackend.FUA : 0;
                assertEquals(0, on(io, cb -> blk.pwritev(o, v, flags, cb)), "write " + it);
                System.arraycopy(data, 0, shadow, (int) off, len);
            } else {
                assertEquals(0, on(io, cb -> blk.preadv(o, v, cb)), "read " + it);
                byte[] got = collect(v);
                for (int i = 0; i < len; i++) {
                    if (got[i] != shadow[(int) off + i]) fail("read " + it + " byte " + i + " at " + (off + i));
                }
            }
            if (it % 50 == 0) assertEquals(0, on(io, blk::flush));
        }
        assertEquals(0, on(io, blk::flush));
        assertEquals(1, driver(blk).uringEngines(), "requests went through the iothread's ring");
        assertArrayEquals(shadow, Files.readAllBytes(p));
    }

    @Test
    void readPastEofZeroFillsTheRest() throws Exception {
        Path p = patternFile(dir, "short.img", 16384);
        BlockBackend blk = open(p, false, "read-only", "on");
        try (RandomAccessFile raf = new RandomAccessFile(p.toFile(), "rw")) {
            raf.setLength(5000); // shrunk behind the node's back
        }
        ByteBuffer a = ByteBuffer.allocateDirect(3000), b = ByteBuffer.allocateDirect(13384 - 1000);
        for (ByteBuffer x : List.of(a, b)) while (x.hasRemaining()) x.put((byte) 0x77);
        a.clear();
        b.clear();
        IoVec v = iov(a, b);
        assertEquals(0, on(io, cb -> blk.preadv(1000, v, cb)));
        byte[] got = collect(v);
        for (int i = 0; i < got.length; i++) {
            byte want = 1000 + i < 5000 ? pat(1000 + i) : 0;
            assertEquals(want, got[i], "byte " + (1000 + i));
        }
        assertEquals(1, driver(blk).uringEngines());
    }

    @Test
    void ringErrorFailsTheRequestWithItsErrno() throws Exception {
        Path p = patternFile(dir, "err.img", 65536);
        BlockBackend blk = open(p, true);
        int ringFd = driver(blk).ringFd();
        // Put a read-only description under the ring's fd number: writes now fail in the kernel with EBADF.
        int ro = Libc.open(p.toString(), Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        assertTrue(ro >= 0);
        try {
            assertEquals(ringFd, Libc.dup2(ro, ringFd));
        } finally {
            Libc.close(ro);
        }
        ByteBuffer b = ByteBuffer.allocateDirect(4096);
        assertEquals(-Errno.EBADF, on(io, cb -> blk.pwritev(0, iov(b), 0, cb)));
        b.clear();
        assertEquals(0, on(io, cb -> blk.preadv(4096, iov(b), cb)), "reads still work");
        assertEquals(pat(4096), b.get(0));
        blk.root().drain(); // the in-flight count drops just after the callback
        assertEquals(0, blk.root().inFlight());
    }

    @Test
    void drainWaitsUntilEveryRingCompletionRan() throws Exception {
        int n = 1000; // more than the engine's slots: some wait in its queue
        Path p = patternFile(dir, "drain.img", 1 << 20);
        BlockBackend blk = open(p, true);
        BlockDriverState bs = blk.root();
        ByteBuffer mem = ByteBuffer.allocateDirect(n * 4096);
        AtomicInteger completed = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        CountDownLatch submitted = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        io.execute(() -> {
            for (int i = 0; i < n; i++) {
                IoVec v = iov(mem.slice(i * 4096, 4096));
                long off = (long) (i % 256) * 4096;
                BlockCompletion cb = ret -> {
                    if (ret != 0) failed.incrementAndGet();
                    completed.incrementAndGet();
                };
                if (i % 2 == 0) blk.preadv(off, v, cb); else blk.pwritev(off, v, 0, cb);
            }
            submitted.countDown();
            // Hold the loop: no CQE can be reaped until the drain below is waiting.
            try {
                release.await(TIMEOUT_S, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        awaitOrDump(submitted, TIMEOUT_S, "submission");
        assertEquals(n, bs.inFlight());
        CompletableFuture<Integer> drained = new CompletableFuture<>();
        Thread drainer = new Thread(() -> {
            bs.drain();
            drained.complete(completed.get());
        }, "t-drainer");
        drainer.start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (drainer.getState() != Thread.State.WAITING && drainer.getState() != Thread.State.TIMED_WAITING) {
            assertTrue(System.nanoTime() < deadline, "drainer never waited");
            Thread.onSpinWait();
        }
        assertFalse(drained.isDone());
        release.countDown();
        assertEquals(n, getOrDump(drained, TIMEOUT_S, "drain"), "drain returned before every completion ran");
        assertEquals(0, failed.get());
        assertEquals(0, bs.inFlight());
    }

    @Test
    void twoIothreadsShareOneNode() throws Exception {
        int size = 2 << 20;
        Path p = patternFile(dir, "two.img", size);
        BlockBackend blk = open(p, true);
        try (AioContext io2 = AioContext.newIoThread("t-uring2", true)) {
            AioContext[] ctxs = {io, io2};
            List<CompletableFuture<Integer>> fs = new ArrayList<>();
            byte[][] data = new byte[2][size / 2];
            for (int c = 0; c < 2; c++) {
                new Random(c).nextBytes(data[c]);
                int half = c;
                CompletableFuture<Integer> done = new CompletableFuture<>();
                fs.add(done);
                // Each iothread writes its half in 64 concurrent 16 KiB requests.
                ctxs[c].execute(() -> {
                    AtomicInteger left = new AtomicInteger(64);
                    AtomicInteger err = new AtomicInteger();
                    int chunk = size / 2 / 64;
                    for (int i = 0; i < 64; i++) {
                        ByteBuffer b = ByteBuffer.allocateDirect(chunk);
                        b.put(data[half], i * chunk, chunk).flip();
                        blk.pwritev((long) half * size / 2 + (long) i * chunk, iov(b), 0, ret -> {
                            if (ret != 0) err.set(ret);
                            if (left.decrementAndGet() == 0) done.complete(err.get());
                        });
                    }
                });
            }
            for (CompletableFuture<Integer> f : fs) assertEquals(0, getOrDump(f, TIMEOUT_S, "writes"));
            assertEquals(2, driver(blk).uringEngines());
            assertEquals(0, on(io2, blk::flush));
            byte[] file = Files.readAllBytes(p);
            for (int c = 0; c < 2; c++) {
                for (int i = 0; i < size / 2; i++) {
                    if (file[c * size / 2 + i] != data[c][i]) fail("half " + c + " byte " + i);
                }
            }
        }
        // io2's loop is gone: its engine went with it.
        assertEquals(1, driver(blk).uringEngines());
        FileDriver d = driver(blk);
        blk.root().close();
        assertEquals(0, d.uringEngines());
    }

    @Test
    void plainThreadsAndDiscardUseTheThreadPool() throws Exception {
        Path p = patternFile(dir, "plain.img", 65536);
        BlockBackend blk = open(p, true);
        ByteBuffer b = ByteBuffer.allocateDirect(4096);
        assertEquals(0, await(cb -> blk.preadv(0, iov(b), cb)));
        assertEquals(pat(100), b.get(100));
        assertEquals(0, await(cb -> blk.pwriteZeroes(0, 4096, 0, cb)));
        assertEquals(0, driver(blk).uringEngines(), "no iothread submitted");
        // Discard from the iothread also takes the pool; a heap buffer too.
        assertEquals(0, on(io, cb -> blk.pdiscard(8192, 4096, cb)));
        ByteBuffer heap = ByteBuffer.allocate(512);
        assertEquals(0, on(io, cb -> blk.preadv(0, iov(heap), cb)));
        assertEquals(0, heap.get(0));
        assertEquals(0, driver(blk).uringEngines());
    }

    @Test
    void directIoAlignedThroughTheRingUnalignedThroughTheBounce() throws Exception {
        Path p = patternFile(dir, "direct.img", 1 << 20);
        BlockBackend blk;
        try {
            blk = open(p, true, "cache.direct", "on");
        } catch (BlockException e) {
            assumeTrue(false, "no O_DIRECT on this filesystem: " + e.getMessage());
            return;
        }
        ByteBuffer a = alignedDirect(8192);
        for (int i = 0; i < 8192; i++) a.put(i, (byte) (i * 13));
        assertEquals(0, on(io, cb -> blk.pwritev(65536, iov(a), BlockBackend.FUA, cb)));
        assertEquals(1, driver(blk).uringEngines());
        ByteBuffer u = ByteBuffer.allocateDirect(1000);
        for (int i = 0; i < 1000; i++) u.put(i, (byte) 0x42);
        assertEquals(0, on(io, cb -> blk.pwritev(65536 + 100, iov(u), 0, cb)));
        ByteBuffer back = alignedDirect(8192);
        assertEquals(0, on(io, cb -> blk.preadv(65536, iov(back), cb)));
        for (int i = 0; i < 8192; i++) {
            byte want = i >= 100 && i < 1100 ? 0x42 : (byte) (i * 13);
            assertEquals(want, back.get(i), "byte " + i);
        }
    }

    @Test
    void allocationPerRingRequest() throws Exception {
        Path p = patternFile(dir, "alloc.img", 1 << 20);
        BlockBackend blk = open(p, false, "read-only", "on");
        int qd = 32, rounds = 2000;
        ByteBuffer mem = ByteBuffer.allocateDirect(qd * 4096);
        IoVec[] vs = new IoVec[qd];
        for (int i = 0; i < qd; i++) vs[i] = iov(mem.slice(i * 4096, 4096));
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long tid = io.thread().getId();
        // Keeps qd reads in flight from the iothread, reusing one callback per slot.
        class Loop {
            final CompletableFuture<Void> done = new CompletableFuture<>();
            int left;
            final BlockCompletion[] cbs = new BlockCompletion[qd];

            Loop(int total) {
                left = total;
                for (int i = 0; i < qd; i++) {
                    int k = i;
                    cbs[i] = ret -> {
                        if (ret != 0) done.completeExceptionally(new AssertionError("ret " + ret));
                        next(k);
                    };
                }
            }

            void next(int k) {
                if (left == 0) {
                    if (blk.inFlight() <= 1) done.complete(null);
                    return;
                }
                left--;
                blk.preadv((long) (left % 256) * 4096, vs[k], cbs[k]);
            }
        }
        for (int pass = 0; pass < 3; pass++) { // the first passes warm up the JIT
            Loop l = new Loop(qd * rounds);
            long before = io.call(() -> mx.getThreadAllocatedBytes(tid), 10, TimeUnit.SECONDS);
            io.execute(() -> {
                for (int k = 0; k < qd; k++) l.next(k);
            });
            getOrDump(l.done, 60, "reads");
            long after = io.call(() -> mx.getThreadAllocatedBytes(tid), 10, TimeUnit.SECONDS);
            double perReq = (after - before) / (double) (qd * rounds);
            System.out.printf("aio=io_uring QD%d 4 KiB reads, pass %d: %.1f bytes allocated per request on the iothread%n",
                    qd, pass, perReq);
            if (pass == 2) assertTrue(perReq < 1024, perReq + " bytes per request");
        }
    }
}
