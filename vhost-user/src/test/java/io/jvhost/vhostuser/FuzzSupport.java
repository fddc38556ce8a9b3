package io.jvhost.vhostuser;

import io.jvhost.block.BlockBackend;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockNodes;
import io.jvhost.iothread.AioContext;
import org.newsclub.net.unix.AFUNIXSocketAddress;
import org.newsclub.net.unix.AFUNIXSocketChannel;

import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.stream.Stream;

/**
 * Shared pieces of the vhost-user fuzz tests: the input format, an in-process export on a null-co node, a
 * non-blocking raw socket with bounded waits, and the log oracle.
 */
final class FuzzSupport {
    private FuzzSupport() {}

    static final Duration T = Duration.ofSeconds(10);

    /**
     * The byte format of the fuzz inputs: little-endian fields read in order; a read past the end yields zeroes,
     * so every byte string is a valid input. {@link Seed} writes the same format for the committed seed corpus.
     */
    static final class In {
        private final byte[] b;
        private int pos;

        In(byte[] b) {
            this.b = b;
        }

        boolean more() {
            return pos < b.length;
        }

        int u8() {
            return pos < b.length ? b[pos++] & 0xff : 0;
        }

        int u16() {
            return u8() | u8() << 8;
        }

        long u32() {
            return (u16() | (long) u16() << 16) & 0xffff_ffffL;
        }

        long u64() {
            return u32() | u32() << 32;
        }

        byte[] bytes(int n) {
            int k = Math.max(0, Math.min(n, b.length - pos));
            byte[] r = Arrays.copyOfRange(b, pos, pos + k);
            pos += k;
            return r;
        }
    }

    static final class Seed {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Seed u8(int v) {
            out.write(v);
            return this;
        }

        Seed u16(int v) {
            return u8(v).u8(v >>> 8);
        }

        Seed u32(long v) {
            return u16((int) v).u16((int) (v >>> 16));
        }

        Seed u64(long v) {
            return u32(v).u32(v >>> 32);
        }

        Seed bytes(byte[] v) {
            out.writeBytes(v);
            return this;
        }

        byte[] toBytes() {
            return out.toByteArray();
        }
    }

    static ByteBuffer le(int n) {
        return ByteBuffer.allocate(n).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** Writes seed {@code name} of {@code test}/{@code method} under src/test/resources (see FuzzSeedWriter). */
    static void writeSeed(String test, String method, String name, byte[] data) throws IOException {
        Path dir = Path.of("src/test/resources/io/jvhost/vhostuser", test + "Inputs", method);
        Files.createDirectories(dir);
        Files.write(dir.resolve("seed-" + name), data);
    }

    // ------------------------------------------------------------------------------------------ the export

    /**
     * A real export (vhost-user socket in a temp directory, main loop, one iothread per queue) on a null-co node
     * (reads zeroes, completes without latency), built without {@link TestExport} so that nothing per connection is
     * remembered across the hundreds of thousands of connections a fuzz run makes.
     */
    static final class Export implements AutoCloseable {
        final Path dir;
        final Path socket;
        final BlockNodes nodes = new BlockNodes();
        final BlockBackend blk;
        final AioContext main;
        final List<AioContext> threads = new ArrayList<>();
        final VhostUserBlkExport export;
        final long capacity;
        final int lbs;

        Export(String id, int queues, int lbs, long capacity) throws Exception {
            this.dir = Files.createTempDirectory("jvhost-fuzz");
            this.socket = dir.resolve("vhost.sock");
            this.capacity = capacity;
            this.lbs = lbs;
            Map<String, String> o = new HashMap<>(Map.of("driver", "null-co", "node-name", "n", "size", Long.toString(capacity),
                    "read-zeroes", "on"));
            BlockDriverState node = nodes.add(o);
            blk = new BlockBackend(node, true);
            main = AioContext.newMainLoop(id + "-main");
            // "t-io" like TestExport's iothreads: ThreadRuleTest checks every queue of the suite against that name.
            for (int i = 0; i < queues; i++) threads.add(AioContext.newIoThread("t-io-" + id + "-" + i));
            export = new VhostUserBlkExport(new BlkExportConfig(id, socket.toString(), -1, queues, lbs, true, "fuzz-serial"), blk, main, threads);
            export.start();
        }

        @Override
        public void close() {
            export.close();
            main.close();
            threads.forEach(AioContext::close);
            nodes.close();
            try (Stream<Path> s = Files.walk(dir)) {
                s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            } catch (IOException e) {
                // a temp directory left behind is harmless
            }
        }
    }

    // ------------------------------------------------------------------------------------------ the wire

    /**
     * A front-end socket driven byte by byte: non-blocking, every wait bounded by a selector timeout, replies read
     * and discarded as they come so the back-end never blocks on us.
     */
    static final class Wire implements AutoCloseable {
        final AFUNIXSocketChannel ch;
        private final Selector sel;
        private final SelectionKey key;
        private final ByteBuffer sink = ByteBuffer.allocate(8192).order(ByteOrder.LITTLE_ENDIAN);
        /** Replies seen so far: {request, u64 payload or -1 if it is not 8 bytes} (at most 4096 kept). */
        final List<long[]> replies = new ArrayList<>();

        Wire(Path socket) throws IOException {
            ch = AFUNIXSocketChannel.open(AFUNIXSocketAddress.of(socket));
            ch.configureBlocking(false);
            sel = ch.provider().openSelector();
            key = ch.register(sel, 0);
        }

        /** Writes all of {@code b} (fds with the first part), draining replies meanwhile. Throws if stuck for T. */
        void write(ByteBuffer b, FileDescriptor[] fds) throws IOException {
            if (fds.length > 0) ch.setOutboundFileDescriptors(fds);
            long deadline = System.nanoTime() + T.toNanos();
            while (b.hasRemaining()) {
                if (ch.write(b) > 0) continue;
                if (drain() < 0) throw new IOException("back-end closed the connection");
                await(SelectionKey.OP_WRITE | SelectionKey.OP_READ, deadline, "the back-end to read what we sent");
            }
        }

        /** Reads what is there, recording the replies; -1 at EOF. */
        int drain() throws IOException {
            int total = 0;
            while (true) {
                int n;
                try {
                    n = ch.read(sink);
                } catch (IOException e) {
                    return -1; // ECONNRESET: the back-end dropped us
                }
                closeReceived();
                if (n > 0) {
                    total += n;
                    parseReplies();
                    continue;
                }
                return n < 0 ? -1 : total;
            }
        }

        /** Splits complete replies off the front of the sink (replies are at most 12 + 268 bytes). */
        private void parseReplies() {
            sink.flip();
            while (sink.remaining() >= 12) {
                int p = sink.position();
                int size = sink.getInt(p + 8);
                if (size < 0 || size > 4096) { // not a framing we understand: drop what we have
                    sink.position(sink.limit());
                    break;
                }
                if (sink.remaining() < 12 + size) break;
                if (replies.size() < 4096) replies.add(new long[] {sink.getInt(p), size == 8 ? sink.getLong(p + 12) : -1});
                sink.position(p + 12 + size);
            }
            sink.compact();
        }

        /** The replies to requests with a u64 REPLY_ACK whose value was not 0. */
        List<String> nacks() {
            List<String> out = new ArrayList<>();
            for (long[] r : replies) {
                int req = (int) r[0];
                boolean ackOnly = req != Proto.GET_FEATURES && req != Proto.GET_PROTOCOL_FEATURES && req != Proto.GET_QUEUE_NUM
                        && req != Proto.GET_MAX_MEM_SLOTS && req != Proto.GET_STATUS && req != Proto.GET_CONFIG && req != Proto.GET_VRING_BASE;
                if (ackOnly && r[1] != 0) out.add(Proto.name(req) + "=" + r[1]);
            }
            return out;
        }

        /** Waits (at most T) for the reply to {@code request}; returns its u64 payload (-1 if not 8 bytes). */
        long awaitReply(int request) throws IOException {
            long deadline = System.nanoTime() + T.toNanos();
            int seen = 0;
            while (true) {
                for (; seen < replies.size(); seen++) if (replies.get(seen)[0] == request) return replies.get(seen)[1];
                if (drain() < 0) throw new IOException("back-end closed the connection");
                if (seen == replies.size()) await(SelectionKey.OP_READ, deadline, "the reply to " + Proto.name(request));
            }
        }

        /** Half-closes, then waits (bounded) until the back-end has processed everything and closed its end. */
        void finish() throws IOException {
            try {
                ch.shutdownOutput();
            } catch (IOException e) {
                return; // already gone
            }
            long deadline = System.nanoTime() + T.toNanos();
            while (drain() >= 0) await(SelectionKey.OP_READ, deadline, "the back-end to close the connection after EOF");
        }

        private void await(int ops, long deadline, String what) throws IOException {
            long left = (deadline - System.nanoTime()) / 1_000_000;
            if (left <= 0) throw new AssertionError("hang: timed out after " + T + " waiting for " + what);
            key.interestOps(ops);
            sel.select(left);
            sel.selectedKeys().clear();
        }

        private void closeReceived() throws IOException {
            FileDescriptor[] got = ch.getReceivedFileDescriptors();
            if (got == null) return;
            for (FileDescriptor fd : got) {
                try (FileInputStream in = new FileInputStream(fd)) {
                    // the back-end sends no fds on this channel; close any it does
                }
            }
        }

        /** GET_FEATURES round trip: the export serves this connection. */
        long getFeatures() throws IOException {
            return request(Proto.GET_FEATURES, 0, new byte[0]);
        }

        /** Sends one well-formed message and waits for its reply (u64, or -1 if the reply is not 8 bytes). */
        long request(int req, int flags, byte[] payload, FileDescriptor... fds) throws IOException {
            replies.clear();
            write(le(12 + payload.length).putInt(req).putInt(Proto.VERSION | flags).putInt(payload.length).put(payload).flip(), fds);
            return awaitReply(req);
        }

        @Override
        public void close() {
            try {
                sel.close();
            } catch (IOException e) {
                // nothing to do
            }
            try {
                ch.close();
            } catch (IOException e) {
                // nothing to do
            }
        }
    }

    // ------------------------------------------------------------------------------------------ the log oracle

    /**
     * Collects what must never happen, from every jvhost logger: any WARNING/SEVERE record carrying an exception
     * (a bug of ours caught by a safety net: the main loop, an fd handler, BlkDevice's catch-all) and the lines of
     * the last-resort paths ("internal error", "request handling failed", "did not stop"). While installed it also
     * keeps the expected refusal lines of hostile input off the console (thousands per second when fuzzing).
     */
    static final class LogOracle extends Handler implements AutoCloseable {
        private static final Logger ROOT = Logger.getLogger("io.jvhost");
        private final List<String> problems = new ArrayList<>();
        private final boolean wasUsingParents;
        private int severeLines;

        LogOracle() {
            wasUsingParents = ROOT.getUseParentHandlers();
            ROOT.addHandler(this);
            ROOT.setUseParentHandlers(false);
        }

        @Override
        public synchronized void publish(LogRecord r) {
            String msg = r.getMessage() == null ? "" : r.getMessage();
            if (r.getLevel().intValue() >= Level.SEVERE.intValue()) severeLines++;
            boolean bug = r.getThrown() != null && r.getLevel().intValue() >= Level.WARNING.intValue()
                    || msg.contains("internal error") || msg.contains("request handling failed") || msg.contains("did not stop")
                    || msg.contains("did not finish cleanly");
            if (bug && problems.size() < 10) {
                StringBuilder sb = new StringBuilder(r.getLevel() + " " + r.getLoggerName() + ": " + msg);
                if (r.getThrown() != null) {
                    java.io.StringWriter w = new java.io.StringWriter();
                    r.getThrown().printStackTrace(new java.io.PrintWriter(w));
                    sb.append('\n').append(w);
                }
                problems.add(sb.toString());
            }
        }

        /** Throws (and forgets) what was collected since the last call. */
        synchronized void check() {
            if (problems.isEmpty()) return;
            String all = String.join("\n----\n", problems);
            problems.clear();
            throw new AssertionError("the back-end logged a bug:\n" + all);
        }

        synchronized int severeLines() {
            return severeLines;
        }

        @Override
        public void flush() {}

        @Override
        public void close() {
            ROOT.removeHandler(this);
            ROOT.setUseParentHandlers(wasUsingParents);
        }
    }

    // ------------------------------------------------------------------------------------------ eventfds

    /** An eventfd watched on a test-side loop, so a test can wait for a signal with a timeout. Owns the eventfd. */
    static final class Watch implements AutoCloseable {
        final io.jvhost.iothread.sys.EventFd efd;
        private final AioContext.FdHandler handler;
        private final java.util.concurrent.Semaphore signals = new java.util.concurrent.Semaphore(0);

        Watch(AioContext loop) throws IOException {
            efd = io.jvhost.iothread.sys.EventFd.create();
            handler = loop.setFdHandler(efd.fd(), () -> {
                if (efd.drain() != 0) signals.release();
            });
        }

        boolean await(Duration t) throws InterruptedException {
            return signals.tryAcquire(t.toNanos(), java.util.concurrent.TimeUnit.NANOSECONDS);
        }

        void reset() {
            signals.drainPermits();
        }

        @Override
        public void close() {
            handler.remove();
            efd.close();
        }
    }

    // ------------------------------------------------------------------------------------------ process checks

    /** Bytes of this process's mappings whose /proc/self/maps path contains one of the markers. */
    static long mappedBytes(String... markers) throws IOException {
        long n = 0;
        for (String l : Files.readAllLines(Path.of("/proc/self/maps"))) {
            boolean hit = false;
            for (String m : markers) hit |= l.contains(m);
            if (!hit) continue;
            String[] range = l.substring(0, l.indexOf(' ')).split("-");
            n += Long.parseUnsignedLong(range[1], 16) - Long.parseUnsignedLong(range[0], 16);
        }
        return n;
    }

    /** What the open fds refer to, counted (socket:[ino] and the like without their inode), for failure messages. */
    static Map<String, Integer> fdHistogram() throws IOException {
        Map<String, Integer> h = new java.util.TreeMap<>();
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            for (Path p : (Iterable<Path>) s::iterator) {
                try {
                    h.merge(Files.readSymbolicLink(p).toString().replaceAll("\\[\\d+\\]", "[]"), 1, Integer::sum);
                } catch (IOException e) {
                    // closed meanwhile
                }
            }
        }
        return h;
    }

    static long openFds() throws IOException {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return s.count();
        }
    }
}
