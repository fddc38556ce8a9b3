package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.jvhost.block.ThrottleGroup;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.BLK_S_OK;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * QMP against a daemon serving a real vhost-user front-end (the vhost-user module's test front-end, in this JVM):
 * throttle-group limits changed with qom-set while requests wait in the group, and query-blockstats counting
 * known traffic. Also every qom-get/qom-set error.
 */
@Timeout(120)
class QmpTrafficTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String GE = "GenericError";
    private static final Duration T = Duration.ofSeconds(20);
    private final List<AutoCloseable> toClose = new ArrayList<>();
    private Daemon daemon;
    private QmpClient qmp;

    @AfterEach
    void tearDown() throws Exception {
        for (int i = toClose.size() - 1; i >= 0; i--) toClose.get(i).close();
        if (daemon != null) daemon.close();
    }

    private void start(Path dir, String... extra) throws Exception {
        List<String> args = new ArrayList<>(List.of(
                "--chardev", "socket,id=m0,path=" + dir.resolve("m0.sock") + ",server=on,wait=off", "--monitor", "m0"));
        args.addAll(List.of(extra));
        daemon = Daemon.start(Options.parse(args.toArray(new String[0])));
        qmp = QmpClient.negotiated(dir.resolve("m0.sock"));
        toClose.add(qmp);
    }

    /** A front-end attached to the export at sock, handshake done (QEMU 7.2's sequence) with n queues. */
    private VhostUserFrontend frontEnd(Path sock, int queues) throws Exception {
        GuestMemory mem = GuestMemory.twoRegions(16L << 20);
        toClose.add(mem);
        VhostUserFrontend fe = VhostUserFrontend.connect(sock, mem);
        toClose.add(fe);
        fe.handshake(new VhostUserFrontend.Options().numQueues(queues));
        return fe;
    }

    private static void ok(DriverQueue q, BlkRequest r) throws Exception {
        q.await(q.submit(r), T);
        assertEquals(BLK_S_OK, r.status(), r::toString);
    }

    /** Waits for a state of another thread, bounded (the group's queue has no event to wait on). */
    private static void awaitCondition(String what, BooleanSupplier cond) {
        long deadline = System.nanoTime() + T.toNanos();
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() - deadline > 0) throw new AssertionError("timed out waiting for " + what);
            Thread.onSpinWait();
            Thread.yield();
        }
    }

    private static JsonNode json(String s) throws Exception {
        return JSON.readTree(s);
    }

    private static String limitsJson(long iopsTotal, long iopsTotalMax, long iopsTotalMaxLength, long bpsWrite) {
        return "{\"iops-total\": " + iopsTotal + ", \"iops-total-max\": " + iopsTotalMax + ", \"iops-total-max-length\": "
                + iopsTotalMaxLength + ", \"iops-read\": 0, \"iops-read-max\": 0, \"iops-read-max-length\": 1, "
                + "\"iops-write\": 0, \"iops-write-max\": 0, \"iops-write-max-length\": 1, \"bps-total\": 0, \"bps-total-max\": 0, "
                + "\"bps-total-max-length\": 1, \"bps-read\": 0, \"bps-read-max\": 0, \"bps-read-max-length\": 1, "
                + "\"bps-write\": " + bpsWrite + ", \"bps-write-max\": 0, \"bps-write-max-length\": 1, \"iops-size\": 0}";
    }

    @Test
    void qomGetAndSetOfThrottleGroupLimits(@TempDir Path dir) throws Exception {
        start(dir, "--object", "throttle-group,id=tg,x-iops-total=100,x-bps-write=1048576", "--object", "iothread,id=io0");
        assertEquals(json(limitsJson(100, 0, 1, 1048576)), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"limits\"}"));
        assertEquals(json("100"), qmp.ok("qom-get", "{\"path\": \"/objects/tg\", \"property\": \"x-iops-total\"}"));
        assertEquals(json("1"), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"x-bps-read-max-length\"}"));

        // Members given change, the others stay (QEMU merges into the current configuration).
        assertEquals(json("{}"), qmp.ok("qom-set", "{\"path\": \"/objects/tg\", \"property\": \"limits\", "
                + "\"value\": {\"iops-total-max\": 400, \"iops-total-max-length\": 3}}"));
        assertEquals(json(limitsJson(100, 400, 3, 1048576)), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"limits\"}"));
        assertEquals(json("{}"), qmp.ok("qom-set", "{\"path\": \"tg\", \"property\": \"limits\", \"value\": {}}"));
        assertEquals(json("400"), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"x-iops-total-max\"}"));

        String set = "{\"path\": \"tg\", \"property\": \"limits\", \"value\": ";
        // Unknown objects and properties.
        qmp.fails("DeviceNotFound", "Device 'nope' not found", "qom-get", "{\"path\": \"nope\", \"property\": \"limits\"}");
        qmp.fails("DeviceNotFound", "Device '/objects/nope' not found", "qom-set",
                "{\"path\": \"/objects/nope\", \"property\": \"limits\", \"value\": {}}");
        qmp.fails("DeviceNotFound", "Device '/machine/tg' not found", "qom-get", "{\"path\": \"/machine/tg\", \"property\": \"limits\"}");
        qmp.fails(GE, "Property 'throttle-group.iops' not found", "qom-get", "{\"path\": \"tg\", \"property\": \"iops\"}");
        qmp.fails(GE, "Property 'throttle-group.x-iops' not found", "qom-set", "{\"path\": \"tg\", \"property\": \"x-iops\", \"value\": 1}");
        qmp.fails(GE, "Property 'iothread.limits' not found", "qom-get", "{\"path\": \"io0\", \"property\": \"limits\"}");
        // The single properties are read-only once the group exists, as in QEMU.
        qmp.fails(GE, "Property cannot be set after initialization", "qom-set",
                "{\"path\": \"tg\", \"property\": \"x-iops-total\", \"value\": 5}");
        // QAPI checks of the arguments and of the value.
        qmp.fails(GE, "Parameter 'value' is missing", "qom-set", "{\"path\": \"tg\", \"property\": \"limits\"}");
        qmp.fails(GE, "Parameter 'path' is missing", "qom-get", "{\"property\": \"limits\"}");
        qmp.fails(GE, "Parameter 'bogus' is unexpected", "qom-get", "{\"path\": \"tg\", \"property\": \"limits\", \"bogus\": 1}");
        qmp.fails(GE, "Invalid parameter type for 'path', expected: string", "qom-get", "{\"path\": 1, \"property\": \"limits\"}");
        qmp.fails(GE, "Invalid parameter type for 'limits', expected: object", "qom-set", set + "5}");
        qmp.fails(GE, "Invalid parameter type for 'limits', expected: object", "qom-set", set + "[1]}");
        qmp.fails(GE, "Invalid parameter type for 'limits.iops-total', expected: integer", "qom-set", set + "{\"iops-total\": \"1k\"}}");
        qmp.fails(GE, "Invalid parameter type for 'limits.bps-read', expected: integer", "qom-set", set + "{\"bps-read\": 1.5}}");
        qmp.fails(GE, "Parameter 'limits.iops' is unexpected", "qom-set", set + "{\"iops\": 1}}");
        qmp.fails(GE, "Parameter 'limits.x-iops-total' is unexpected", "qom-set", set + "{\"x-iops-total\": 1}}");
        // Invalid combinations, with QEMU's words.
        qmp.fails(GE, "bps_max/iops_max cannot be lower than bps/iops (iops-total-max)", "qom-set", set + "{\"iops-total-max\": 50}}");
        qmp.fails(GE, "bps/iops/max total values and read/write values cannot be used at the same time", "qom-set",
                set + "{\"iops-read\": 10}}");
        qmp.fails(GE, "bps/iops/max values must be within [0, 1000000000000000]", "qom-set", set + "{\"bps-write\": -1}}");
        qmp.fails(GE, "the burst length cannot be 0", "qom-set", set + "{\"iops-total-max-length\": 0}}");
        qmp.fails(GE, "iops-total-max-length value must be in the range [0, 4294967295]", "qom-set",
                set + "{\"iops-total-max-length\": 4294967296}}");
        qmp.fails(GE, "burst length set without burst rate (bps-write-max-length)", "qom-set", set + "{\"bps-write-max-length\": 2}}");
        // None of the failures changed anything.
        assertEquals(json(limitsJson(100, 400, 3, 1048576)), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"limits\"}"));
        // Total to read/write limits: valid only as one change.
        assertEquals(json("{}"), qmp.ok("qom-set", set + "{\"iops-total\": 0, \"iops-total-max\": 0, "
                + "\"iops-total-max-length\": 1, \"iops-read\": 10, \"iops-write\": 20}}"));
        assertEquals(json("10"), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"x-iops-read\"}"));
        assertEquals(json("0"), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"x-iops-total\"}"));
    }

    @Test
    void qomSetOfLimitsReleasesAndQueuesRequestsOfAFrontEnd(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("t.sock");
        start(dir, "--object", "throttle-group,id=tg,x-bps-total=512",
                "--blockdev", "null-co,node-name=n0,size=1M,read-zeroes=on",
                "--blockdev", "throttle,node-name=t0,throttle-group=tg,file=n0",
                "--export", "vhost-user-blk,id=e0,node-name=t0,addr.type=unix,addr.path=" + sock);
        ThrottleGroup g = daemon.nodes().throttleGroup("tg");
        DriverQueue q = frontEnd(sock, 1).queue(0);

        // At 512 B/s a first read of 4 KiB passes and uses up about 8 s of budget; the next read waits in the group.
        ok(q, BlkRequest.read(0, 4096));
        BlkRequest waiting = q.submit(BlkRequest.read(8, 512));
        awaitCondition("a request queued in the group", () -> g.queuedRequests() == 1);
        assertFalse(waiting.isDone());

        // Loosened over QMP: released at once (bounded wait on its completion), not after the old 8 s wait.
        long t0 = System.nanoTime();
        assertEquals(json("{}"), qmp.ok("qom-set", "{\"path\": \"tg\", \"property\": \"limits\", \"value\": {\"bps-total\": 100000000}}"));
        q.await(waiting, T);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertEquals(BLK_S_OK, waiting.status());
        assertTrue(ms < 4000, "released by the old timer, not the new limit: " + ms + " ms");
        assertEquals(0, g.queuedRequests());

        // Tightened: the next request that exceeds the new budget waits.
        assertEquals(json("{}"), qmp.ok("qom-set", "{\"path\": \"/objects/tg\", \"property\": \"limits\", \"value\": {\"bps-total\": 512}}"));
        ok(q, BlkRequest.read(16, 4096));   // the budget of the new limit (the old one's use has leaked away)
        BlkRequest next = q.submit(BlkRequest.read(24, 512));
        awaitCondition("the next request queued under the tightened limit", () -> g.queuedRequests() == 1);
        assertFalse(next.isDone());
        assertEquals(json("512"), qmp.ok("qom-get", "{\"path\": \"tg\", \"property\": \"x-bps-total\"}"));

        // No limit at all: it goes.
        assertEquals(json("{}"), qmp.ok("qom-set", "{\"path\": \"tg\", \"property\": \"limits\", \"value\": {\"bps-total\": 0}}"));
        q.await(next, T);
        assertEquals(BLK_S_OK, next.status());
        assertEquals(0, g.queuedRequests());
    }

    @Test
    void queryBlockstatsCountsTheTrafficOfAFrontEnd(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("s.sock");
        start(dir, "--blockdev", "null-co,node-name=n0,size=16M,read-zeroes=on",
                "--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=" + sock + ",num-queues=2,writable=on");
        VhostUserFrontend fe = frontEnd(sock, 2);
        DriverQueue q0 = fe.queue(0), q1 = fe.queue(1);
        for (int i = 0; i < 3; i++) ok(q0, BlkRequest.read(i * 8L, 4096));
        ok(q0, BlkRequest.write(64, new byte[512]));
        for (int i = 0; i < 2; i++) ok(q1, BlkRequest.write(128 + i * 16L, new byte[8192]));
        ok(q1, BlkRequest.read(256, 1024));
        ok(q1, BlkRequest.flush());
        ok(q1, BlkRequest.flush());

        JsonNode stats = qmp.ok("query-blockstats", null);
        assertEquals(1, stats.size(), stats.toString());
        JsonNode e0 = stats.get(0);
        assertEquals("e0", e0.get("device").asText());
        assertEquals("n0", e0.get("node-name").asText());
        JsonNode all = e0.get("stats"), s0 = e0.get("x-queues").get(0), s1 = e0.get("x-queues").get(1);
        assertEquals(2, e0.get("x-queues").size());
        // {rd_operations, rd_bytes, wr_operations, wr_bytes, flush_operations}: the export, queue 0, queue 1.
        long[][] expected = {{4, 3 * 4096 + 1024, 3, 512 + 2 * 8192, 2}, {3, 3 * 4096, 1, 512, 0}, {1, 1024, 2, 2 * 8192, 2}};
        JsonNode[] got = {all, s0, s1};
        String[] where = {"export", "queue 0", "queue 1"};
        for (int k = 0; k < 3; k++) {
            JsonNode s = got[k];
            String w = where[k] + ": " + s;
            assertEquals(expected[k][0], s.get("rd_operations").asLong(), w);
            assertEquals(expected[k][1], s.get("rd_bytes").asLong(), w);
            assertEquals(expected[k][2], s.get("wr_operations").asLong(), w);
            assertEquals(expected[k][3], s.get("wr_bytes").asLong(), w);
            assertEquals(expected[k][4], s.get("flush_operations").asLong(), w);
            for (String f : List.of("unmap_operations", "unmap_bytes", "failed_rd_operations", "failed_wr_operations",
                    "failed_flush_operations", "failed_unmap_operations")) {
                assertEquals(0, s.get(f).asLong(), f + " in " + w);
            }
            // Every kind that ran has spent time; kinds that did not, none.
            String[] kinds = {"rd", "wr", "flush"};
            long[] ops = {expected[k][0], expected[k][2], expected[k][4]};
            for (int i = 0; i < 3; i++) {
                long ns = s.get(kinds[i] + "_total_time_ns").asLong();
                if (ops[i] > 0) assertTrue(ns > 0, kinds[i] + "_total_time_ns in " + w);
                else assertEquals(0, ns, kinds[i] + "_total_time_ns in " + w);
            }
        }
        // The export's latency sums are the sums of its queues'.
        for (String f : List.of("rd_total_time_ns", "wr_total_time_ns", "flush_total_time_ns")) {
            assertEquals(s0.get(f).asLong() + s1.get(f).asLong(), all.get(f).asLong(), f);
        }
    }
}
