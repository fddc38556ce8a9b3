package io.jvhost.vhostuser;

import io.jvhost.block.BlockBackend;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockNodes;
import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.sys.EventFd;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.stream.Stream;

/**
 * An in-process export under test: a real block node (a sparse image file or null-co), a real main loop and
 * real iothreads, and a {@link VhostUserBlkExport} listening on a real unix socket in a temp directory. Front-ends
 * are the test fixture ({@link VhostUserFrontend}) connecting to that socket.
 */
final class TestExport implements AutoCloseable {
    static final long IMAGE_SIZE = 64L << 20;
    static final Duration T = Duration.ofSeconds(10);
    private static final java.util.concurrent.atomic.AtomicInteger EXPORT_SEQ = new java.util.concurrent.atomic.AtomicInteger();

    static {
        HandlerRuns.install();
    }

    final Path dir;
    final Path socket;
    final Path image; // null for null-co
    final BlockNodes nodes;
    final BlockDriverState node;
    final BlockBackend blk;
    final AioContext mainLoop;
    final List<AioContext> iothreads;  // distinct loops
    final List<AioContext> queueThreads; // per queue (may repeat)
    final BlkExportConfig cfg;
    final VhostUserBlkExport export;
    private final List<AutoCloseable> extras = new ArrayList<>();
    private AioContext watchLoop; // test-side loop for eventfds the test watches itself

    static Builder builder(Path dir) {
        return new Builder(dir);
    }

    static final class Builder {
        private final Path dir;
        private int numQueues = 1;
        private boolean sharedIothread;
        private int lbs = 512;
        private boolean writable = true;
        private String serial;
        private boolean writethrough;
        private Map<String, String> nullCo; // null: file image
        private long imageSize = IMAGE_SIZE;
        private String aio; // null: the driver's default (threads)

        private Long pollMaxNs;

        private Builder(Path dir) {
            this.dir = dir;
        }

        Builder numQueues(int n) { this.numQueues = n; return this; }
        /** Maps every queue onto one iothread instead of one iothread per queue. */
        Builder sharedIothread(boolean on) { this.sharedIothread = on; return this; }
        Builder logicalBlockSize(int n) { this.lbs = n; return this; }
        Builder writable(boolean on) { this.writable = on; return this; }
        Builder serial(String s) { this.serial = s; return this; }
        Builder writethrough(boolean on) { this.writethrough = on; return this; }
        Builder imageSize(long n) { this.imageSize = n; return this; }
        /** poll-max-ns of the iothreads (default: AioContext's, QEMU's 32768); 0 turns adaptive polling off. */
        Builder pollMaxNs(long ns) { this.pollMaxNs = ns; return this; }
        /** The file node's aio= option (threads, io_uring). */
        Builder aio(String mode) { this.aio = mode; return this; }

        /** A null-co node instead of an image file: reads zeroes, completes after {@code latencyNs}. */
        Builder nullCo(long size, long latencyNs) {
            this.nullCo = Map.of("size", Long.toString(size), "read-zeroes", "on", "latency-ns", Long.toString(latencyNs));
            return this;
        }

        TestExport start() throws Exception {
            return new TestExport(this);
        }
    }

    private TestExport(Builder b) throws Exception {
        this.dir = b.dir;
        this.socket = b.dir.resolve("vhost-" + System.nanoTime() + ".sock");
        this.nodes = new BlockNodes();
        AioContext main = null;
        List<AioContext> threads = new ArrayList<>();
        try {
            Map<String, String> opts = new HashMap<>();
            if (b.nullCo != null) {
                image = null;
                opts.putAll(b.nullCo);
                opts.put("driver", "null-co");
            } else {
                image = b.dir.resolve("disk-" + System.nanoTime() + ".img");
                try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
                    f.setLength(b.imageSize);
                }
                opts.put("driver", "file");
                opts.put("filename", image.toString());
                if (!b.writable) opts.put("read-only", "on");
                if (b.aio != null) opts.put("aio", b.aio);
            }
            opts.put("node-name", "d");
            node = nodes.add(opts);
            blk = new BlockBackend(node, b.writable);
            main = AioContext.newMainLoop("t-main");
            List<AioContext> perQueue = new ArrayList<>();
            for (int i = 0; i < b.numQueues; i++) {
                if (b.sharedIothread && i > 0) {
                    perQueue.add(threads.get(0));
                } else {
                    AioContext t = AioContext.newIoThread("t-io" + i, "io_uring".equals(b.aio));
                    if (b.pollMaxNs != null) t.setPollParams(b.pollMaxNs, 0, 0);
                    threads.add(t);
                    perQueue.add(t);
                }
            }
            this.mainLoop = main;
            this.iothreads = List.copyOf(threads);
            this.queueThreads = List.copyOf(perQueue);
            // A JVM-wide unique export id makes queue names ("export eN conn#M vqK") unique across tests.
            this.cfg = new BlkExportConfig("e" + EXPORT_SEQ.incrementAndGet(), socket.toString(), -1, b.numQueues, b.lbs, b.writable, b.serial, b.writethrough);
            this.export = new VhostUserBlkExport(cfg, blk, main, queueThreads);
            export.start();
        } catch (Exception | Error e) {
            if (main != null) main.close();
            threads.forEach(AioContext::close);
            nodes.close();
            throw e;
        }
    }

    /** Name BlkDevice gives queue {@code q} of front-end connection number {@code conn} (1-based). */
    String queueName(int conn, int q) {
        return "export " + cfg.id() + " conn#" + conn + " vq" + q;
    }

    /** A connected (not yet negotiated) front-end for {@code mem}; closed with the export. */
    VhostUserFrontend connect(GuestMemory mem) throws IOException {
        VhostUserFrontend fe = VhostUserFrontend.connect(socket, mem);
        extras.add(fe);
        return fe;
    }

    /** Closes {@code c} together with the export (in reverse order of registration). */
    <C extends AutoCloseable> C closeLater(C c) {
        extras.add(c);
        return c;
    }

    /** A new eventfd watched by a test-side loop (closed with the export). */
    Watched watch() throws IOException {
        return watch(EventFd.create());
    }

    /** Starts watching an existing eventfd (from now on; signals already counted stay unseen until drained). */
    Watched watch(EventFd efd) {
        if (watchLoop == null) watchLoop = AioContext.newMainLoop("t-watch");
        return closeLater(new Watched(watchLoop, efd));
    }

    byte[] imageBytes(long off, int len) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "r")) {
            byte[] b = new byte[len];
            f.seek(off);
            f.readFully(b);
            return b;
        }
    }

    void writeImage(long off, byte[] data) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.seek(off);
            f.write(data);
        }
    }

    @Override
    public void close() {
        for (int i = extras.size() - 1; i >= 0; i--) {
            try {
                extras.get(i).close();
            } catch (Exception e) {
                // best effort: the export below must still close
            }
        }
        if (watchLoop != null) watchLoop.close();
        export.close();
        mainLoop.close();
        iothreads.forEach(AioContext::close);
        nodes.close();
    }

    // ------------------------------------------------------------------------------------------ helpers

    static byte[] pattern(int len, long seed) {
        byte[] b = new byte[len];
        new Random(seed).nextBytes(b);
        return b;
    }

    /** Waits (bounded, spinning politely) until {@code cond} holds: for state with no event to wait on. */
    static void awaitCondition(String what, Duration timeout, BooleanSupplier cond) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() - deadline > 0) throw new AssertionError("timed out waiting for " + what);
            Thread.onSpinWait();
            Thread.yield(); // 2-vCPU machines: leave the core to the threads doing the work
        }
    }

    static long openFds() throws IOException {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return s.count();
        }
    }

    /** What each open fd refers to (socket:[ino], anon_inode:[eventfd], /memfd:... ), for failure messages. */
    static List<String> fdTargets() throws IOException {
        List<String> out = new ArrayList<>();
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            for (Path p : (Iterable<Path>) s::iterator) {
                try {
                    out.add(Files.readSymbolicLink(p).toString().replaceAll("\\[\\d+\\]", "[]"));
                } catch (IOException e) {
                    // closed meanwhile (e.g. the directory stream's own fd)
                }
            }
        }
        return out;
    }

    static List<String> maps() throws IOException {
        return Files.readAllLines(Path.of("/proc/self/maps"));
    }

    /**
     * Watches an eventfd on its own loop and counts signals, so a test can wait for one with a timeout, or prove
     * that none came during a window. The eventfd is owned by this watcher.
     */
    static final class Watched implements AutoCloseable {
        final EventFd efd;
        private final AioContext.FdHandler handler;
        private final java.util.concurrent.Semaphore signals = new java.util.concurrent.Semaphore(0);

        Watched(AioContext loop) throws IOException {
            this(loop, EventFd.create());
        }

        Watched(AioContext loop, EventFd efd) {
            this.efd = efd;
            this.handler = loop.setFdHandler(efd.fd(), () -> {
                if (efd.drain() != 0) signals.release();
            });
        }

        int fd() {
            return efd.fd();
        }

        /** True if a signal arrives (or already arrived) within the timeout. */
        boolean await(Duration timeout) throws InterruptedException {
            return signals.tryAcquire(timeout.toNanos(), TimeUnit.NANOSECONDS);
        }

        @Override
        public void close() {
            handler.remove(); // waits until the loop dropped the fd
            efd.close();
        }
    }

    /** Collects log records of one logger while open. */
    static final class LogCapture extends Handler implements AutoCloseable {
        private final Logger logger;
        private final List<LogRecord> records = new ArrayList<>();

        LogCapture(Class<?> c) {
            logger = Logger.getLogger(c.getName()); // strong reference: keeps the logger (and our handler) alive
            logger.addHandler(this);
        }

        @Override
        public synchronized void publish(LogRecord r) {
            records.add(r);
        }

        synchronized boolean contains(String text) {
            for (LogRecord r : records) if (r.getMessage() != null && r.getMessage().contains(text)) return true;
            return false;
        }

        synchronized long count(String text) {
            return records.stream().filter(r -> r.getMessage() != null && r.getMessage().contains(text)).count();
        }

        synchronized List<String> messages() {
            List<String> m = new ArrayList<>();
            for (LogRecord r : records) m.add(r.getMessage());
            return m;
        }

        @Override
        public void flush() {}

        @Override
        public void close() {
            logger.removeHandler(this);
        }
    }
}
