package io.jvhost.daemon.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.jvhost.daemon.Daemon;
import io.jvhost.daemon.Options;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The daemon's hot path allocates nothing per request (issue 5): an in-process jvhost serves the bench, and the
 * Java-heap bytes allocated by the daemon's threads (every thread alive after a warm-up run, so the iothreads, the
 * main loop and the block workers, minus this test's own thread, which runs the bench's control code) over a second
 * run must stay far below one small object per request. A per-request allocation (before: 150-200 B) would exceed
 * the bound many times over; connection set-up (vhost-user messages, ring set-up tasks) fits in the fixed allowance.
 */
class HotPathAllocationTest {
    private static final long FIXED_ALLOWANCE = 2L << 20;
    private static final double BYTES_PER_REQUEST = 8;

    @Test
    void nullCoTwoQueuesRandrw(@TempDir Path dir) throws Exception {
        check(dir, "null-co,node-name=n,size=64M,read-zeroes=on", 2);
    }

    @Test
    void pageCacheFileRandrw(@TempDir Path dir) throws Exception {
        Path img = dir.resolve("img.raw");
        byte[] data = new byte[16 << 20];
        new Random(1).nextBytes(data);
        Files.write(img, data);
        check(dir, "driver=file,node-name=n,filename=" + img + ",cache.direct=off,aio=threads", 1);
    }

    private static void check(Path dir, String node, int queues) throws Exception {
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        assumeTrue(mx.isThreadAllocatedMemorySupported() && mx.isThreadAllocatedMemoryEnabled(), "no allocation counters");
        Path sock = dir.resolve("j.sock"), json = dir.resolve("r.json");
        try (Daemon d = Daemon.start(Options.parse(new String[] {"--blockdev", node, "--export",
                "vhost-user-blk,id=alloc,node-name=n,addr.type=unix,addr.path=" + sock + ",writable=on,num-queues=" + queues}))) {
            // Warm-up: JIT, lazily started block workers, pools and arrays that grow to their working size.
            assertEquals(0, bench(sock, queues, "1s", null));
            long self = Thread.currentThread().getId();
            long[] ids = Arrays.stream(mx.getAllThreadIds()).filter(id -> id != self).toArray();
            long[] before = mx.getThreadAllocatedBytes(ids);
            assertEquals(0, bench(sock, queues, "1500ms", json));
            long allocated = delta(before, mx.getThreadAllocatedBytes(ids));
            JsonNode r = new ObjectMapper().readTree(json.toFile()).path("result");
            // ios counts the measured window; the ramp adds more requests, so this bound is conservative.
            long ios = r.path("ios").asLong();
            assertTrue(ios > 1000, "too few requests: " + r);
            assertTrue(allocated < FIXED_ALLOWANCE + BYTES_PER_REQUEST * ios,
                    "the daemon allocated " + allocated + " bytes for " + ios + " requests ("
                            + String.format("%.1f", (double) allocated / ios) + " B/request)");
        }
    }

    private static int bench(Path sock, int queues, String time, Path json) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        String[] args = {"--socket", sock.toString(), "--rw", "randrw", "--queues", Integer.toString(queues),
                "--iodepth", "16", "--time", time, "--ramp", "300ms", "--progress", "off"};
        if (json != null) {
            args = Arrays.copyOf(args, args.length + 2);
            args[args.length - 2] = "--json";
            args[args.length - 1] = json.toString();
        }
        int st = BenchMain.run(args, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
        if (st != 0) System.err.println(err.toString(StandardCharsets.UTF_8));
        return st;
    }

    /** Bytes allocated between the two snapshots by the threads alive at both (-1: not alive). */
    private static long delta(long[] before, long[] after) {
        long s = 0;
        for (int i = 0; i < before.length; i++) {
            if (before[i] >= 0 && after[i] >= 0) s += after[i] - before[i];
        }
        return s;
    }
}
