package io.jvhost.vhostuser;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.jvhost.iothread.sys.Libc;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.newsclub.net.unix.AFUNIXSocketPair;
import org.newsclub.net.unix.AFUNIXSocketChannel;
import org.newsclub.net.unix.FileDescriptorCast;

import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * Coverage-guided fuzzing of the vhost-user message decoder ({@link Connection}) and state machine
 * ({@link BlkDevice}) through a real export's unix socket: the input is a sequence of raw byte chunks, each sent
 * with up to four file descriptors of various kinds (eventfds, memfds of three sizes, a regular file, a socket,
 * /dev/null). Headers, size fields, payloads, fd counts and message order are all the fuzzer's; nothing is
 * framed for it. After the last chunk the front-end half-closes and reads until the back-end closes its end.
 *
 * <p>Oracles per input: the back-end closes the connection within 10 s of our EOF (no hang: every message was
 * processed or refused, every ring stopped); the next front-end is accepted and served (GET_FEATURES round trip,
 * which also proves the previous session was torn down); no guest memory stays mapped and no fd leaks; nothing
 * was logged with an exception or through a last-resort path ({@link FuzzSupport.LogOracle}).
 *
 * <p>Input format ({@link FuzzSupport.In}): repeated {u8 fd count (mod 5, or 8 + 12 * (n - 250) for n ≥ 250),
 * u8 fd kind per fd, u16 length, bytes}.
 */
class VhostUserMessageFuzzTest {
    static final int MAX_CHUNKS = 256, KINDS = 8;
    static final String RAM_NAME = MemoryTableTest.MEMFD + "-fuzz";
    static final long RAM = 4L << 20;

    private static FuzzSupport.Export ex;
    private static FuzzSupport.LogOracle oracle;
    private static FuzzSupport.Wire next;
    private static AFUNIXSocketPair<AFUNIXSocketChannel> pair;
    private static FileInputStream devNull;
    private static RandomAccessFile file;
    private static long baselineFds;
    private static int execs;

    @BeforeAll
    static void startExport() throws Exception {
        ex = new FuzzSupport.Export("fuzz-msg", 2, 512, 1L << 30);
        oracle = new FuzzSupport.LogOracle();
        pair = AFUNIXSocketPair.open();
        devNull = new FileInputStream("/dev/null");
        file = new RandomAccessFile(ex.dir.resolve("file.img").toFile(), "rw");
        next = new FuzzSupport.Wire(ex.socket);
        next.getFeatures();
        baselineFds = FuzzSupport.openFds();
    }

    @AfterAll
    static void stopExport() throws Exception {
        try {
            next.close();
            pair.getSocket1().close();
            pair.getSocket2().close();
            devNull.close();
            file.close();
            ex.close();
            oracle.check();
        } finally {
            oracle.close();
        }
    }

    /** The fds an input may send, fresh per input (zeroed memory, unsignalled eventfds). */
    private static final class Fds implements AutoCloseable {
        final List<Integer> own = new ArrayList<>();
        final FileDescriptor[] kinds = new FileDescriptor[KINDS];

        Fds() throws IOException {
            kinds[0] = raw(eventfd());
            kinds[1] = raw(eventfd());
            kinds[2] = raw(memfd(RAM_NAME, RAM));
            kinds[3] = raw(memfd(RAM_NAME + "-small", 64 * 1024));
            kinds[4] = raw(memfd(RAM_NAME + "-big", (1L << 30) + 0x10000)); // sparse; two ByteBuffer windows
            file.setLength(0);
            file.setLength(1 << 20);
            kinds[5] = file.getFD();
            kinds[6] = pair.getSocket1().getFileDescriptor();
            kinds[7] = devNull.getFD();
        }

        private int eventfd() throws IOException {
            int fd = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
            if (fd < 0) throw new IOException("eventfd: errno " + Libc.errno());
            own.add(fd);
            return fd;
        }

        private int memfd(String name, long size) throws IOException {
            int fd = Libc.memfd_create(name, Libc.MFD_CLOEXEC);
            if (fd < 0) throw new IOException("memfd_create: errno " + Libc.errno());
            own.add(fd);
            if (Libc.ftruncate(fd, size) != 0) throw new IOException("ftruncate: errno " + Libc.errno());
            return fd;
        }

        private static FileDescriptor raw(int fd) throws IOException {
            return FileDescriptorCast.unsafeUsing(fd).getFileDescriptor();
        }

        @Override
        public void close() {
            for (int fd : own) Libc.close(fd);
        }
    }

    @FuzzTest(maxDuration = "2m")
    void messages(byte[] data) throws Exception {
        FuzzSupport.In in = new FuzzSupport.In(data);
        FuzzSupport.Wire w = next;
        next = null;
        w.replies.clear();
        try (Fds fds = new Fds()) {
            try {
                for (int i = 0; i < MAX_CHUNKS && in.more(); i++) {
                    // Usually 0..4 fds; rarely 8..68 (more than any message may carry, and more than fit the
                    // back-end's ancillary buffer: the kernel truncates).
                    int sel = in.u8();
                    FileDescriptor[] send = new FileDescriptor[sel < 250 ? sel % 5 : 8 + (sel - 250) * 12];
                    for (int k = 0; k < send.length; k++) send[k] = fds.kinds[in.u8() % KINDS];
                    byte[] bytes = in.bytes(in.u16());
                    if (bytes.length == 0) continue; // fds need at least one byte to travel with
                    w.write(ByteBuffer.wrap(bytes), send);
                }
            } catch (IOException e) {
                // The back-end dropped the connection (a fatal message): the checks below still apply.
            }
            w.finish();
        } finally {
            lastNacks = w.nacks();
            lastReplies = w.replies.size();
            w.close();
        }
        afterSession();
    }

    /** What the back-end answered to the last input (for {@link #seedsReachWhatTheyAreFor}). */
    private static List<String> lastNacks = List.of();
    private static int lastReplies;

    /**
     * The checks after each session: the export accepts and serves the next front-end (so the old session is gone),
     * nothing of the old session stays mapped or open, and nothing was logged as a bug.
     */
    static void afterSession() throws IOException {
        next = new FuzzSupport.Wire(ex.socket);
        next.getFeatures();
        oracle.check();
        long mapped = FuzzSupport.mappedBytes(RAM_NAME);
        if (mapped != 0) throw new AssertionError(mapped + " bytes of guest memory still mapped after the session ended");
        long fds = FuzzSupport.openFds();
        // The JVM and Jazzer open files of their own now and then; a leak per input would pass this within a few
        // dozen inputs.
        if (fds > baselineFds + 24) {
            throw new AssertionError("open fds grew from " + baselineFds + " to " + fds + ": " + FuzzSupport.fdHistogram());
        }
        execs++;
    }

    /**
     * The committed handshakes are still accepted message by message (every REPLY_ACK is 0, so the rings started):
     * the fuzzer starts from deep inside the state machine, not from the first refusal.
     */
    @Test
    void seedsReachWhatTheyAreFor() throws Exception {
        for (String[] e : new String[][] {{"handshake-mem-table", "23"}, {"handshake-add-mem-reg", "25"}, {"migration-log", "24"}}) {
            byte[] seed;
            try (InputStream is = getClass().getResourceAsStream("VhostUserMessageFuzzTestInputs/messages/seed-" + e[0])) {
                if (is == null) throw new AssertionError("missing seed " + e[0]);
                seed = is.readAllBytes();
            }
            int severe = oracle.severeLines();
            messages(seed);
            if (!lastNacks.isEmpty()) throw new AssertionError(e[0] + ": refused " + lastNacks);
            if (lastReplies != Integer.parseInt(e[1])) throw new AssertionError(e[0] + ": " + lastReplies + " replies, expected " + e[1]);
            if (oracle.severeLines() != severe) throw new AssertionError(e[0] + ": a clean session logged SEVERE lines");
        }
    }
}
