package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import io.jvhost.block.job.BlockJob;
import io.jvhost.block.job.JobListener;
import io.jvhost.block.job.JobStatus;
import io.jvhost.block.job.Jobs;
import io.jvhost.block.job.MirrorJob;
import io.jvhost.iothread.AioContext;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The stress test: two iothreads keep requests in flight through a throttle node (group limit well below
 * what they could do, so requests queue) on top of a file node that a mirror job copies to a second file, while
 * the test thread (the "main thread") drains, in 1000+ randomized iterations, the throttle node, the file node,
 * the mirror target, the subtree, or nested combinations. After every drainedBegin: nothing in flight on any
 * quiesced node or backend, and no request starts on a quiesced node until drainedEnd, although the iothreads'
 * timers keep submitting (they get parked). At the end: every request completed exactly once, on its own
 * iothread, never on the draining thread; then the mirror converges and the target equals the source and the
 * written data.
 */
@Timeout(120)
class DrainStressTest {
    static final long T = 20;
    static final int ITERATIONS = 1200;
    static final int BLOCK = 4096;
    static final int LEN = 8 << 20;
    static final int MAX_REQUESTS = 1 << 21;

    @TempDir
    Path dir;
    BlockNodes nodes;
    AioContext io1, io2;
    final List<Submitter> submitters = new ArrayList<>();

    // Shared bookkeeping.
    final AtomicLong nextId = new AtomicLong();
    final AtomicIntegerArray completions = new AtomicIntegerArray(MAX_REQUESTS);
    final AtomicLong completed = new AtomicLong();
    final AtomicLong wrongThread = new AtomicLong();
    final AtomicLong ranOnDrainer = new AtomicLong();
    final AtomicLong failed = new AtomicLong();
    final Semaphore progress = new Semaphore(0);
    final ConcurrentLinkedQueue<String> violations = new ConcurrentLinkedQueue<>();
    volatile boolean inSection;
    volatile Thread drainer;

    @BeforeEach
    void setUp() {
        nodes = new BlockNodes();
        io1 = AioContext.newIoThread("stress-io1");
        io2 = AioContext.newIoThread("stress-io2");
    }

    /** Block-layer state for failure messages. */
    volatile java.util.function.Supplier<String> state = () -> "";

    @AfterEach
    void tearDown() throws Exception {
        try {
            for (Submitter s : submitters) s.halt();
        } catch (AssertionError e) {
            throw new AssertionError(state.get(), e);
        }
        nodes.close();
        io1.close();
        io2.close();
    }

    /**
     * One "virtqueue": keeps up to {@code depth} requests in flight on its iothread (writes to its own blocks, at
     * most one per block, and reads anywhere), resubmitting from completions, and a 1 ms timer that submits too
     * (a guest kick that arrives whenever it likes, drained or not).
     */
    final class Submitter {
        final AioContext ctx;
        final BlockBackend blk;
        final int firstBlock, blocks, depth;
        final int[] version;
        final boolean[] busy;
        final AioContext.Timer kick;
        volatile boolean stop;
        volatile CountDownLatch tickWaiter;
        final CountDownLatch stopped = new CountDownLatch(1);
        int active; // context thread only

        Submitter(AioContext ctx, BlockBackend blk, int firstBlock, int blocks, int depth) {
            this.ctx = ctx;
            this.blk = blk;
            this.firstBlock = firstBlock;
            this.blocks = blocks;
            this.depth = depth;
            this.version = new int[blocks];
            this.busy = new boolean[blocks];
            this.kick = ctx.newTimer(this::onKick);
            submitters.add(this);
        }

        void start() {
            ctx.execute(() -> {
                for (int i = 0; i < depth; i++) next();
                kick.schedule(1, TimeUnit.MILLISECONDS);
            });
        }

        private void onKick() {
            if (stop) return;
            if (active < depth) next();
            CountDownLatch l = tickWaiter;
            if (l != null) l.countDown();
            kick.schedule(1, TimeUnit.MILLISECONDS);
        }

        private void next() {
            if (stop) {
                if (active == 0) stopped.countDown();
                return;
            }
            int id = (int) nextId.getAndIncrement();
            if (id >= MAX_REQUESTS) {
                stop = true;
                if (active == 0) stopped.countDown();
                return;
            }
            ThreadLocalRandom rnd = ThreadLocalRandom.current();
            boolean plug = rnd.nextInt(4) == 0;
            if (plug) blk.plug();
            active++;
            ByteBuffer buf = ByteBuffer.allocateDirect(BLOCK);
            int b = rnd.nextInt(blocks);
            if (rnd.nextBoolean() && !busy[b]) {
                int blockNo = firstBlock + b, v = version[b] + 1;
                busy[b] = true;
                for (int i = 0; i < BLOCK; i += 8) buf.putLong(i, content(blockNo, v, i));
                blk.pwritev((long) blockNo * BLOCK, iov(buf), 0, ret -> {
                    version[b] = v;
                    busy[b] = false;
                    done(id, ret);
                });
            } else {
                long block = rnd.nextInt(LEN / BLOCK);
                blk.preadv(block * BLOCK, iov(buf), ret -> done(id, ret));
            }
            if (plug) blk.unplug();
        }

        private void done(int id, int ret) {
            if (!ctx.inContextThread()) wrongThread.incrementAndGet();
            if (Thread.currentThread() == drainer) ranOnDrainer.incrementAndGet();
            if (ret != 0) failed.incrementAndGet();
            if (completions.incrementAndGet(id) != 1) violations.add("request " + id + " completed twice");
            completed.incrementAndGet();
            progress.release();
            active--;
            next();
        }

        void halt() throws Exception {
            stop = true;
            CountDownLatch s = ctx.submit(() -> {
                kick.cancel();
                if (active == 0) stopped.countDown();
                return stopped;
            }).get(T, TimeUnit.SECONDS);
            awaitOrDump(s, T, "submitter on " + ctx.name() + " to stop");
        }
    }

    static long content(int block, int version, int i) {
        return ((long) block << 40) ^ ((long) version << 20) ^ i ^ 0x5a5a5a5a5a5aL;
    }

    @Test
    void drainLoopWithThrottlingMirrorAndTwoIoThreads() throws Exception {
        drainer = Thread.currentThread();
        assertNull(AioContext.current(), "the draining thread is not an event loop: it can only wait remotely");
        Path fp = patternFile(dir, "f.img", LEN);
        Path gp = dir.resolve("g.img");
        Files.write(gp, new byte[LEN]);
        ThrottleGroup group = nodes.addThrottleGroup(opts("id", "tg", "x-iops-total", "4000"));
        BlockDriverState f = nodes.add(fileOpts("f", fp));
        BlockDriverState g = nodes.add(fileOpts("g", gp));
        BlockDriverState t = nodes.add(opts("driver", "throttle", "node-name", "t", "throttle-group", "tg", "file", "f"));
        BlockBackend blk = new BlockBackend(t, true);
        state = () -> "state: t " + t.inFlight() + " f " + f.inFlight() + " g " + g.inFlight() + " blk " + blk.inFlight()
                + " parked " + blk.parkedRequests() + " throttled " + group.queuedRequests() + " batched "
                + ((FileDriver) f.driver()).batched() + " quiesce t/f/g " + t.quiesceCounter() + "/" + f.quiesceCounter()
                + "/" + g.quiesceCounter() + " active " + submitters.stream().map(x -> x.active).toList();
        List<String> devCalls = Collections.synchronizedList(new ArrayList<>());
        blk.setDevOps(new BlockDevOps() {
            @Override
            public void drainedBegin() {
                devCalls.add("begin");
            }

            @Override
            public void drainedEnd() {
                devCalls.add("end");
            }
        });
        BlockDriverState[] all = {t, f, g};
        for (BlockDriverState n : all) {
            n.observer = (bs, op, off, len) -> {
                // The drainer's own I/O is allowed inside its section; everyone else must not start anything
                // on a quiesced node.
                if (inSection && bs.isQuiesced() && Thread.currentThread() != drainer) {
                    violations.add("request started on quiesced node '" + bs.nodeName() + "' by "
                            + Thread.currentThread().getName());
                }
            };
        }

        Jobs jobs = new Jobs();
        ConcurrentLinkedQueue<Thread> jobThreads = new ConcurrentLinkedQueue<>();
        CountDownLatch ready = new CountDownLatch(1);
        MirrorJob job = MirrorJob.create(jobs, "mirror0", io1, f, g, 64 * 1024, 8, true);
        job.addListener(new JobListener() {
            @Override
            public void statusChanged(BlockJob j, JobStatus s) {
                jobThreads.add(Thread.currentThread());
            }

            @Override
            public void ready(BlockJob j) {
                jobThreads.add(Thread.currentThread());
                ready.countDown();
            }
        });

        int half = LEN / BLOCK / 2;
        Submitter s1 = new Submitter(io1, blk, 0, half, 8), s2 = new Submitter(io2, blk, half, half, 8);
        s1.start();
        s2.start();
        job.start();

        long seed = System.nanoTime();
        Random rnd = new Random(seed);
        int parkedSeen = 0, throttledSeen = 0, jobPausedSeen = 0;
        int[] kinds = new int[5];
        long t0 = System.nanoTime();
        for (int it = 0; it < ITERATIONS; it++) {
            if (group.queuedRequests() > 0) throttledSeen++;
            int kind = rnd.nextInt(5);
            kinds[kind]++;
            List<Runnable> ends = new ArrayList<>();
            String what = "iteration " + it + " (seed " + seed + ", kind " + kind + ")";
            try {
                switch (kind) {
                    case 0 -> begin(t, false, ends);             // the backend's root
                    case 1 -> begin(f, false, ends);             // the leaf: quiesces t and the backend, pauses the job
                    case 2 -> begin(t, true, ends);              // the whole subtree
                    case 3 -> begin(g, false, ends);             // the mirror target: only the job pauses
                    default -> {                                 // nested sections
                        begin(t, false, ends);
                        begin(f, true, ends);
                        if (rnd.nextBoolean()) begin(g, false, ends);
                    }
                }
            } catch (TimeoutException e) {
                fail(what + ": " + e.getMessage() + "\n" + threadDump());
            }
            inSection = true;
            for (BlockDriverState n : all) {
                if (n.isQuiesced() && n.inFlight() != 0) {
                    violations.add(what + ": node '" + n.nodeName() + "' has " + n.inFlight() + " in flight after drainedBegin");
                }
            }
            if (blk.isQuiesced() && blk.inFlight() != 0) violations.add(what + ": backend has " + blk.inFlight() + " in flight");
            if (t.isQuiesced() && group.queuedRequests() != 0) violations.add(what + ": throttled requests still queued");
            if (f.isQuiesced() || g.isQuiesced()) {
                if (job.isBusy()) violations.add(what + ": mirror still busy");
                jobPausedSeen++;
            }
            if (blk.isQuiesced() && rnd.nextInt(3) == 0) {
                // Let a "guest kick" arrive inside the section: its request must be parked, not started.
                Submitter s = rnd.nextBoolean() ? s1 : s2;
                CountDownLatch tick = new CountDownLatch(1);
                s.tickWaiter = tick;
                awaitOrDump(tick, T, what + ": kick timer");
                s.tickWaiter = null;
                if (blk.parkedRequests() == 0) violations.add(what + ": a request submitted while drained was not parked");
                if (blk.inFlight() != 0 || t.inFlight() != 0) violations.add(what + ": a parked request is counted");
            }
            if (blk.isQuiesced() && rnd.nextInt(8) == 0) {
                // The drainer's own synchronous I/O works inside its section (it is not parked).
                assertEquals(0, blk.readSync(rnd.nextInt(LEN / BLOCK) * (long) BLOCK, ByteBuffer.allocateDirect(BLOCK), T, TimeUnit.SECONDS));
            }
            if (blk.parkedRequests() > 0) parkedSeen++;
            inSection = false;
            if (rnd.nextBoolean()) Collections.reverse(ends);
            for (Runnable end : ends) end.run();
            if (!violations.isEmpty()) break;
            // Let some requests run before the next drain (a count of completions, not a time).
            progress.drainPermits();
            int k = 1 + rnd.nextInt(12);
            if (!progress.tryAcquire(k, T, TimeUnit.SECONDS)) fail(what + ": no progress after the drained section\n" + threadDump());
        }
        long loopMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        assertTrue(violations.isEmpty(), violations.stream().limit(20).toList().toString());

        s1.halt();
        s2.halt();
        long submitted = nextId.get();
        System.out.println("stress: " + ITERATIONS + " drains in " + loopMs + " ms, kinds " + java.util.Arrays.toString(kinds)
                + ", " + submitted + " requests, parked in " + parkedSeen + " sections, throttle queue busy at "
                + throttledSeen + " starts, job paused " + jobPausedSeen + " times, seed " + seed);

        // Nothing lost or doubled, everything on its own iothread, nothing on the draining thread.
        assertTrue(submitted < MAX_REQUESTS, "id space exhausted");
        assertEquals(submitted, completed.get(), "requests lost");
        for (int i = 0; i < submitted; i++) {
            if (completions.get(i) != 1) fail("request " + i + " completed " + completions.get(i) + " times");
        }
        assertEquals(0, wrongThread.get(), "completions outside the submitting iothread");
        assertEquals(0, ranOnDrainer.get(), "the draining thread ran iothread completions");
        assertEquals(0, failed.get(), "failed requests");
        assertTrue(parkedSeen > 0, "no request was ever parked: the race was not exercised");
        assertTrue(throttledSeen > 0, "throttling never queued a request");
        assertEquals(0, t.quiesceCounter() + f.quiesceCounter() + g.quiesceCounter());
        assertEquals(0, blk.parkedRequests());
        assertEquals(0, devCalls.size() % 2);

        // The mirror converges once the guest stops, and completes: the throttle node now reads the target.
        awaitOrDump(ready, T, "mirror READY");
        job.complete();
        assertEquals(JobStatus.NULL, getOrDump(job.finished(), T, "mirror completion"));
        assertSame(g, t.children().get(0).bs());
        for (Thread th : jobThreads) assertSame(io1.thread(), th, "job callbacks outside the job's iothread");
        assertFalse(jobThreads.contains(drainer));
        byte[] src = Files.readAllBytes(fp), dst = Files.readAllBytes(gp);
        ByteBuffer d = ByteBuffer.wrap(dst);
        for (Submitter s : submitters) {
            for (int b = 0; b < s.blocks; b++) {
                int blockNo = s.firstBlock + b;
                for (int i = 0; i < BLOCK; i += 8) {
                    long off = (long) blockNo * BLOCK + i;
                    if (s.version[b] == 0) {
                        if (dst[(int) off] != pat(off)) fail("target block " + blockNo + " lost its original data");
                    } else if (d.getLong((int) off) != content(blockNo, s.version[b], i)) {
                        fail("target block " + blockNo + " does not hold version " + s.version[b]);
                    }
                }
            }
        }
        assertArrayEquals(src, dst, "target differs from source");
    }

    /** drainedBegin (bounded) and remember the matching end. */
    void begin(BlockDriverState bs, boolean subtree, List<Runnable> ends) throws TimeoutException {
        if (subtree) {
            bs.subtreeDrainedBegin(10, TimeUnit.SECONDS);
            ends.add(bs::subtreeDrainedEnd);
        } else {
            bs.drainedBegin(10, TimeUnit.SECONDS);
            ends.add(bs::drainedEnd);
        }
    }
}
