package io.jvhost.block;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/** Shared helpers for the block tests: real files, real buffers, bounded waits. */
final class TestSupport {
    private TestSupport() {}

    static final long TIMEOUT_S = 20;

    /** A direct buffer whose address is aligned to 4096. */
    static ByteBuffer alignedDirect(int size) {
        return ByteBuffer.allocateDirect(size + 8192).alignedSlice(4096).limit(size).slice();
    }

    /** The byte that the pattern file holds at offset off (distinct for neighbouring sectors). */
    static byte pat(long off) {
        return (byte) ((off * 31 + (off >>> 9) * 7 + 1) & 0xff);
    }

    /** Creates a file of len bytes filled with {@link #pat}. */
    static Path patternFile(Path dir, String name, int len) throws IOException {
        byte[] b = new byte[len];
        for (int i = 0; i < len; i++) b[i] = pat(i);
        Path p = dir.resolve(name);
        Files.write(p, b);
        return p;
    }

    static Map<String, String> fileOpts(String node, Path p, String... extra) {
        Map<String, String> m = new java.util.HashMap<>();
        m.put("driver", "file");
        m.put("node-name", node);
        m.put("filename", p.toString());
        for (int i = 0; i < extra.length; i += 2) m.put(extra[i], extra[i + 1]);
        return m;
    }

    /** Every thread's stack, for failure messages of bounded waits. */
    static String threadDump() {
        return BlockGraph.threadDump();
    }

    /** Waits for the latch; on timeout fails with a thread dump. */
    static void awaitOrDump(java.util.concurrent.CountDownLatch l, long seconds, String what) throws InterruptedException {
        if (!l.await(seconds, TimeUnit.SECONDS)) {
            org.junit.jupiter.api.Assertions.fail(what + " did not happen within " + seconds + " s (" + l.getCount()
                    + " left)\n" + threadDump());
        }
    }

    /** Waits for the future; on timeout fails with a thread dump. */
    static <T> T getOrDump(java.util.concurrent.Future<T> f, long seconds, String what) throws Exception {
        try {
            return f.get(seconds, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            return org.junit.jupiter.api.Assertions.fail(what + " did not happen within " + seconds + " s\n" + threadDump());
        }
    }

    static Map<String, String> opts(String... kv) {
        Map<String, String> m = new java.util.HashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put(kv[i], kv[i + 1]);
        return m;
    }

    /** Submits via {@code submit} from the calling thread and waits for the completion value. */
    static int await(Consumer<BlockCompletion> submit) throws Exception {
        CompletableFuture<Integer> f = new CompletableFuture<>();
        submit.accept(f::complete);
        return f.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    static IoVec iov(ByteBuffer... segs) {
        IoVec v = new IoVec(segs.length);
        for (ByteBuffer b : segs) v.add(b);
        return v;
    }

    static byte[] bytes(ByteBuffer b) {
        byte[] a = new byte[b.remaining()];
        b.duplicate().get(a);
        return a;
    }

    /** Open fds of this process that refer to p, with their open flags from /proc/self/fdinfo. */
    static List<Integer> openFlags(Path p) throws IOException {
        Path real = p.toRealPath();
        List<Integer> flags = new ArrayList<>();
        try (var fds = Files.list(Path.of("/proc/self/fd"))) {
            for (Path fd : (Iterable<Path>) fds::iterator) {
                Path target;
                try {
                    target = Files.readSymbolicLink(fd);
                } catch (IOException e) {
                    continue; // closed meanwhile (the listing's own fd)
                }
                if (!target.equals(real)) continue;
                for (String line : Files.readAllLines(Path.of("/proc/self/fdinfo/" + fd.getFileName()))) {
                    if (line.startsWith("flags:")) flags.add(Integer.parseInt(line.substring(6).trim(), 8));
                }
            }
        }
        return flags;
    }

    /** Allocated 512-byte blocks of p, from stat(1). */
    static long allocatedBlocks(Path p) throws Exception {
        Process pr = new ProcessBuilder("stat", "-c", "%b", p.toString()).redirectErrorStream(true).start();
        String out = new String(pr.getInputStream().readAllBytes()).trim();
        if (!pr.waitFor(TIMEOUT_S, TimeUnit.SECONDS) || pr.exitValue() != 0) throw new IOException("stat: " + out);
        return Long.parseLong(out);
    }
}
