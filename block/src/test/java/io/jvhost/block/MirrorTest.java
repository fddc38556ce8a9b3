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
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** blockdev-mirror: copy under guest writes, convergence, completion switching users, cancel, pause. */
@Timeout(60)
class MirrorTest {
    static final long T = 30;
    static final int BLOCK = 4096;
    @TempDir
    Path dir;
    BlockNodes nodes;
    AioContext io1, io2;
    Jobs jobs;

    @BeforeEach
    void setUp() {
        nodes = new BlockNodes();
        io1 = AioContext.newIoThread("mirror-io1");
        io2 = AioContext.newIoThread("mirror-io2");
        jobs = new Jobs();
    }

    @AfterEach
    void tearDown() throws Exception {
        for (Writer w : writers) w.halt(); // contexts cannot close under self-perpetuating work
        nodes.close();
        io1.close();
        io2.close();
    }

    /** Records events; counts down latches on READY and on the end. */
    static final class Events implements JobListener {
        final List<String> log = Collections.synchronizedList(new ArrayList<>());
        final ConcurrentLinkedQueue<Thread> threads = new ConcurrentLinkedQueue<>();
        final CountDownLatch ready = new CountDownLatch(1);
        final CountDownLatch paused = new CountDownLatch(1);
        volatile Runnable onReady = () -> {};

        @Override
        public void statusChanged(BlockJob job, JobStatus status) {
            threads.add(Thread.currentThread());
            log.add(status.qapiName());
            if (status == JobStatus.PAUSED) paused.countDown();
        }

        @Override
        public void ready(BlockJob job) {
            threads.add(Thread.currentThread());
            log.add("READY");
            onReady.run();
            ready.countDown();
        }

        @Override
        public void completed(BlockJob job, String error) {
            threads.add(Thread.currentThread());
            log.add("COMPLETED" + (error == null ? "" : ":" + error));
        }

        @Override
        public void cancelled(BlockJob job) {
            threads.add(Thread.currentThread());
            log.add("CANCELLED");
        }
    }

    final List<Writer> writers = new ArrayList<>();

    /**
     * Guest-like writer on one iothread: random 4 KiB blocks of its own range, at most one write per block in
     * flight, `depth` writes in flight, until a condition (checked on the iothread) says stop; remembers what
     * each block must contain.
     */
    final class Writer {
        final AioContext ctx;
        final BlockBackend blk;
        final int firstBlock, blocks;
        final int[] version;
        final AtomicLong completed = new AtomicLong();
        final AtomicInteger errors = new AtomicInteger();
        volatile boolean stop;
        private final boolean[] busy;
        // Context thread only.
        private int active;
        private java.util.function.BooleanSupplier until = () -> true;
        private CountDownLatch done = new CountDownLatch(0);

        Writer(AioContext ctx, BlockBackend blk, int firstBlock, int blocks) {
            this.ctx = ctx;
            this.blk = blk;
            this.firstBlock = firstBlock;
            this.blocks = blocks;
            this.version = new int[blocks];
            this.busy = new boolean[blocks];
            writers.add(this);
        }

        static byte content(int block, int version, int i) {
            return (byte) (block * 13 + version * 101 + i / 512 + 1);
        }

        /** Writes until {@code stopWhen} is true; the latch opens when the last of its writes completed. */
        CountDownLatch run(int depth, java.util.function.BooleanSupplier stopWhen) throws Exception {
            return ctx.submit(() -> {
                until = stopWhen;
                done = new CountDownLatch(1);
                for (int i = 0; i < depth; i++) next();
                if (active == 0) done.countDown();
                return done;
            }).get(T, TimeUnit.SECONDS);
        }

        CountDownLatch writeMore(int n) throws Exception {
            long target = completed.get() + n;
            return run(4, () -> completed.get() >= target);
        }

        private void next() {
            if (stop || until.getAsBoolean()) {
                if (active == 0) done.countDown();
                return;
            }
            int b;
            do {
                b = ThreadLocalRandom.current().nextInt(blocks);
            } while (busy[b]);
            int blockNo = firstBlock + b, v = version[b] + 1, idx = b;
            busy[b] = true;
            active++;
            ByteBuffer buf = ByteBuffer.allocateDirect(BLOCK);
            for (int i = 0; i < BLOCK; i++) buf.put(i, content(blockNo, v, i));
            blk.pwritev((long) blockNo * BLOCK, iov(buf), 0, ret -> {
                if (ret != 0 || !ctx.inContextThread()) errors.incrementAndGet();
                version[idx] = v;
                busy[idx] = false;
                active--;
                completed.incrementAndGet();
                next();
            });
        }

        /** Stops writing and waits for the writes in flight (teardown). */
        void halt() throws Exception {
            stop = true;
            CountDownLatch d = ctx.submit(() -> {
                if (active == 0) done.countDown();
                return done;
            }).get(T, TimeUnit.SECONDS);
            awaitOrDump(d, T, "writer on " + ctx.name() + " to stop");
        }

        /** Checks the image bytes of this writer's blocks against what it wrote (version 0: the pattern). */
        void verify(byte[] image, String what) {
            for (int b = 0; b < blocks; b++) {
                int blockNo = firstBlock + b;
                for (int i = 0; i < BLOCK; i++) {
                    long off = (long) blockNo * BLOCK + i;
                    byte want = version[b] == 0 ? pat(off) : content(blockNo, version[b], i);
                    if (image[(int) off] != want) fail(what + ": block " + blockNo + " byte " + i + " (version " + version[b] + ")");
                }
            }
        }
    }

    Path zeros(String name, int len) throws Exception {
        Path p = dir.resolve(name);
        Files.write(p, new byte[len]);
        return p;
    }

    @Test
    void mirrorCopiesWhileTheGuestWritesThenSwitchesTheBackend() throws Exception {
        int len = 16 << 20;
        Path sp = patternFile(dir, "src.img", len);
        Path tp = zeros("tgt.img", len);
        BlockDriverState s = nodes.add(fileOpts("s", sp));
        BlockDriverState g = nodes.add(fileOpts("g", tp));
        BlockBackend blk = new BlockBackend(s, true);
        int blocks = len / BLOCK;
        Writer w1 = new Writer(io1, blk, 0, blocks / 2), w2 = new Writer(io2, blk, blocks / 2, blocks / 2);

        Events ev = new Events();
        AtomicLong writesBeforeReady = new AtomicLong(-1);
        AtomicInteger drainsFromCallback = new AtomicInteger();
        ev.onReady = () -> {
            writesBeforeReady.set(w1.completed.get() + w2.completed.get());
            // A drain from inside the job's own callback (its loop is on the stack): must not deadlock.
            s.drain();
            drainsFromCallback.incrementAndGet();
        };
        MirrorJob job = MirrorJob.create(jobs, "m0", io1, s, g, 64 * 1024, 4, true);
        job.addListener(ev);
        assertEquals(JobStatus.CREATED, job.status());
        assertThrows(IllegalStateException.class, job::complete, "not ready yet");
        assertSame(job, jobs.get("m0"));
        // The guest writes until the job has copied half the disk's worth, so writes and copies overlap.
        java.util.function.BooleanSupplier halfCopied = () -> job.progressCurrent() >= len / 2;
        CountDownLatch d1 = w1.run(4, halfCopied), d2 = w2.run(4, halfCopied);
        long t0 = System.nanoTime();
        job.start();
        awaitOrDump(d1, T, "writes on io1 during the copy");
        awaitOrDump(d2, T, "writes on io2 during the copy");
        long duringCopy = w1.completed.get() + w2.completed.get();
        assertTrue(duringCopy > 0);

        awaitOrDump(ev.ready, T, "mirror READY");
        System.out.println("READY after " + (System.nanoTime() - t0) / 1_000_000 + " ms, writes " + writesBeforeReady.get());
        assertEquals(1, drainsFromCallback.get());
        assertTrue(writesBeforeReady.get() >= duringCopy);
        // More writes after READY: they dirty the source again and must reach the target too.
        d1 = w1.writeMore(150);
        d2 = w2.writeMore(150);
        awaitOrDump(d1, T, "writes after READY on io1");
        awaitOrDump(d2, T, "writes after READY on io2");
        assertEquals(0, w1.errors.get() + w2.errors.get());

        long t1 = System.nanoTime();
        job.complete();
        assertEquals(JobStatus.NULL, getOrDump(job.finished(), T, "mirror completion"));
        System.out.println("completed after " + (System.nanoTime() - t1) / 1_000_000 + " ms");
        assertSame(g, blk.root(), "the backend uses the target");
        assertFalse(s.hasParents(), "nothing uses the source any more");
        assertEquals(0, s.quiesceCounter());
        assertEquals(0, g.quiesceCounter());
        assertNull(jobs.get("m0"), "auto-dismissed");
        assertTrue(job.progressCurrent() >= len);
        assertEquals(job.progressCurrent(), job.progressTotal());
        // Status changes without pause flips (drains pause the job briefly), consecutive repeats collapsed.
        List<String> seq = new ArrayList<>();
        for (String e : ev.log) {
            if (e.equals("paused") || e.equals("standby")) continue;
            if (seq.isEmpty() || !seq.get(seq.size() - 1).equals(e)) seq.add(e);
        }
        assertEquals(List.of("running", "ready", "READY", "waiting", "pending", "concluded", "COMPLETED", "null"), seq);
        for (Thread t : ev.threads) assertSame(io1.thread(), t, "job events run in the job's context");

        byte[] source = Files.readAllBytes(sp), target = Files.readAllBytes(tp);
        w1.verify(target, "target");
        w2.verify(target, "target");
        assertArrayEquals(source, target, "target differs from source");

        // After the switch, guest I/O goes to the target only.
        ByteBuffer after = ByteBuffer.allocateDirect(BLOCK);
        for (int i = 0; i < BLOCK; i++) after.put(i, (byte) 0xee);
        assertEquals(0, blk.writeSync(0, after, 0, T, TimeUnit.SECONDS));
        assertEquals((byte) 0xee, Files.readAllBytes(tp)[0]);
        assertNotEquals((byte) 0xee, Files.readAllBytes(sp)[0]);
    }

    @Test
    void mirrorBelowAThrottleFilterReplacesTheFiltersChild() throws Exception {
        int len = 2 << 20;
        Path sp = patternFile(dir, "s.img", len);
        Path tp = zeros("t.img", len);
        nodes.addThrottleGroup(opts("id", "g", "x-iops-total", "5000"));
        BlockDriverState s = nodes.add(fileOpts("s", sp));
        BlockDriverState g = nodes.add(fileOpts("g", tp));
        BlockDriverState t = nodes.add(opts("driver", "throttle", "node-name", "t", "throttle-group", "g", "file", "s"));
        BlockBackend blk = new BlockBackend(t, true);
        Writer w = new Writer(io2, blk, 0, len / BLOCK);
        Events ev = new Events();
        MirrorJob job = MirrorJob.create(jobs, "m1", io1, s, g, 64 * 1024, 8, false);
        job.addListener(ev);
        CountDownLatch writes = w.run(2, () -> job.progressCurrent() >= len / 2);
        job.start();
        awaitOrDump(writes, T, "writes during the copy");
        awaitOrDump(ev.ready, T, "READY");
        awaitOrDump(w.writeMore(100), T, "writes after READY");
        job.complete();
        assertEquals(JobStatus.CONCLUDED, getOrDump(job.finished(), T, "completion"));
        assertSame(t, blk.root(), "the backend keeps its root");
        assertSame(g, t.children().get(0).bs(), "the filter now reads the target");
        assertSame(job, jobs.get("m1"), "not dismissed automatically");
        job.dismiss();
        assertEquals(JobStatus.NULL, getOrDump(job.finished().thenCompose(x -> {
            java.util.concurrent.CompletableFuture<JobStatus> f = new java.util.concurrent.CompletableFuture<>();
            io1.execute(() -> f.complete(job.status()));
            return f;
        }), T, "dismiss"));
        assertNull(jobs.get("m1"));
        byte[] target = Files.readAllBytes(tp);
        w.verify(target, "target");
        assertArrayEquals(Files.readAllBytes(sp), target);
    }

    @Test
    void cancelLeavesTheSourceInPlaceAndPausePausesAtASafePoint() throws Exception {
        int len = 8 << 20;
        BlockDriverState s = nodes.add(fileOpts("s", patternFile(dir, "s.img", len)));
        BlockDriverState g = nodes.add(fileOpts("g", zeros("t.img", len)));
        BlockBackend blk = new BlockBackend(s, true);
        Events ev = new Events();
        // One copy at a time, small chunks: the job is still copying when paused.
        MirrorJob job = MirrorJob.create(jobs, "m2", io1, s, g, 4096, 1, true);
        job.addListener(ev);
        job.pause();
        job.start();
        awaitOrDump(ev.paused, T, "PAUSED");
        assertEquals(JobStatus.PAUSED, job.status());
        assertTrue(job.isUserPaused());
        long copied = job.progressCurrent();
        assertFalse(job.isBusy(), "paused at a safe point: no copy in progress");
        assertEquals(0, s.inFlight());
        assertEquals(copied, job.progressCurrent(), "no progress while paused");
        job.resume();
        // A drained section pauses it as well (and waits for its copy in progress).
        s.drainedBegin(T, TimeUnit.SECONDS);
        assertFalse(job.isBusy());
        assertEquals(0, s.inFlight());
        // The copy's target write has completed (its callback ran: the job is not busy); the target's counter
        // drops just after that callback, on the job's thread, so look at it through a drain of its own.
        g.drainedBegin(T, TimeUnit.SECONDS);
        assertEquals(0, g.inFlight());
        g.drainedEnd();
        job.cancel();
        s.drainedEnd();
        assertEquals(JobStatus.NULL, getOrDump(job.finished(), T, "cancel"));
        assertTrue(ev.log.contains("CANCELLED"), ev.log.toString());
        assertFalse(ev.log.contains("COMPLETED"), ev.log.toString());
        assertSame(s, blk.root());
        assertEquals(1, s.parentEdges().size(), "only the backend uses the source");
        assertFalse(g.hasParents());
        assertTrue(job.remainingDirtyBytes() > 0, "cancelled before it could converge");
    }

    @Test
    void creationIsValidated() throws Exception {
        BlockDriverState a = nodes.add(opts("driver", "null-co", "node-name", "a", "size", "1M"));
        BlockDriverState b = nodes.add(opts("driver", "null-co", "node-name", "b", "size", "2M"));
        BlockDriverState ro = nodes.add(opts("driver", "null-co", "node-name", "ro", "size", "1M", "read-only", "on"));
        BlockDriverState c = nodes.add(opts("driver", "null-co", "node-name", "c", "size", "1M"));
        assertThrows(IllegalArgumentException.class, () -> MirrorJob.create(jobs, "j", io1, a, a));
        assertThrows(IllegalArgumentException.class, () -> MirrorJob.create(jobs, "j", io1, a, b));
        assertThrows(IllegalArgumentException.class, () -> MirrorJob.create(jobs, "j", io1, a, ro));
        assertThrows(IllegalArgumentException.class, () -> MirrorJob.create(jobs, "j", io1, a, c, 1000, 4, true));
        assertThrows(IllegalArgumentException.class, () -> MirrorJob.create(jobs, "1j", io1, a, c));
        MirrorJob j = MirrorJob.create(jobs, "j", io1, a, c);
        assertThrows(IllegalArgumentException.class, () -> MirrorJob.create(jobs, "j", io1, a, c), "duplicate id");
        assertEquals(List.of(j), jobs.list());
        assertEquals(2, a.parentEdges().size() + c.parentEdges().size());
        j.cancel(); // never started: CREATED -> ABORTING -> CONCLUDED -> NULL
        assertEquals(JobStatus.NULL, getOrDump(j.finished(), T, "cancel of a created job"));
        assertTrue(jobs.list().isEmpty());
        assertFalse(a.hasParents());
        assertFalse(c.hasParents());
    }
}
