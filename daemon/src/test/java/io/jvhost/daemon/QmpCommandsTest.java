package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Every implemented QMP command, success and error cases, against a real daemon over real unix sockets. */
class QmpCommandsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String GE = "GenericError";
    private final List<AutoCloseable> toClose = new ArrayList<>();
    private Daemon daemon;
    private QmpClient qmp;       // monitor 0
    private QmpClient other;     // monitor 1: sees the same events

    @AfterEach
    void tearDown() throws Exception {
        for (int i = toClose.size() - 1; i >= 0; i--) toClose.get(i).close();
        if (daemon != null) daemon.close();
    }

    private void start(Path dir, String... extra) throws Exception {
        List<String> args = new ArrayList<>(List.of(
                "--chardev", "socket,id=m0,path=" + dir.resolve("m0.sock") + ",server=on,wait=off", "--monitor", "m0",
                "--chardev", "socket,id=m1,path=" + dir.resolve("m1.sock") + ",server=on,wait=off", "--monitor", "m1"));
        args.addAll(List.of(extra));
        daemon = Daemon.start(Options.parse(args.toArray(new String[0])));
        qmp = QmpClient.negotiated(dir.resolve("m0.sock"));
        toClose.add(qmp);
        other = QmpClient.negotiated(dir.resolve("m1.sock"));
        toClose.add(other);
    }

    private static JsonNode json(String s) throws IOException {
        return JSON.readTree(s);
    }

    private static List<Thread> threadsNamed(String prefix) {
        return Thread.getAllStackTraces().keySet().stream().filter(t -> t.getName().startsWith(prefix)).toList();
    }

    @Test
    void blockdevAddAndQueryNamedBlockNodes(@TempDir Path dir) throws Exception {
        start(dir);
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(4 << 20);
        }
        assertEquals(json("[]"), qmp.ok("query-named-block-nodes", null));
        assertEquals(json("{}"), qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 1048576, "
                + "\"read-zeroes\": true, \"latency-ns\": 0}"));
        assertEquals(json("{}"), qmp.ok("blockdev-add", "{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \"" + img
                + "\", \"read-only\": true, \"cache\": {\"direct\": false}, \"aio\": \"threads\", \"locking\": \"auto\"}"));

        JsonNode nodes = qmp.ok("query-named-block-nodes", "{\"flat\": true}");
        assertEquals(2, nodes.size(), nodes.toString());
        JsonNode n0 = nodes.get(0);
        assertEquals("n0", n0.get("node-name").asText());
        assertEquals("null-co", n0.get("drv").asText());
        assertEquals("null-co://", n0.get("file").asText());
        assertFalse(n0.get("ro").asBoolean());
        assertEquals(1048576, n0.get("image").get("virtual-size").asLong());
        JsonNode f0 = nodes.get(1);
        assertEquals("f0", f0.get("node-name").asText());
        assertEquals("file", f0.get("drv").asText());
        assertEquals(img.toString(), f0.get("file").asText());
        assertEquals(img.toString(), f0.get("image").get("filename").asText());
        assertEquals("file", f0.get("image").get("format").asText());
        assertEquals(4 << 20, f0.get("image").get("virtual-size").asLong());
        assertTrue(f0.get("ro").asBoolean());
        assertEquals(json("{\"writeback\": true, \"direct\": false, \"no-flush\": false}"), f0.get("cache"));
        for (String k : List.of("backing_file_depth", "bps", "iops", "write_threshold")) assertEquals(0, f0.get(k).asInt(), k);

        qmp.fails(GE, "duplicate node name 'n0'", "blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 512}");
        qmp.fails(GE, "Parameter 'node-name' is missing", "blockdev-add", "{\"driver\": \"null-co\", \"size\": 512}");
        qmp.fails(GE, "Parameter 'driver' is missing", "blockdev-add", "{\"node-name\": \"x\"}");
        qmp.fails(GE, "driver 'qcow2' is not supported (only 'file', 'null-co', 'raw' and 'throttle')", "blockdev-add",
                "{\"driver\": \"qcow2\", \"node-name\": \"x\", \"file\": \"f0\"}");
        qmp.fails(GE, "Parameter 'discard' is unexpected", "blockdev-add",
                "{\"driver\": \"null-co\", \"node-name\": \"x\", \"size\": 512, \"discard\": \"unmap\"}");
        qmp.fails(GE, "Parameter 'filename' is unexpected", "blockdev-add",
                "{\"driver\": \"null-co\", \"node-name\": \"x\", \"filename\": \"/x\"}");
        qmp.fails(GE, "Invalid parameter type for 'size', expected: integer", "blockdev-add",
                "{\"driver\": \"null-co\", \"node-name\": \"x\", \"size\": \"1G\"}");
        qmp.fails(GE, "Invalid parameter type for 'read-only', expected: boolean", "blockdev-add",
                "{\"driver\": \"null-co\", \"node-name\": \"x\", \"size\": 512, \"read-only\": \"on\"}");
        qmp.fails(GE, "Parameter 'cache.no-flush' is unexpected", "blockdev-add",
                "{\"driver\": \"null-co\", \"node-name\": \"x\", \"size\": 512, \"cache\": {\"no-flush\": true}}");
        qmp.fails(GE, "Parameter 'aio' does not accept value 'posix'", "blockdev-add",
                "{\"driver\": \"file\", \"node-name\": \"x\", \"filename\": \"" + img + "\", \"aio\": \"posix\"}");
        qmp.fails(GE, "aio 'native' is not supported (use aio=threads or aio=io_uring)", "blockdev-add",
                "{\"driver\": \"file\", \"node-name\": \"x\", \"filename\": \"" + img + "\", \"aio\": \"native\"}");
        qmp.fails(GE, "option 'size' is required for driver 'null-co'", "blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"x\"}");
        // aio=io_uring opens (read-only, locking=off: it coexists with f0's image locks) and goes away again.
        assertEquals(json("{}"), qmp.ok("blockdev-add", "{\"driver\": \"file\", \"node-name\": \"u\", \"filename\": \"" + img
                + "\", \"read-only\": true, \"locking\": \"off\", \"aio\": \"io_uring\"}"));
        assertEquals(json("{}"), qmp.ok("blockdev-del", "{\"node-name\": \"u\"}"));
        JsonNode r = qmp.execute("blockdev-add", "{\"driver\": \"file\", \"node-name\": \"x\", \"filename\": \"" + dir.resolve("missing.img") + "\"}");
        assertTrue(r.get("error").get("desc").asText().contains("missing.img"), r.toString());
        // Nothing of the failed attempts remains.
        assertEquals(2, qmp.ok("query-named-block-nodes", null).size());
    }

    private String exportArgs(String id, String node, Path sock, String more) {
        return "{\"type\": \"vhost-user-blk\", \"id\": \"" + id + "\", \"node-name\": \"" + node
                + "\", \"addr\": {\"type\": \"unix\", \"path\": \"" + sock + "\"}" + more + "}";
    }

    private long virtualSize(String node) throws Exception {
        for (JsonNode n : qmp.ok("query-named-block-nodes", null)) {
            if (node.equals(n.get("node-name").asText())) return n.get("image").get("virtual-size").asLong();
        }
        throw new AssertionError("no node " + node);
    }

    @Test
    void blockResizeOfAnExportedNode(@TempDir Path dir) throws Exception {
        start(dir);
        Path sock = dir.resolve("e0.sock");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 1048576}");
        qmp.ok("blockdev-add", "{\"driver\": \"raw\", \"node-name\": \"r0\", \"file\": \"n0\"}");
        qmp.ok("blockdev-add", "{\"driver\": \"raw\", \"node-name\": \"w0\", \"file\": \"n0\", \"size\": 4096}");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"ro\", \"size\": 4096, \"read-only\": true}");
        qmp.ok("block-export-add", exportArgs("e0", "r0", sock, ", \"writable\": true"));

        // The reply comes after the resize: the raw node above follows its child at once.
        assertEquals(json("{}"), qmp.ok("block_resize", "{\"node-name\": \"n0\", \"size\": 2097152}"));
        assertEquals(2097152, virtualSize("n0"));
        assertEquals(2097152, virtualSize("r0"));
        assertEquals(json("{}"), qmp.ok("block_resize", "{\"device\": \"\", \"node-name\": \"r0\", \"size\": 524288}"));
        assertEquals(524288, virtualSize("n0"));
        assertEquals(524288, virtualSize("r0"));
        // Still served after the drained section.
        assertTrue((VhostUserProbe.getFeatures(sock, 10_000) & VhostUserProbe.VIRTIO_F_VERSION_1) != 0);

        qmp.fails(GE, "Cannot find device='e0' nor node-name=''", "block_resize", "{\"device\": \"e0\", \"size\": 512}");
        qmp.fails(GE, "Cannot find device='' nor node-name='nope'", "block_resize", "{\"node-name\": \"nope\", \"size\": 512}");
        qmp.fails(GE, "Parameter 'size' expects a >0 size", "block_resize", "{\"node-name\": \"n0\", \"size\": -1}");
        qmp.fails(GE, "Parameter 'size' is missing", "block_resize", "{\"node-name\": \"n0\"}");
        qmp.fails(GE, "Cannot resize a raw node with size/offset", "block_resize", "{\"node-name\": \"w0\", \"size\": 8192}");
        qmp.fails(GE, "Node 'ro' is read only", "block_resize", "{\"node-name\": \"ro\", \"size\": 8192}");
        assertEquals(524288, virtualSize("n0"));
        assertEquals(4096, virtualSize("w0"));
    }

    @Test
    void exportAddedAtRunTimeIsServedAndDeletedWhileAFrontEndIsAttached(@TempDir Path dir) throws Exception {
        start(dir);
        Path sock = dir.resolve("e0.sock");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 67108864}");
        qmp.ok("object-add", "{\"qom-type\": \"iothread\", \"id\": \"qio0\"}");
        assertEquals(json("{}"), qmp.ok("block-export-add", exportArgs("e0", "n0", sock,
                ", \"writable\": true, \"num-queues\": 2, \"iothread\": [\"qio0\"], \"logical-block-size\": 4096, "
                        + "\"writethrough\": false, \"fixed-iothread\": true, \"serial\": \"SN0\"")));
        assertEquals(json("[{\"type\": \"vhost-user-blk\", \"id\": \"e0\", \"node-name\": \"n0\", \"shutting-down\": false}]"),
                qmp.ok("query-block-exports", null));
        // query-blockstats: one entry per export, QEMU's BlockDeviceStats summed over its queues, and per queue.
        JsonNode stats = qmp.ok("query-blockstats", null);
        assertEquals(1, stats.size(), stats.toString());
        assertEquals("e0", stats.get(0).get("device").asText());
        assertEquals("n0", stats.get(0).get("node-name").asText());
        for (String f : List.of("rd_bytes", "wr_bytes", "unmap_bytes", "rd_operations", "wr_operations",
                "flush_operations", "unmap_operations", "rd_total_time_ns", "wr_total_time_ns", "flush_total_time_ns",
                "failed_rd_operations", "failed_wr_operations")) {
            assertEquals(0, stats.get(0).get("stats").get(f).asLong(), f + " in " + stats);
        }
        assertEquals(2, stats.get(0).get("x-queues").size(), "one entry per virtqueue");
        qmp.fails(GE, "Parameter 'bogus' is unexpected", "query-blockstats", "{\"bogus\": 1}");
        // Served: a front-end gets its answer from the main loop.
        assertTrue((VhostUserProbe.getFeatures(sock, 10_000) & VhostUserProbe.VIRTIO_F_VERSION_1) != 0);
        assertTrue(threadsNamed("e0-vq").isEmpty(), "the export uses qio0, no threads of its own");

        qmp.fails(GE, "object 'qio0' is in use, can not be deleted", "object-del", "{\"id\": \"qio0\"}");

        // Delete it while a front-end is attached: the rings stop, the front-end is disconnected, then the event.
        try (SocketChannel frontEnd = VhostUserProbe.attach(sock, 10_000)) {
            assertEquals(json("{}"), qmp.ok("block-export-del", "{\"id\": \"e0\", \"mode\": \"hard\"}"));
            JsonNode ev = qmp.event("BLOCK_EXPORT_DELETED");
            assertEquals(json("{\"id\": \"e0\"}"), ev.get("data"));
            assertEquals(json("{\"id\": \"e0\"}"), other.event("BLOCK_EXPORT_DELETED").get("data"));
            // The event comes after the disconnect: end of stream is already there.
            VhostUserProbe.awaitDisconnect(frontEnd, 10_000);
        }
        assertEquals(json("[]"), qmp.ok("query-block-exports", null));
        assertFalse(Files.exists(sock, LinkOption.NOFOLLOW_LINKS), "socket left behind");
        qmp.fails(GE, "Export 'e0' is not found", "block-export-del", "{\"id\": \"e0\"}");

        // The iothread is free now; the same id and path can be used again (own iothreads this time).
        assertEquals(json("{}"), qmp.ok("object-del", "{\"id\": \"qio0\"}"));
        qmp.ok("block-export-add", exportArgs("e0", "n0", sock, ""));
        assertEquals(1, threadsNamed("e0-vq0").size());
        assertTrue(VhostUserProbe.getFeatures(sock, 10_000) != 0);
        qmp.ok("block-export-del", "{\"id\": \"e0\"}");   // mode safe (the default) on an idle export
        qmp.event("BLOCK_EXPORT_DELETED");
        for (Thread t : threadsNamed("e0-vq")) {
            t.join(10_000);
            assertFalse(t.isAlive(), t.getName() + " still runs after the export was deleted");
        }
    }

    @Test
    void blockExportAddErrors(@TempDir Path dir) throws Exception {
        start(dir);
        Path sock = dir.resolve("e.sock");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 1048576}");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"ro\", \"size\": 1048576, \"read-only\": true}");
        qmp.ok("block-export-add", exportArgs("e0", "n0", sock, ", \"writable\": true"));

        qmp.fails(GE, "export id 'e0' is already in use", "block-export-add", exportArgs("e0", "n0", dir.resolve("x.sock"), ""));
        qmp.fails(GE, "node 'nope' not found", "block-export-add", exportArgs("e1", "nope", dir.resolve("x.sock"), ""));
        qmp.fails(GE, "iothread 'nope' not found", "block-export-add", exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"iothread\": \"nope\""));
        qmp.fails(GE, "node 'ro' is read-only, it cannot be exported writable", "block-export-add",
                exportArgs("e1", "ro", dir.resolve("x.sock"), ", \"writable\": true"));
        qmp.fails(GE, "node 'n0' is already exported writable by 'e0'", "block-export-add",
                exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"writable\": true"));
        qmp.fails(GE, "export 'e1' listens on " + sock + " like export 'e0'", "block-export-add", exportArgs("e1", "n0", sock, ""));
        qmp.fails(GE, "export 'e1' listens on " + dir.resolve("m0.sock") + " like QMP monitor 'm0'", "block-export-add",
                exportArgs("e1", "n0", dir.resolve("m0.sock"), ""));
        qmp.fails(GE, "export type 'nbd' is not supported (only 'vhost-user-blk')", "block-export-add",
                "{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": \"n0\"}");
        qmp.fails(GE, "addr.type 'inet' is not supported (only 'unix' and 'fd')", "block-export-add",
                "{\"type\": \"vhost-user-blk\", \"id\": \"e1\", \"node-name\": \"n0\", \"addr\": {\"type\": \"inet\", \"host\": \"::\"}}");
        qmp.fails(GE, "Parameter 'addr' is missing", "block-export-add", "{\"type\": \"vhost-user-blk\", \"id\": \"e1\", \"node-name\": \"n0\"}");
        qmp.fails(GE, "Parameter 'addr.path' is missing", "block-export-add",
                "{\"type\": \"vhost-user-blk\", \"id\": \"e1\", \"node-name\": \"n0\", \"addr\": {\"type\": \"unix\"}}");
        qmp.fails(GE, "parameter 'num-queues' must be between 1 and 64, not 0", "block-export-add",
                exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"num-queues\": 0"));
        qmp.fails(GE, "Parameter 'num-queues' expects uint16", "block-export-add",
                exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"num-queues\": 70000"));
        qmp.fails(GE, "parameter 'logical-block-size' must be a power of two from 512 to 64k, not 1000", "block-export-add",
                exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"logical-block-size\": 1000"));
        qmp.fails(GE, "Invalid parameter type for 'writable', expected: boolean", "block-export-add",
                exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"writable\": \"on\""));
        qmp.fails(GE, "writethrough=on is not supported yet", "block-export-add",
                exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"writethrough\": true"));
        qmp.fails(GE, "Parameter 'bogus' is unexpected", "block-export-add", exportArgs("e1", "n0", dir.resolve("x.sock"), ", \"bogus\": 1"));
        qmp.fails(GE, "invalid id '1e' (a letter, then letters, digits, '-', '.', '_')", "block-export-add",
                exportArgs("1e", "n0", dir.resolve("x.sock"), ""));
        qmp.fails(GE, "parameter 'addr.str' expects a non-negative integer, not 'fdname'", "block-export-add",
                "{\"type\": \"vhost-user-blk\", \"id\": \"e1\", \"node-name\": \"n0\", \"addr\": {\"type\": \"fd\", \"str\": \"fdname\"}}");
        Path notASocket = dir.resolve("file.txt");
        Files.writeString(notASocket, "keep");
        qmp.fails(GE, "export 'e1': " + notASocket + " exists and is not a socket", "block-export-add", exportArgs("e1", "n0", notASocket, ""));
        assertEquals("keep", Files.readString(notASocket));
        Path noDir = dir.resolve("no-such-dir").resolve("s.sock");
        JsonNode r = qmp.execute("block-export-add", exportArgs("e1", "n0", noDir, ""));
        assertTrue(r.get("error").get("desc").asText().startsWith("export 'e1': cannot listen on " + noDir + ": "), r.toString());
        // A failed export leaves no threads (an event loop's thread exits just after its close() returns).
        for (Thread t : threadsNamed("e1-vq")) {
            t.join(10_000);
            assertFalse(t.isAlive(), t.getName() + " still runs after a failed block-export-add");
        }

        assertEquals(1, qmp.ok("query-block-exports", null).size());
        qmp.fails(GE, "Export 'nope' is not found", "block-export-del", "{\"id\": \"nope\"}");
        qmp.fails(GE, "Parameter 'mode' does not accept value 'soft'", "block-export-del", "{\"id\": \"e0\", \"mode\": \"soft\"}");
        qmp.fails(GE, "Parameter 'id' is missing", "block-export-del", "{}");
    }

    @Test
    void objectAddDelAndQueryIothreads(@TempDir Path dir) throws Exception {
        start(dir, "--object", "iothread,id=cli0,poll-max-ns=32768");
        assertEquals(json("{}"), qmp.ok("object-add", "{\"qom-type\": \"iothread\", \"id\": \"qio1\", \"poll-max-ns\": 1000, "
                + "\"poll-grow\": 2, \"poll-shrink\": 3, \"aio-max-batch\": 4}"));
        JsonNode list = qmp.ok("query-iothreads", null);
        assertEquals(2, list.size(), list.toString());
        assertEquals("cli0", list.get(0).get("id").asText());
        assertEquals(32768, list.get(0).get("poll-max-ns").asLong());
        JsonNode t = list.get(1);
        assertEquals("qio1", t.get("id").asText());
        assertEquals(1000, t.get("poll-max-ns").asLong());
        assertEquals(2, t.get("poll-grow").asLong());
        assertEquals(3, t.get("poll-shrink").asLong());
        assertEquals(4, t.get("aio-max-batch").asLong());
        // thread-id is the kernel's id of that thread: its name there is the iothread's.
        long tid = t.get("thread-id").asLong();
        assertTrue(tid > 0, t.toString());
        String comm = Files.readString(Path.of("/proc/self/task/" + tid + "/comm")).strip();
        assertTrue(comm.startsWith("qio1"), comm);

        qmp.fails(GE, "id 'qio1' is already in use", "object-add", "{\"qom-type\": \"iothread\", \"id\": \"qio1\"}");
        qmp.fails(GE, "object type 'memory-backend-memfd' is not supported (only 'iothread' and 'throttle-group')",
                "object-add", "{\"qom-type\": \"memory-backend-memfd\", \"id\": \"mem0\"}");
        qmp.fails(GE, "Parameter 'id' is missing", "object-add", "{\"qom-type\": \"iothread\"}");
        qmp.fails(GE, "Parameter 'qom-type' is missing", "object-add", "{\"id\": \"x\"}");
        qmp.fails(GE, "parameter 'poll-max-ns' expects a non-negative integer, not '-1'", "object-add",
                "{\"qom-type\": \"iothread\", \"id\": \"x\", \"poll-max-ns\": -1}");
        qmp.fails(GE, "Parameter 'props' is unexpected", "object-add", "{\"qom-type\": \"iothread\", \"id\": \"x\", \"props\": {}}");
        qmp.fails(GE, "invalid id '-x' (a letter, then letters, digits, '-', '.', '_')", "object-add", "{\"qom-type\": \"iothread\", \"id\": \"-x\"}");
        qmp.fails(GE, "object 'nope' not found", "object-del", "{\"id\": \"nope\"}");

        Thread thread = threadsNamed("qio1").get(0);
        assertEquals(json("{}"), qmp.ok("object-del", "{\"id\": \"qio1\"}"));
        thread.join(10_000);
        assertFalse(thread.isAlive(), "object-del returned before the iothread ended");
        assertEquals(1, qmp.ok("query-iothreads", null).size());
        assertEquals(json("{}"), qmp.ok("object-del", "{\"id\": \"cli0\"}"));   // command-line objects too
        assertEquals(json("[]"), qmp.ok("query-iothreads", null));
    }

    @Test
    void commandLineStateIsManagedOverQmp(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("cli.sock");
        start(dir, "--blockdev", "null-co,node-name=cn,size=1M", "--object", "iothread,id=cio",
                "--export", "vhost-user-blk,id=ce,node-name=cn,addr.type=unix,addr.path=" + sock + ",iothread=cio");
        assertEquals(json("[{\"type\": \"vhost-user-blk\", \"id\": \"ce\", \"node-name\": \"cn\", \"shutting-down\": false}]"),
                qmp.ok("query-block-exports", null));
        assertEquals("cn", qmp.ok("query-named-block-nodes", null).get(0).get("node-name").asText());
        qmp.fails(GE, "object 'cio' is in use, can not be deleted", "object-del", "{\"id\": \"cio\"}");
        qmp.ok("block-export-del", "{\"id\": \"ce\"}");
        assertEquals(json("{\"id\": \"ce\"}"), qmp.event("BLOCK_EXPORT_DELETED").get("data"));
        assertEquals(json("[]"), qmp.ok("query-block-exports", null));
        assertTrue(daemon.exports().isEmpty());
        qmp.ok("object-del", "{\"id\": \"cio\"}");
    }

    private static String names(JsonNode nodes) {
        List<String> n = new ArrayList<>();
        for (JsonNode x : nodes) n.add(x.get("node-name").asText());
        return String.join(",", n);
    }

    @Test
    void blockdevDelRefusesNodesInUseAndDeletesFreeOnes(@TempDir Path dir) throws Exception {
        start(dir, "--blockdev", "null-co,node-name=cli,size=1M");
        Path sock = dir.resolve("e0.sock");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 1048576}");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"base\", \"size\": 1048576}");
        qmp.ok("blockdev-add", "{\"driver\": \"raw\", \"node-name\": \"r\", \"file\": \"base\", \"offset\": 512, "
                + "\"size\": 4096}");
        qmp.ok("block-export-add", exportArgs("e0", "n0", sock, ", \"writable\": true"));
        assertEquals("cli,n0,base,r", names(qmp.ok("query-named-block-nodes", null)));
        assertEquals(4096, qmp.ok("query-named-block-nodes", null).get(3).get("image").get("virtual-size").asLong());

        qmp.fails(GE, "Failed to find node with node-name='nope'", "blockdev-del", "{\"node-name\": \"nope\"}");
        qmp.fails(GE, "Parameter 'node-name' is missing", "blockdev-del", "{}");
        qmp.fails(GE, "Parameter 'force' is unexpected", "blockdev-del", "{\"node-name\": \"n0\", \"force\": true}");
        qmp.fails(GE, "Node n0 is in use", "blockdev-del", "{\"node-name\": \"n0\"}");          // an export's backend
        qmp.fails(GE, "Block device base is in use", "blockdev-del", "{\"node-name\": \"base\"}"); // a parent node
        qmp.fails(GE, "Parameter 'file': inline child definitions are not supported; create the child with its own "
                        + "blockdev-add and give its node-name", "blockdev-add",
                "{\"driver\": \"raw\", \"node-name\": \"r2\", \"file\": {\"driver\": \"null-co\", \"size\": 512}}");
        qmp.fails(GE, "Invalid parameter type for 'file', expected: BlockdevRef", "blockdev-add",
                "{\"driver\": \"raw\", \"node-name\": \"r2\", \"file\": 1}");
        qmp.fails(GE, "option 'file': no node named 'nope'", "blockdev-add",
                "{\"driver\": \"raw\", \"node-name\": \"r2\", \"file\": \"nope\"}");
        assertEquals("cli,n0,base,r", names(qmp.ok("query-named-block-nodes", null)));

        // Parent first, then the child; command-line nodes too.
        assertEquals(json("{}"), qmp.ok("blockdev-del", "{\"node-name\": \"r\"}"));
        assertEquals(json("{}"), qmp.ok("blockdev-del", "{\"node-name\": \"base\"}"));
        assertEquals(json("{}"), qmp.ok("blockdev-del", "{\"node-name\": \"cli\"}"));
        assertEquals("n0", names(qmp.ok("query-named-block-nodes", null)));
        qmp.fails(GE, "Failed to find node with node-name='base'", "blockdev-del", "{\"node-name\": \"base\"}");
        // The name is free again.
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"base\", \"size\": 512}");
        assertEquals(512, qmp.ok("query-named-block-nodes", null).get(1).get("image").get("virtual-size").asLong());

        // The exported node is free once the export is gone (not while it shuts down: the event says when).
        qmp.ok("block-export-del", "{\"id\": \"e0\"}");
        qmp.event("BLOCK_EXPORT_DELETED");
        assertEquals(json("{}"), qmp.ok("blockdev-del", "{\"node-name\": \"n0\"}"));
        assertEquals("base", names(qmp.ok("query-named-block-nodes", null)));
        qmp.fails(GE, "node 'n0' not found", "block-export-add", exportArgs("e1", "n0", sock, ""));
    }

    @Test
    void throttleGroupObjectsAddedUsedAndDeleted(@TempDir Path dir) throws Exception {
        start(dir, "--object", "throttle-group,id=ctg,x-iops-total=100", "--object", "iothread,id=io0");
        assertEquals(json("{}"), qmp.ok("object-add", "{\"qom-type\": \"throttle-group\", \"id\": \"tg0\", \"limits\": "
                + "{\"iops-total\": 1000, \"iops-total-max\": 2000, \"iops-total-max-length\": 2, \"bps-write\": 1048576, "
                + "\"iops-size\": 4096}}"));
        assertEquals(json("{}"), qmp.ok("object-add", "{\"qom-type\": \"throttle-group\", \"id\": \"tg1\", "
                + "\"x-iops-read\": 500, \"x-bps-total\": 10485760, \"x-bps-total-max\": 20971520}"));
        assertEquals(json("{}"), qmp.ok("object-add", "{\"qom-type\": \"throttle-group\", \"id\": \"tg2\"}"));   // no limits

        String tg = "{\"qom-type\": \"throttle-group\", \"id\": \"x\", ";
        qmp.fails(GE, "id 'tg0' is already in use", "object-add", "{\"qom-type\": \"throttle-group\", \"id\": \"tg0\"}");
        qmp.fails(GE, "id 'ctg' is already in use", "object-add", "{\"qom-type\": \"throttle-group\", \"id\": \"ctg\"}");
        qmp.fails(GE, "id 'io0' is already in use", "object-add", "{\"qom-type\": \"throttle-group\", \"id\": \"io0\"}");
        qmp.fails(GE, "id 'tg0' is already in use", "object-add", "{\"qom-type\": \"iothread\", \"id\": \"tg0\"}");
        qmp.fails(GE, "invalid id '0x' (a letter, then letters, digits, '-', '.', '_')", "object-add",
                "{\"qom-type\": \"throttle-group\", \"id\": \"0x\"}");
        qmp.fails(GE, "bps/iops/max total values and read/write values cannot be used at the same time", "object-add",
                tg + "\"limits\": {\"bps-total\": 1, \"bps-read\": 1}}");
        qmp.fails(GE, "Property values cannot be negative", "object-add", tg + "\"x-iops-total\": -1}");
        qmp.fails(GE, "bps/iops/max values must be within [0, 1000000000000000]", "object-add",
                tg + "\"limits\": {\"iops-write\": -5}}");
        qmp.fails(GE, "bps/iops/max values must be within [0, 1000000000000000]", "object-add",
                tg + "\"limits\": {\"iops-write\": 1000000000000001}}");
        qmp.fails(GE, "options 'x-iops-total' and 'limits.iops-total' both set", "object-add",
                tg + "\"x-iops-total\": 1, \"limits\": {\"iops-total\": 2}}");
        qmp.fails(GE, "iops size requires an iops value to be set", "object-add", tg + "\"limits\": {\"iops-size\": 512}}");
        qmp.fails(GE, "bps_max/iops_max require corresponding bps/iops values (iops-read-max)", "object-add",
                tg + "\"x-iops-read-max\": 10}");
        qmp.fails(GE, "Parameter 'limits.iops' is unexpected", "object-add", tg + "\"limits\": {\"iops\": 1}}");
        qmp.fails(GE, "Parameter 'iops-total' is unexpected", "object-add", tg + "\"iops-total\": 1}");
        qmp.fails(GE, "Invalid parameter type for 'limits', expected: object", "object-add", tg + "\"limits\": 5}");
        qmp.fails(GE, "Invalid parameter type for 'x-bps-read', expected: integer", "object-add", tg + "\"x-bps-read\": \"1M\"}");
        qmp.fails(GE, "Parameter 'poll-max-ns' is unexpected", "object-add", tg + "\"poll-max-ns\": 1}");
        qmp.fails(GE, "object 'x' not found", "object-del", "{\"id\": \"x\"}");   // none of the failures left a group

        // Throttle nodes bind to groups; a bound group cannot go.
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 1048576}");
        assertEquals(json("{}"), qmp.ok("blockdev-add", "{\"driver\": \"throttle\", \"node-name\": \"t0\", "
                + "\"throttle-group\": \"tg0\", \"file\": \"n0\"}"));
        qmp.ok("blockdev-add", "{\"driver\": \"throttle\", \"node-name\": \"t1\", \"throttle-group\": \"ctg\", \"file\": \"t0\"}");
        qmp.fails(GE, "option 'throttle-group': no throttle group 'nope'", "blockdev-add",
                "{\"driver\": \"throttle\", \"node-name\": \"t2\", \"throttle-group\": \"nope\", \"file\": \"n0\"}");
        qmp.fails(GE, "Parameter 'throttle-group' is missing", "blockdev-add",
                "{\"driver\": \"throttle\", \"node-name\": \"t2\", \"file\": \"n0\"}");
        qmp.fails(GE, "option 'throttle-group': no throttle group 'io0'", "blockdev-add",
                "{\"driver\": \"throttle\", \"node-name\": \"t2\", \"throttle-group\": \"io0\", \"file\": \"n0\"}");
        assertEquals("throttle", qmp.ok("query-named-block-nodes", null).get(1).get("drv").asText());

        qmp.fails(GE, "object 'tg0' is in use, can not be deleted", "object-del", "{\"id\": \"tg0\"}");
        qmp.fails(GE, "object 'ctg' is in use, can not be deleted", "object-del", "{\"id\": \"ctg\"}");
        qmp.fails(GE, "Block device t0 is in use", "blockdev-del", "{\"node-name\": \"t0\"}");
        qmp.ok("blockdev-del", "{\"node-name\": \"t1\"}");
        assertEquals(json("{}"), qmp.ok("object-del", "{\"id\": \"ctg\"}"));
        qmp.fails(GE, "object 'tg0' is in use, can not be deleted", "object-del", "{\"id\": \"tg0\"}");
        qmp.ok("blockdev-del", "{\"node-name\": \"t0\"}");
        assertEquals(json("{}"), qmp.ok("object-del", "{\"id\": \"tg0\"}"));
        qmp.fails(GE, "object 'tg0' not found", "object-del", "{\"id\": \"tg0\"}");
        qmp.fails(GE, "option 'throttle-group': no throttle group 'tg0'", "blockdev-add",
                "{\"driver\": \"throttle\", \"node-name\": \"t0\", \"throttle-group\": \"tg0\", \"file\": \"n0\"}");
        // The id is free for either kind again; deleting a group leaves the iothreads alone.
        qmp.ok("object-add", "{\"qom-type\": \"iothread\", \"id\": \"tg0\"}");
        qmp.ok("object-del", "{\"id\": \"tg1\"}");
        qmp.ok("object-del", "{\"id\": \"tg2\"}");
        assertEquals(2, qmp.ok("query-iothreads", null).size());
    }
}
