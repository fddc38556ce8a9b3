package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.jvhost.daemon.qmp.Json;
import io.jvhost.daemon.qmp.QmpServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The QMP protocol over real unix sockets: greeting, negotiation, ids, errors, limits, events, several monitors. */
class QmpProtocolTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final List<AutoCloseable> toClose = new ArrayList<>();
    private Daemon daemon;
    private final CountDownLatch quit = new CountDownLatch(1);

    @AfterEach
    void tearDown() throws Exception {
        for (int i = toClose.size() - 1; i >= 0; i--) toClose.get(i).close();
        if (daemon != null) daemon.close();
    }

    private Path[] start(Path dir, int monitors, QmpServer.Limits limits) throws Exception {
        List<String> args = new ArrayList<>();
        Path[] socks = new Path[monitors];
        for (int i = 0; i < monitors; i++) {
            socks[i] = dir.resolve("q" + i + ".sock");
            args.addAll(List.of("--chardev", "socket,id=qmp" + i + ",path=" + socks[i] + ",server=on,wait=off", "--monitor", "chardev=qmp" + i));
        }
        daemon = Daemon.start(Options.parse(args.toArray(new String[0])), quit::countDown, limits);
        return socks;
    }

    private QmpClient client(QmpClient c) {
        toClose.add(c);
        return c;
    }

    private static JsonNode json(String s) throws IOException {
        return JSON.readTree(s);
    }

    @Test
    void greetingAndCapabilitiesNegotiation(@TempDir Path dir) throws Exception {
        Path q = start(dir, 1, QmpServer.Limits.DEFAULT)[0];
        assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(q, LinkOption.NOFOLLOW_LINKS));
        QmpClient c = client(QmpClient.connect(q));
        String version = "{\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"jvhost " + Main.version() + "\"}";
        // Byte for byte as QEMU writes it: ": " and ", " separators, CR LF.
        assertEquals("{\"QMP\": {\"version\": " + version + ", \"capabilities\": []}}\r\n", c.rawLines.poll());

        String negotiate = "Expecting capabilities negotiation with 'qmp_capabilities'";
        c.fails("CommandNotFound", negotiate, "query-version", null);
        c.fails("CommandNotFound", negotiate, "no-such-command", null);
        c.fails("CommandNotFound", negotiate, "quit", null);
        c.fails("GenericError", "Capability 'oob' not available", "qmp_capabilities", "{\"enable\": [\"oob\"]}");
        c.fails("GenericError", "Parameter 'enable[0]' does not accept value 'x'", "qmp_capabilities", "{\"enable\": [\"x\"]}");
        assertEquals(1, quit.getCount(), "quit must not run before negotiation");

        assertEquals(json("{}"), c.ok("qmp_capabilities", "{}"));
        c.fails("CommandNotFound", "Capabilities negotiation is already complete, command ignored", "qmp_capabilities", null);
        assertEquals(json(version), c.ok("query-version", null));

        List<String> names = new ArrayList<>();
        for (JsonNode n : c.ok("query-commands", null)) names.add(n.get("name").asText());
        assertEquals(List.of("qmp_capabilities", "query-version", "query-commands", "quit", "blockdev-add", "blockdev-del",
                "query-named-block-nodes", "block-export-add", "block-export-del", "query-block-exports",
                "block_resize", "query-blockstats", "object-add", "object-del", "query-iothreads", "qom-set", "qom-get", "blockdev-mirror", "query-jobs", "query-block-jobs",
                "job-pause", "job-resume", "job-cancel", "job-complete", "job-dismiss"), names);
    }

    @Test
    void idIsEchoedAndErrorsFollowQemu(@TempDir Path dir) throws Exception {
        QmpClient c = client(QmpClient.negotiated(start(dir, 1, QmpServer.Limits.DEFAULT)[0]));
        for (String id : List.of("\"abc\"", "5", "{\"x\": [1, 2.5, null]}", "null", "[]")) {
            JsonNode r = c.send("{\"execute\": \"query-version\", \"id\": " + id + "}");
            assertTrue(r.has("return"), r.toString());
            assertEquals(json(id), r.get("id"), r.toString());
        }
        String rawId = c.rawLines.stream().reduce((a, b) -> b).orElseThrow();
        assertTrue(rawId.endsWith(", \"id\": []}\r\n"), rawId);   // "return" first, then "id", as QEMU

        assertError(c, "{\"execute\": 1, \"id\": 7}", "GenericError", "QMP input member 'execute' must be a string", json("7"));
        assertError(c, "{\"arguments\": {}, \"id\": \"a\"}", "GenericError", "QMP input lacks member 'execute'", json("\"a\""));
        assertError(c, "{\"execute\": \"query-version\", \"arguments\": [], \"id\": 1}", "GenericError",
                "QMP input member 'arguments' must be an object", json("1"));
        assertError(c, "{\"execute\": \"query-version\", \"foo\": 1}", "GenericError", "QMP input member 'foo' is unexpected", null);
        assertError(c, "{\"exec-oob\": \"query-version\"}", "GenericError", "QMP input member 'exec-oob' is unexpected", null);
        assertError(c, "{\"execute\": \"nope\", \"id\": \"n\"}", "CommandNotFound", "The command nope has not been found", json("\"n\""));
        assertError(c, "{\"execute\": \"query-version\", \"arguments\": {\"x\": 1}, \"id\": 2}", "GenericError",
                "Parameter 'x' is unexpected", json("2"));
        assertError(c, "[1, 2]", "GenericError", "QMP input must be a JSON object", null);
        assertError(c, "123", "GenericError", "QMP input must be a JSON object", null);
        assertError(c, "\"a string\"", "GenericError", "QMP input must be a JSON object", null);

        // Malformed JSON: an error without id, and the session goes on.
        for (String bad : List.of("{\"execute\": }", "foo", "}", "{\"execute\": \"query-version\", \"execute\": \"quit\"}",
                "{\"execute\": \"query-version\" \"id\": 1}", "{\"a\": \"\u0001\"}")) {
            JsonNode r = c.send(bad);
            assertTrue(r.has("error"), bad + " -> " + r);
            assertEquals("GenericError", r.get("error").get("class").asText());
            assertTrue(r.get("error").get("desc").asText().startsWith("JSON parse error, "), r.toString());
            assertNull(r.get("id"), r.toString());
        }
        assertEquals(1, quit.getCount(), "a duplicate key must not let the second 'execute' win");
        assertError(c, "[".repeat(QmpServer.MAX_NESTING + 1) + "]".repeat(QmpServer.MAX_NESTING + 1), "GenericError",
                "JSON nesting depth limit exceeded", null);

        // QEMU extensions and wire details: single quotes; several requests in one write answered in order;
        // a request split over writes; non-ASCII escaped on output.
        assertEquals(json("\"sq\""), c.send("{'execute': 'query-version', 'id': 'sq'}").get("id"));
        c.sendRaw("{\"execute\": \"query-version\", \"id\": 1}{\"execute\": \"nope\", \"id\": 2}\n{\"execute\": \"query-version\", \"id\": 3}");
        assertEquals(json("1"), c.reply().get("id"));
        assertEquals(json("2"), c.reply().get("id"));
        assertEquals(json("3"), c.reply().get("id"));
        c.sendRaw("{\"execute\": \"query-");
        c.sendRaw("version\", \"id\": \"split\"}");
        assertEquals(json("\"split\""), c.reply().get("id"));
        c.rawLines.clear();
        JsonNode r = c.send("{\"execute\": \"query-version\", \"id\": \"caf\u00e9 \u2603\"}");
        assertEquals("caf\u00e9 \u2603", r.get("id").asText());
        String line = c.rawLines.poll(QmpClient.TIMEOUT_S, TimeUnit.SECONDS);
        assertTrue(line.chars().allMatch(ch -> ch < 128), line);
        assertTrue(line.toLowerCase().contains("caf\\u00e9 \\u2603"), line);
    }

    private static void assertError(QmpClient c, String request, String cls, String desc, JsonNode id) throws Exception {
        JsonNode r = c.send(request);
        assertEquals(cls, r.path("error").path("class").asText(), request + " -> " + r);
        assertEquals(desc, r.path("error").path("desc").asText(), request + " -> " + r);
        assertEquals(id, r.get("id"), request + " -> " + r);
    }

    @Test
    void hugeMessageClosesOnlyThatClient(@TempDir Path dir) throws Exception {
        Path[] q = start(dir, 2, QmpServer.Limits.DEFAULT);
        QmpClient bad = client(QmpClient.negotiated(q[0]));
        QmpClient good = client(QmpClient.negotiated(q[1]));
        // 2 MiB without a complete JSON text: an open string inside an object.
        StringBuilder huge = new StringBuilder("{\"execute\": \"query-version\", \"id\": \"");
        huge.append("x".repeat(2 << 20));
        try {
            bad.sendRaw(huge.toString());
        } catch (IOException e) {
            // the server hung up before we finished writing: expected
        }
        JsonNode r = bad.reply();
        assertEquals("JSON message exceeds 1048576 bytes; closing the connection", r.get("error").get("desc").asText());
        bad.awaitEof();
        // The other monitor was never disturbed, and the first one takes the next client.
        assertTrue(good.ok("query-version", null).get("qemu").isObject());
        QmpClient again = client(QmpClient.negotiated(q[0]));
        assertTrue(again.ok("query-version", null).has("package"));
    }

    @Test
    void clientThatDoesNotReadIsDropped(@TempDir Path dir) throws Exception {
        Path[] q = start(dir, 2, new QmpServer.Limits(1 << 20, 64 << 10));
        QmpClient good = client(QmpClient.negotiated(q[1]));
        try (SocketChannel slow = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            slow.connect(UnixDomainSocketAddress.of(q[0]));
            // Never read: each request gets a ~100-byte error that piles up in the socket, then in the server.
            byte[] req = "{\"execute\": \"query-version\"}\n".repeat(1000).getBytes(StandardCharsets.US_ASCII);
            boolean hungUp = false;
            for (int i = 0; i < 200 && !hungUp; i++) {   // at most 5.6 MB of requests, 20 MB of replies
                try {
                    ByteBuffer b = ByteBuffer.wrap(req);
                    while (b.hasRemaining()) slow.write(b);
                } catch (IOException e) {
                    hungUp = true;
                }
            }
            assertTrue(hungUp || drainsToEof(slow), "the server kept a client that does not read");
            assertTrue(good.ok("query-version", null).has("qemu"));
        }
        // The monitor accepts the next client.
        QmpClient next = client(QmpClient.negotiated(q[0]));
        assertTrue(next.ok("query-version", null).has("qemu"));
    }

    /** Reads what is buffered until end of stream (bounded); true when the peer has closed. */
    private static boolean drainsToEof(SocketChannel ch) throws IOException {
        ch.configureBlocking(false);
        try (Selector sel = Selector.open()) {
            ch.register(sel, SelectionKey.OP_READ);
            ByteBuffer b = ByteBuffer.allocate(1 << 16);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(QmpClient.TIMEOUT_S);
            while (System.nanoTime() < deadline) {
                sel.select(1000);
                sel.selectedKeys().clear();
                b.clear();
                try {
                    if (ch.read(b) < 0) return true;
                } catch (IOException reset) {
                    return true;
                }
            }
            return false;
        }
    }

    @Test
    void eventsReachEveryNegotiatedMonitor(@TempDir Path dir) throws Exception {
        Path[] q = start(dir, 3, QmpServer.Limits.DEFAULT);
        QmpClient a = client(QmpClient.negotiated(q[0]));
        QmpClient b = client(QmpClient.negotiated(q[1]));
        QmpClient notYet = client(QmpClient.connect(q[2]));
        long before = System.currentTimeMillis() / 1000;
        daemon.qmp().emit("TEST_EVENT", Json.object().put("n", 1));
        for (QmpClient c : List.of(a, b)) {
            JsonNode e = c.event("TEST_EVENT");
            assertEquals(json("{\"n\": 1}"), e.get("data"));
            long s = e.get("timestamp").get("seconds").asLong();
            long us = e.get("timestamp").get("microseconds").asLong();
            assertTrue(s >= before && s <= System.currentTimeMillis() / 1000 + 1, e.toString());
            assertTrue(us >= 0 && us < 1_000_000, e.toString());
            assertEquals(3, e.size(), e.toString());
        }
        String raw = a.rawLines.stream().filter(l -> l.contains("TEST_EVENT")).findFirst().orElseThrow();
        assertTrue(raw.startsWith("{\"event\": \"TEST_EVENT\", \"data\": {\"n\": 1}, \"timestamp\": {\"seconds\": "), raw);
        // Not negotiated: no events (an event for it would have been written before this reply).
        assertTrue(notYet.execute("qmp_capabilities", null).has("return"));
        assertTrue(notYet.ok("query-version", null).has("qemu"));
        assertFalse(notYet.hasPendingEvent());
        // Events from one thread arrive in order.
        for (int i = 0; i < 100; i++) daemon.qmp().emit("SEQ", Json.object().put("i", i));
        for (int i = 0; i < 100; i++) assertEquals(i, a.event("SEQ").get("data").get("i").asInt());
    }

    @Test
    void oneClientAtATimePerMonitor(@TempDir Path dir) throws Exception {
        Path q = start(dir, 1, QmpServer.Limits.DEFAULT)[0];
        QmpClient first = client(QmpClient.negotiated(q));
        // The second one waits in the backlog, like with a QEMU socket chardev: connect works, no greeting yet.
        SocketChannel second = SocketChannel.open(StandardProtocolFamily.UNIX);
        toClose.add(second);
        second.connect(UnixDomainSocketAddress.of(q));
        second.configureBlocking(false);
        try (Selector sel = Selector.open()) {
            second.register(sel, SelectionKey.OP_READ);
            assertEquals(0, sel.select(500), "second client was greeted while the first is connected");
            assertEquals(1, daemon.qmp().clientCount());
            first.close();
            ByteBuffer b = ByteBuffer.allocate(4096);
            StringBuilder got = new StringBuilder();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(QmpClient.TIMEOUT_S);
            while (got.indexOf("\n") < 0 && System.nanoTime() < deadline) {
                sel.select(1000);
                sel.selectedKeys().clear();
                assertTrue(second.read(b) >= 0, "closed instead of greeted");
                b.flip();
                got.append(StandardCharsets.US_ASCII.decode(b));
                b.clear();
            }
            assertTrue(got.toString().startsWith("{\"QMP\": "), got.toString());
        }
    }

    @Test
    void requestsBeforeEndOfInputAreAllAnswered(@TempDir Path dir) throws Exception {
        QmpClient c = client(QmpClient.connect(start(dir, 1, QmpServer.Limits.DEFAULT)[0]));
        // Main-loop commands among them: the close waits for their replies. A partial request at the end is dropped.
        c.sendRaw("{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-block-exports\", \"id\": 1}"
                + "{\"execute\": \"query-iothreads\", \"id\": 2}{\"execute\": \"query-ver");
        c.shutdownOutput();
        assertEquals(json("{\"return\": {}}"), c.reply());
        assertEquals(json("{\"return\": [], \"id\": 1}"), c.reply());
        assertEquals(json("{\"return\": [], \"id\": 2}"), c.reply());
        c.awaitEof();
    }

    @Test
    void quitRepliesThenRequestsShutdown(@TempDir Path dir) throws Exception {
        Path q = start(dir, 1, QmpServer.Limits.DEFAULT)[0];
        QmpClient c = client(QmpClient.negotiated(q));
        c.fails("GenericError", "Parameter 'force' is unexpected", "quit", "{\"force\": true}");
        assertEquals(1, quit.getCount());
        JsonNode r = c.send("{\"execute\": \"quit\", \"id\": \"bye\"}");
        assertEquals(json("{\"return\": {}, \"id\": \"bye\"}"), r);
        assertTrue(quit.await(QmpClient.TIMEOUT_S, TimeUnit.SECONDS));
        // What Main does next: close; the monitor socket is gone.
        daemon.close();
        c.awaitEof();
        assertFalse(Files.exists(q, LinkOption.NOFOLLOW_LINKS));
    }

    @Test
    void staleMonitorSocketIsReplacedButOtherFilesAreNot(@TempDir Path dir) throws Exception {
        Path s = dir.resolve("q.sock");
        try (var ch = java.nio.channels.ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.bind(UnixDomainSocketAddress.of(s));
        }
        String[] args = {"--chardev", "socket,id=m,path=" + s + ",server=on,wait=off", "--monitor", "m"};
        daemon = Daemon.start(Options.parse(args));
        client(QmpClient.negotiated(s));
        daemon.close();
        daemon = null;
        assertFalse(Files.exists(s, LinkOption.NOFOLLOW_LINKS));

        Files.writeString(s, "precious");
        UsageException e = org.junit.jupiter.api.Assertions.assertThrows(UsageException.class, () -> Daemon.start(Options.parse(args)));
        assertEquals("--chardev: chardev 'm': " + s + " exists and is not a socket", e.getMessage());
        assertEquals("precious", Files.readString(s));
    }
}
