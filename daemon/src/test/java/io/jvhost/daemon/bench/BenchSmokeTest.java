package io.jvhost.daemon.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.jvhost.daemon.Daemon;
import io.jvhost.daemon.Options;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchService;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The bench against real back-ends: jvhost in-process (null-co), and qemu-storage-daemon 7.2 as a subprocess when
 * it is installed. Smoke tests for CI: they check that runs complete with IOs and well-formed JSON, never timings.
 */
class BenchSmokeTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    record Run(int status, String out, String err) {}

    private static Run bench(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        int status = BenchMain.run(args, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    private static Daemon jvhost(Path sock, String id, String node, int queues, boolean writable) throws Exception {
        return Daemon.start(Options.parse(new String[] {
                "--blockdev", node,
                "--export", "vhost-user-blk,id=" + id + ",node-name=n,addr.type=unix,addr.path=" + sock + ",num-queues=" + queues
                        + ",writable=" + (writable ? "on" : "off")}));
    }

    /** Checks what every result must satisfy; returns the parsed JSON. */
    private static JsonNode checkJson(Path file) throws Exception {
        JsonNode j = JSON.readTree(file.toFile());
        assertEquals("jvhost-bench/1", j.path("schema").asText());
        JsonNode r = j.path("result");
        long ios = r.path("ios").asLong();
        assertTrue(ios > 0, "no IOs: " + j);
        assertEquals(ios, r.path("reads").asLong() + r.path("writes").asLong());
        assertTrue(r.path("iops").asDouble() > 0);
        assertEquals(ios * j.path("options").path("bs").asLong(), r.path("bytes").asLong());
        // The histogram holds every measured request; percentiles never decrease and stay within min..max.
        long inHist = 0;
        long prevHigh = -1;
        for (JsonNode b : r.path("histogram")) {
            assertEquals(3, b.size());
            assertTrue(b.get(0).asLong() > prevHigh && b.get(0).asLong() <= b.get(1).asLong(), b.toString());
            prevHigh = b.get(1).asLong();
            inHist += b.get(2).asLong();
        }
        assertEquals(ios, inHist);
        long prev = 0;
        JsonNode lat = r.path("latencyNs");
        for (JsonNode p : r.path("percentiles")) {
            long ns = p.path("ns").asLong();
            assertTrue(ns >= prev, "percentiles decrease: " + r.path("percentiles"));
            assertTrue(ns >= lat.path("min").asLong() && ns <= lat.path("max").asLong());
            prev = ns;
        }
        assertTrue(lat.path("p50").asLong() > 0);
        long perQueue = 0;
        for (JsonNode q : j.path("queues")) {
            assertTrue(q.path("ios").asLong() > 0, "queue without IOs: " + q);
            perQueue += q.path("ios").asLong();
        }
        assertEquals(ios, perQueue);
        assertEquals(j.path("options").path("queues").asInt(), j.path("queues").size());
        assertTrue(j.path("benchCost").path("queueThreadsCpuSeconds").asDouble() >= 0);
        return j;
    }

    @Test
    void randrwOnTwoQueuesAgainstJvhost(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("j.sock"), json = dir.resolve("r.json");
        try (Daemon d = jvhost(sock, "bench-smoke", "null-co,node-name=n,size=64M,read-zeroes=on", 2, true)) {
            Run r = bench("--socket", sock.toString(), "--rw", "randrw", "--queues", "2", "--iodepth", "16",
                    "--time", "1500ms", "--ramp", "500ms", "--json", json.toString(), "--label", "smoke/jvhost/1",
                    "--target-pid", Long.toString(ProcessHandle.current().pid()));
            assertEquals(0, r.status(), r.err());
            assertTrue(r.out().contains("IOPS") && r.out().contains("latency (us)"), r.out());
            assertTrue(r.err().contains("jvhost-bench: ["), "no progress line: " + r.err());
            JsonNode j = checkJson(json);
            assertEquals("smoke/jvhost/1", j.path("label").asText());
            assertTrue(j.path("result").path("reads").asLong() > 0 && j.path("result").path("writes").asLong() > 0);
            assertTrue(j.path("negotiated").path("eventIdx").asBoolean());
            assertEquals("ADD_MEM_REG", j.path("negotiated").path("memory").asText());
            assertEquals(64L << 20, j.path("negotiated").path("capacityBytes").asLong());
            assertTrue(j.path("target").path("rssMaxBytes").asLong() > 0);
            // Steady state allocates nothing: a per-request object would be megabytes over a run this long.
            for (JsonNode q : j.path("queues")) {
                long alloc = q.path("allocatedBytes").asLong();
                assertTrue(alloc >= 0 && alloc < 64 * 1024, "queue thread allocated " + alloc + " bytes for "
                        + q.path("ios").asLong() + " requests");
            }
            // The in-process daemon stays alive and usable after the bench stopped its rings and disconnected.
            Run again = bench("--socket", sock.toString(), "--time", "300ms", "--ramp", "0", "--progress", "off");
            assertEquals(0, again.status(), again.err());
        }
    }

    @Test
    void pollingIndirectWithoutEventIdxSequentialWrites(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("p.sock"), json = dir.resolve("p.json");
        try (Daemon d = jvhost(sock, "bench-poll", "null-co,node-name=n,size=16M", 1, true)) {
            Run r = bench("--socket", sock.toString(), "--rw", "write", "--bs", "64k", "--iodepth", "4", "--wait", "poll",
                    "--indirect", "on", "--event-idx", "off", "--time", "1s", "--ramp", "0", "--json", json.toString(),
                    "--progress", "off");
            assertEquals(0, r.status(), r.err());
            JsonNode j = checkJson(json);
            assertEquals(j.path("result").path("ios").asLong(), j.path("result").path("writes").asLong());
            assertFalse(j.path("negotiated").path("eventIdx").asBoolean());
            long features = Long.decode(j.path("negotiated").path("features").asText());
            assertEquals(0, features & (1L << 29), "EVENT_IDX negotiated");
            assertTrue((features & (1L << 28)) != 0, "INDIRECT_DESC not negotiated");
            assertTrue((features & (1L << 9)) != 0, "FLUSH not negotiated (the back-end would write through)");
        }
    }

    @Test
    void refusesWhatTheDeviceCannotDo(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("ro.sock");
        try (Daemon d = jvhost(sock, "bench-ro", "null-co,node-name=n,size=1M,read-zeroes=on", 1, false)) {
            Run w = bench("--socket", sock.toString(), "--rw", "randwrite", "--time", "1s", "--progress", "off");
            assertEquals(2, w.status());
            assertTrue(w.err().contains("read-only"), w.err());
            Run big = bench("--socket", sock.toString(), "--size", "2M", "--time", "1s", "--progress", "off");
            assertEquals(2, big.status());
            assertTrue(big.err().contains("exceeds the device capacity"), big.err());
            Run q = bench("--socket", sock.toString(), "--queues", "2", "--time", "1s", "--progress", "off");
            assertEquals(2, q.status());
            assertTrue(q.err().contains("1 queue(s)"), q.err());
            // The daemon survives all three sessions and still serves a good one.
            Run ok = bench("--socket", sock.toString(), "--time", "200ms", "--ramp", "0", "--progress", "off");
            assertEquals(0, ok.status(), ok.err());
        }
        Run none = bench("--socket", dir.resolve("nothing.sock").toString(), "--time", "1s");
        assertEquals(2, none.status());
        assertTrue(none.err().contains("cannot connect"), none.err());
        Run usage = bench("--socket", "x", "--bs", "3");
        assertEquals(1, usage.status());
        Run help = bench("--help");
        assertEquals(0, help.status());
        assertTrue(help.out().contains("--iodepth"));
    }

    @Test
    void watchdogEndsARunWhoseRequestsNeverComplete(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("slow.sock");
        // Every request takes 3 s; the run ends after 200 ms and may wait 300 ms more for its requests.
        try (Daemon d = jvhost(sock, "bench-slow", "null-co,node-name=n,size=1M,latency-ns=3000000000", 1, true)) {
            long t0 = System.nanoTime();
            Run r = bench("--socket", sock.toString(), "--iodepth", "2", "--time", "200ms", "--ramp", "0",
                    "--drain-timeout", "300ms", "--progress", "off");
            assertEquals(2, r.status(), r.out());
            assertTrue(r.err().contains("still in flight"), r.err());
            assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(2), "the watchdog did not cut the run short");
        }
    }

    @Test
    void qemuStorageDaemon(@TempDir Path dir) throws Exception {
        assumeTrue(onPath("qemu-storage-daemon"), "qemu-storage-daemon not installed");
        Path sock = dir.resolve("q.sock"), pid = dir.resolve("q.pid"), json = dir.resolve("q.json");
        List<String> cmd = new ArrayList<>(List.of("qemu-storage-daemon",
                "--blockdev", "driver=null-co,node-name=n,size=67108864,read-zeroes=on",
                "--object", "iothread,id=iot0",
                "--export", "type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=" + sock
                        + ",writable=on,num-queues=2,iothread=iot0",
                "--pidfile", pid.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("qsd.log").toFile()).start();
        try {
            awaitPidfile(dir, pid, p);
            Run r = bench("--socket", sock.toString(), "--rw", "randrw", "--queues", "2", "--iodepth", "8",
                    "--time", "1s", "--ramp", "300ms", "--json", json.toString(), "--progress", "off",
                    "--target-pid", Long.toString(p.pid()));
            assertEquals(0, r.status(), r.err() + Files.readString(dir.resolve("qsd.log")));
            JsonNode j = checkJson(json);
            assertEquals("ADD_MEM_REG", j.path("negotiated").path("memory").asText());
            assertTrue(j.path("target").path("rssMaxBytes").asLong() > 0);
            assertTrue(j.path("target").path("cpuSeconds").asDouble() >= 0);
            assertTrue(p.isAlive(), "qemu-storage-daemon died: " + Files.readString(dir.resolve("qsd.log")));
        } finally {
            p.destroy();
            if (!p.waitFor(10, TimeUnit.SECONDS)) p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
    }

    static boolean onPath(String tool) {
        for (String d : System.getenv().getOrDefault("PATH", "").split(":")) {
            if (!d.isEmpty() && Files.isExecutable(Path.of(d, tool))) return true;
        }
        return false;
    }

    /** QSD writes its pidfile once the export listens: wait for it with inotify, bounded. */
    static void awaitPidfile(Path dir, Path pid, Process p) throws Exception {
        try (WatchService ws = dir.getFileSystem().newWatchService()) {
            dir.register(ws, StandardWatchEventKinds.ENTRY_CREATE, StandardWatchEventKinds.ENTRY_MODIFY);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!(Files.exists(pid) && !Files.readString(pid).isBlank())) {
                long left = deadline - System.nanoTime();
                if (!p.isAlive() || left <= 0) throw new AssertionError("qemu-storage-daemon did not start (alive=" + p.isAlive() + ")");
                var key = ws.poll(Math.min(left, TimeUnit.MILLISECONDS.toNanos(200)), TimeUnit.NANOSECONDS);
                if (key != null) {
                    key.pollEvents();
                    key.reset();
                }
            }
        }
    }
}
