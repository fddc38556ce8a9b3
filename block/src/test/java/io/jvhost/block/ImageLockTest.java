package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * QEMU-style image locking of the file driver, on real files. Two {@link BlockNodes} in one JVM stand in for two
 * daemons: OFD locks belong to an open file description, so they conflict exactly as two processes would; the tests
 * check that claim against real second processes (python3 issuing F_OFD_GETLK/F_OFD_SETLK, and QEMU's qemu-io).
 */
class ImageLockTest {
    @TempDir
    Path dir;
    private final List<BlockNodes> opened = new ArrayList<>();
    private final List<Process> processes = new ArrayList<>();

    @AfterEach
    void tearDown() throws Exception {
        for (BlockNodes n : opened) n.close();
        for (Process p : processes) {
            p.destroyForcibly();
            p.waitFor(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    private BlockNodes newNodes() {
        BlockNodes n = new BlockNodes();
        opened.add(n);
        return n;
    }

    private static final String WRITE_LOCK = "Failed to get \"write\" lock";
    private static final String SHARED_WRITE_LOCK = "Failed to get shared \"write\" lock";

    /** The openers of the matrix: QEMU's guest device writer and reader, a force-share reader, a locking=off writer. */
    enum Opener {
        WRITER(), READER("read-only", "on"), SHARING_READER("read-only", "on", "force-share", "on"), UNLOCKED_WRITER("locking", "off");

        final String[] opts;

        Opener(String... opts) {
            this.opts = opts;
        }
    }

    private static String hint(Path img) {
        return "Is another process using the image [" + img + "]?";
    }

    /**
     * The whole table, existing holder x new opener. QEMU's rules: the new opener's wanted permissions must not be
     * unshared by the holder (byte 200+i), and what it does not share must not be held (byte 100+i).
     */
    @Test
    void holderTimesOpenerMatrixFollowsQemu() throws Exception {
        Path img = patternFile(dir, "m.img", 65536);
        Object[][] table = {
                // holder, opener, null = allowed, else the refusal text
                {Opener.WRITER, Opener.WRITER, WRITE_LOCK},
                {Opener.WRITER, Opener.READER, SHARED_WRITE_LOCK},
                {Opener.WRITER, Opener.SHARING_READER, null},
                {Opener.WRITER, Opener.UNLOCKED_WRITER, null},
                {Opener.READER, Opener.WRITER, WRITE_LOCK},
                {Opener.READER, Opener.READER, null},
                {Opener.READER, Opener.SHARING_READER, null},
                {Opener.READER, Opener.UNLOCKED_WRITER, null},
                {Opener.SHARING_READER, Opener.WRITER, null},
                {Opener.SHARING_READER, Opener.READER, null},
                {Opener.SHARING_READER, Opener.SHARING_READER, null},
                {Opener.SHARING_READER, Opener.UNLOCKED_WRITER, null},
                {Opener.UNLOCKED_WRITER, Opener.WRITER, null},
                {Opener.UNLOCKED_WRITER, Opener.READER, null},
                {Opener.UNLOCKED_WRITER, Opener.SHARING_READER, null},
                {Opener.UNLOCKED_WRITER, Opener.UNLOCKED_WRITER, null},
        };
        assertEquals(Opener.values().length * Opener.values().length, table.length);
        for (Object[] row : table) {
            Opener holder = (Opener) row[0], opener = (Opener) row[1];
            String refusal = (String) row[2];
            String cell = holder + " then " + opener;
            try (Pair pair = new Pair()) {
                pair.first.add(fileOpts("h", img, holder.opts));
                if (refusal == null) {
                    assertNotNull(pair.second.add(fileOpts("o", img, opener.opts)), cell);
                } else {
                    BlockException e = assertThrows(BlockException.class, () -> pair.second.add(fileOpts("o", img, opener.opts)), cell);
                    assertEquals("blockdev: " + refusal + ". " + hint(img), e.getMessage(), cell);
                    assertNull(pair.second.get("o"), cell + ": a refused node must not be registered");
                }
            }
        }
    }

    /** Two daemons in one test: each side its own BlockNodes (its own worker pool, its own fds). */
    private static final class Pair implements AutoCloseable {
        final BlockNodes first = new BlockNodes();
        final BlockNodes second = new BlockNodes();

        @Override
        public void close() {
            second.close();
            first.close();
        }
    }

    @Test
    void secondWriterIsRefusedAndLeavesNothingOpen() throws Exception {
        Path img = patternFile(dir, "w.img", 65536);
        BlockNodes a = newNodes(), b = newNodes();
        a.add(fileOpts("w", img));
        int fds = openFlags(img).size();
        BlockException e = assertThrows(BlockException.class, () -> b.add(fileOpts("w", img)));
        assertTrue(e.getMessage().startsWith("blockdev: " + WRITE_LOCK), e.getMessage());
        assertTrue(e.getMessage().contains(hint(img)), e.getMessage());
        assertEquals(fds, openFlags(img).size(), "the refused node left fds open");
        assertTrue(b.all().isEmpty());
        // Two nodes of one BlockNodes on the same image are two openers as well (QEMU refuses that too).
        assertThrows(BlockException.class, () -> a.add(fileOpts("w2", img)));
        // The holder is untouched: it still locks (python sees its bytes) and still works.
        assertEquals(List.of(100, 101, 201), heldBytes(img));
    }

    @Test
    void locksAreReleasedWhenTheNodeCloses() throws Exception {
        Path img = patternFile(dir, "c.img", 65536);
        BlockNodes a = newNodes(), b = newNodes();
        a.add(fileOpts("w", img));
        assertThrows(BlockException.class, () -> b.add(fileOpts("w", img)));
        a.remove("w"); // blockdev-del closes the node and with it the fd carrying the locks
        assertEquals(List.of(), heldBytes(img));
        b.add(fileOpts("w", img));
        assertEquals(List.of(100, 101, 201), heldBytes(img));
        b.close();
        assertEquals(List.of(), heldBytes(img));
        a.add(fileOpts("again", img));
    }

    @Test
    void bothLockingOffShareTheImageAndHoldNothing() throws Exception {
        Path img = patternFile(dir, "off.img", 65536);
        BlockNodes src = newNodes(), dst = newNodes();
        BlockDriverState s = src.add(fileOpts("d", img, "locking", "off"));
        BlockDriverState d = dst.add(fileOpts("d", img, "locking", "off"));
        assertEquals(List.of(), heldBytes(img));
        // Both really are writable openers of one image (the migration trial's source and destination).
        BlockBackend bs = new BlockBackend(s, true), bd = new BlockBackend(d, true);
        java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocateDirect(512);
        for (int i = 0; i < 512; i++) buf.put(i, (byte) 0x5a);
        assertEquals(0, await(cb -> bs.pwritev(0, iov(buf), 0, cb)));
        java.nio.ByteBuffer back = java.nio.ByteBuffer.allocateDirect(512);
        assertEquals(0, await(cb -> bd.preadv(0, iov(back), cb)));
        assertEquals((byte) 0x5a, back.get(511));
    }

    /**
     * One side off, one side on: the off side takes and checks nothing, so the on side succeeds in either order
     * (as in QEMU), and it is the on side's locks that refuse a third writer.
     */
    @Test
    void oneSideOffOneSideOn() throws Exception {
        Path img = patternFile(dir, "mix.img", 65536);
        BlockNodes off = newNodes(), on = newNodes(), third = newNodes();
        off.add(fileOpts("d", img, "locking", "off"));
        on.add(fileOpts("d", img, "locking", "on"));
        assertEquals(List.of(100, 101, 201), heldBytes(img));
        BlockException e = assertThrows(BlockException.class, () -> third.add(fileOpts("d", img)));
        assertTrue(e.getMessage().contains(WRITE_LOCK), e.getMessage());
        third.add(fileOpts("d", img, "locking", "off"));
        // Reverse order: on first, then off.
        on.remove("d");
        off.remove("d");
        on.add(fileOpts("d", img, "locking", "auto"));
        off.add(fileOpts("d", img, "locking", "off"));
        assertEquals(List.of(100, 101, 201), heldBytes(img));
    }

    @Test
    void badValuesNameTheOption() throws Exception {
        Path img = patternFile(dir, "bad.img", 4096);
        BlockNodes n = newNodes();
        BlockException e = assertThrows(BlockException.class, () -> n.add(fileOpts("a", img, "locking", "maybe")));
        assertEquals("blockdev: invalid value 'maybe' for option 'locking' (expected on, off or auto)", e.getMessage());
        e = assertThrows(BlockException.class, () -> n.add(fileOpts("a", img, "force-share", "maybe")));
        assertTrue(e.getMessage().contains("'force-share'"), e.getMessage());
        e = assertThrows(BlockException.class, () -> n.add(fileOpts("a", img, "force-share", "on")));
        assertEquals("blockdev: force-share=on can only be used with read-only images", e.getMessage());
        assertTrue(n.all().isEmpty());
        assertTrue(openFlags(img).isEmpty(), "refused opens left fds behind");
        assertEquals(List.of(), heldBytes(img));
    }

    /** The bytes each kind of node holds, as another process sees them (QEMU's layout). */
    @Test
    void anotherProcessSeesQemusLockBytes() throws Exception {
        Path img = patternFile(dir, "p.img", 65536);
        String[][] kinds = {{}, {"read-only", "on"}, {"read-only", "on", "force-share", "on"}, {"locking", "off"},
                {"cache.direct", "on"}};
        List<List<Integer>> expected = List.of(List.of(100, 101, 201), List.of(100, 201), List.of(100), List.of(),
                List.of(100, 101, 201));
        for (int i = 0; i < kinds.length; i++) {
            BlockNodes n = newNodes();
            n.add(fileOpts("x", img, kinds[i]));
            assertEquals(expected.get(i), heldBytes(img), List.of(kinds[i]).toString());
            n.close();
            assertEquals(List.of(), heldBytes(img), "after close of " + List.of(kinds[i]));
        }
    }

    /**
     * The claim behind the one-JVM tests: the locks sit on the node's own open file description. Closing other fds
     * of the same file in this process (which would drop classic POSIX locks) leaves them, and a lock held by a real
     * second process refuses us exactly as a second BlockNodes does.
     */
    @Test
    void locksBehaveAsBetweenProcesses() throws Exception {
        Path img = patternFile(dir, "ofd.img", 65536);
        BlockNodes a = newNodes();
        a.add(fileOpts("w", img));
        try (FileChannel fc = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE);
             RandomAccessFile raf = new RandomAccessFile(img.toFile(), "r")) {
            assertTrue(fc.size() > 0 && raf.length() > 0);
        }
        assertEquals(List.of(100, 101, 201), heldBytes(img), "closing another fd of the file dropped the node's locks");
        String inJvm = assertThrows(BlockException.class, () -> newNodes().add(fileOpts("w", img))).getMessage();
        a.close();
        assertEquals(List.of(), heldBytes(img));

        // A second process takes what a QEMU writer takes; our writer gets the very refusal the in-JVM one got.
        Process holder = holdBytes(img, 100, 101, 201);
        String crossProcess = assertThrows(BlockException.class, () -> newNodes().add(fileOpts("w", img))).getMessage();
        assertEquals(inJvm, crossProcess);
        assertTrue(crossProcess.contains(WRITE_LOCK), crossProcess);
        BlockException e = assertThrows(BlockException.class, () -> newNodes().add(fileOpts("r", img, "read-only", "on")));
        assertTrue(e.getMessage().contains(SHARED_WRITE_LOCK), e.getMessage());
        newNodes().add(fileOpts("s", img, "read-only", "on", "force-share", "on"));
        newNodes().add(fileOpts("o", img, "locking", "off"));
        release(holder);
        newNodes().add(fileOpts("w", img)); // the holder's exit released its locks
    }

    /** Interop with QEMU itself: qemu-io reads our bytes, and we read qemu-io's. */
    @Test
    void qemuIoAndJvhostSeeEachOther() throws Exception {
        assumeTrue(runs("qemu-io", "--version"), "qemu-io not installed");
        Path img = patternFile(dir, "q.img", 65536);
        BlockNodes a = newNodes();
        a.add(fileOpts("w", img));
        // A qemu-io writer is refused by our "write not shared" byte; a qemu-io reader (which shares everything) is not.
        Result w = run("qemu-io", "-f", "raw", "-c", "read 0 512", img.toString());
        assertTrue(w.out.contains("Failed to get \"write\" lock") && w.out.contains(hint(img)), w.out);
        Result r = run("qemu-io", "-r", "-f", "raw", "-c", "read 0 512", img.toString());
        assertEquals(0, r.exit, r.out);
        assertTrue(r.out.contains("read 512/512 bytes"), r.out);
        a.close();

        // qemu-io as the holder: a writer that shares everything holds bytes 100 and 101 only.
        Process q = new ProcessBuilder("qemu-io", "-f", "raw", img.toString()).redirectErrorStream(true).start();
        processes.add(q);
        BufferedReader out = new BufferedReader(new InputStreamReader(q.getInputStream(), StandardCharsets.UTF_8));
        q.getOutputStream().write("read 0 512\n".getBytes(StandardCharsets.UTF_8));
        q.getOutputStream().flush();
        String line = CompletableFuture.supplyAsync(() -> {
            try {
                for (String l; (l = out.readLine()) != null; ) if (l.contains("read 512/512 bytes")) return l;
                return null;
            } catch (IOException e) {
                return null;
            }
        }).get(TIMEOUT_S, TimeUnit.SECONDS);
        assertNotNull(line, "qemu-io did not open the image");
        assertEquals(List.of(100, 101), heldBytes(img));
        BlockException e = assertThrows(BlockException.class, () -> newNodes().add(fileOpts("w", img)));
        assertEquals("blockdev: " + SHARED_WRITE_LOCK + ". " + hint(img), e.getMessage());
        assertThrows(BlockException.class, () -> newNodes().add(fileOpts("r", img, "read-only", "on")));
        newNodes().add(fileOpts("s", img, "read-only", "on", "force-share", "on"));
        q.getOutputStream().close(); // EOF on stdin: qemu-io quits
        assertTrue(q.waitFor(TIMEOUT_S, TimeUnit.SECONDS));
        newNodes().add(fileOpts("w", img));
    }

    // ------------------------------------------------------------------------------ second-process helpers

    /** Lock bytes 100..104 and 200..204 held by anybody, as a lock test from another process reports them. */
    private List<Integer> heldBytes(Path img) throws Exception {
        String script = String.join("\n",
                "import fcntl, os, struct, sys",
                "fd = os.open(sys.argv[1], os.O_RDONLY)",
                "held = []",
                "for off in list(range(100, 105)) + list(range(200, 205)):",
                "    r = fcntl.fcntl(fd, 36, struct.pack('hhqqi4x', 1, 0, off, 1, 0))  # F_OFD_GETLK, F_WRLCK",
                "    if struct.unpack('hhqqi4x', r)[0] != 2: held.append(off)  # not F_UNLCK",
                "print(' '.join(map(str, held)))");
        Result r = run(python(), "-c", script, img.toString());
        assertEquals(0, r.exit, r.out);
        List<Integer> held = new ArrayList<>();
        for (String s : r.out.trim().split("\\s+")) if (!s.isEmpty()) held.add(Integer.parseInt(s));
        return held;
    }

    /** A second process holding shared OFD locks on the given bytes until its stdin closes. */
    private Process holdBytes(Path img, int... bytes) throws Exception {
        String script = String.join("\n",
                "import fcntl, os, struct, sys",
                "fd = os.open(sys.argv[1], os.O_RDONLY)",
                "for a in sys.argv[2:]:",
                "    fcntl.fcntl(fd, 37, struct.pack('hhqqi4x', 0, 0, int(a), 1, 0))  # F_OFD_SETLK, F_RDLCK",
                "print('locked', flush=True)",
                "sys.stdin.read()");
        List<String> cmd = new ArrayList<>(List.of(python(), "-c", script, img.toString()));
        for (int b : bytes) cmd.add(Integer.toString(b));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        processes.add(p);
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        String first = CompletableFuture.supplyAsync(() -> {
            try {
                return out.readLine();
            } catch (IOException e) {
                return e.toString();
            }
        }).get(TIMEOUT_S, TimeUnit.SECONDS);
        assertEquals("locked", first);
        return p;
    }

    private static void release(Process p) throws Exception {
        p.getOutputStream().close();
        assertTrue(p.waitFor(TIMEOUT_S, TimeUnit.SECONDS), "holder did not exit");
        assertEquals(0, p.exitValue());
    }

    private static String python() {
        assumeTrue(runs("python3", "-c", "import fcntl"), "python3 not installed");
        return "python3";
    }

    private record Result(int exit, String out) {}

    private static Result run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        CompletableFuture<String> out = CompletableFuture.supplyAsync(() -> {
            try {
                return new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            } catch (IOException e) {
                return e.toString();
            }
        });
        if (!p.waitFor(TIMEOUT_S, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            fail(String.join(" ", cmd) + " did not finish");
        }
        return new Result(p.exitValue(), out.get(TIMEOUT_S, TimeUnit.SECONDS));
    }

    private static boolean runs(String... cmd) {
        try {
            return run(cmd).exit == 0;
        } catch (Exception e) {
            return false;
        }
    }
}
