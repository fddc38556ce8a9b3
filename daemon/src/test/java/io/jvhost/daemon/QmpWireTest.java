package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Wire compatibility with a client that shares no code with us: Python's socket and json modules drive a QMP
 * session against a real jvhost process, which must end with status 0 after quit.
 */
class QmpWireTest {
    private static final long TIMEOUT_S = 60;
    private static final ObjectMapper JSON = new ObjectMapper();
    private final List<Process> started = new ArrayList<>();

    @AfterEach
    void killLeftovers() throws InterruptedException {
        for (Process p : started) {
            if (p.isAlive()) {
                p.destroyForcibly();
                p.waitFor(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
    }

    private static JsonNode json(String s) throws IOException {
        return JSON.readTree(s);
    }

    @Test
    void pythonSessionAgainstTheDaemonProcess(@TempDir Path dir) throws Exception {
        Path python = Path.of("/usr/bin/python3");
        assumeTrue(Files.isExecutable(python), "python3 is the external client");
        Path qmpSock = dir.resolve("qmp.sock");
        Path exportSock = dir.resolve("vhost.sock");
        Path script = dir.resolve("qmp_session.py");
        try (var in = QmpWireTest.class.getResourceAsStream("qmp_session.py")) {
            Files.copy(in, script);
        }

        Process jv = new ProcessBuilder(ProcessTest.javaCommand(
                "--chardev", "socket,id=qmp0,path=" + qmpSock + ",server=on,wait=off", "--monitor", "chardev=qmp0")).start();
        started.add(jv);
        jv.getOutputStream().close();
        ProcessTest.Daemon d = new ProcessTest.Daemon(jv);
        d.awaitLine(("jvhost: QMP monitor qmp0 listening on " + qmpSock)::equals);

        Process py = new ProcessBuilder(python.toString(), script.toString(), qmpSock.toString(), exportSock.toString())
                .redirectErrorStream(true).start();
        started.add(py);
        py.getOutputStream().close();
        assertTrue(py.waitFor(TIMEOUT_S, TimeUnit.SECONDS), "python client did not finish");
        String output = new String(py.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, py.exitValue(), output + "\njvhost stderr:\n" + d.err);

        Map<String, JsonNode> step = new LinkedHashMap<>();
        for (String line : output.strip().split("\n")) {
            int sp = line.indexOf(' ');
            step.put(line.substring(0, sp), json(line.substring(sp + 1)));
        }
        String version = "{\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"jvhost " + Main.version() + "\"}";
        assertEquals(json("{\"QMP\": {\"version\": " + version + ", \"capabilities\": []}}"), step.get("greeting"));
        assertEquals(json("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with "
                + "'qmp_capabilities'\"}, \"id\": 1}"), step.get("early"));
        assertEquals(json("{\"return\": {}}"), step.get("caps"));
        assertEquals(json("{\"return\": " + version + ", \"id\": \"v\"}"), step.get("version"));
        assertEquals(25, step.get("commands").get("return").size(), step.get("commands").toString());
        assertEquals(json("{\"return\": {}}"), step.get("blockdev-add"));
        assertEquals(json("{\"return\": {}}"), step.get("export-add"));
        assertEquals(json("{\"return\": [{\"type\": \"vhost-user-blk\", \"id\": \"pyexp\", \"node-name\": \"py0\", "
                + "\"shutting-down\": false}]}"), step.get("exports"));
        assertEquals(json("{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'bogus' is unexpected\"}, "
                + "\"id\": [1, \"two\"]}"), step.get("bad"));
        assertEquals(json("{\"request\": 1, \"flags\": 5, \"size\": 8, \"version_1\": true}"), step.get("features"));
        assertEquals(json("{\"return\": {}}"), step.get("export-del"));
        JsonNode ev = step.get("event");
        assertEquals("BLOCK_EXPORT_DELETED", ev.get("event").asText());
        assertEquals(json("{\"id\": \"pyexp\"}"), ev.get("data"));
        assertTrue(ev.get("timestamp").get("seconds").asLong() > 1_600_000_000L, ev.toString());
        assertEquals(json("true"), step.get("front-end-eof"));
        assertEquals(json("{\"return\": {}, \"id\": \"bye\"}"), step.get("quit"));
        assertEquals(json("true"), step.get("eof"));

        // quit ends the process like SIGTERM: status 0, sockets removed.
        assertEquals(0, d.awaitExit(), d.err.toString());
        assertTrue(d.err.toString().contains("quit requested over QMP, shutting down"), d.err.toString());
        assertFalse(Files.exists(qmpSock, LinkOption.NOFOLLOW_LINKS), "QMP socket left behind");
        assertFalse(Files.exists(exportSock, LinkOption.NOFOLLOW_LINKS), "export socket left behind");
    }

    /**
     * socat, the tool QEMU's documentation uses: requests piped in, the connection half-closed at their end. Every
     * request is answered before the server closes; quit then ends the process.
     */
    @Test
    void socatPipe(@TempDir Path dir) throws Exception {
        Path socat = Path.of("/usr/bin/socat");
        assumeTrue(Files.isExecutable(socat), "socat is not installed");
        Path qmpSock = dir.resolve("qmp.sock");
        Process jv = new ProcessBuilder(ProcessTest.javaCommand("--blockdev", "null-co,node-name=n0,size=1M",
                "--chardev", "socket,id=qmp0,path=" + qmpSock + ",server=on,wait=off", "--monitor", "qmp0")).start();
        started.add(jv);
        jv.getOutputStream().close();
        ProcessTest.Daemon d = new ProcessTest.Daemon(jv);
        d.awaitLine(("jvhost: QMP monitor qmp0 listening on " + qmpSock)::equals);

        Process sc = new ProcessBuilder(socat.toString(), "-t", "30", "-", "UNIX-CONNECT:" + qmpSock).redirectErrorStream(true).start();
        started.add(sc);
        try (var in = sc.getOutputStream()) {
            in.write(("{\"execute\": \"qmp_capabilities\"}\n"
                    + "{\"execute\": \"query-named-block-nodes\", \"id\": 1}\n"
                    + "{\"execute\": \"quit\"}\n").getBytes(StandardCharsets.US_ASCII));
        }
        assertTrue(sc.waitFor(TIMEOUT_S, TimeUnit.SECONDS), "socat did not finish");
        String[] lines = new String(sc.getInputStream().readAllBytes(), StandardCharsets.UTF_8).split("\r\n");
        assertEquals(4, lines.length, String.join("\n", lines));
        assertTrue(lines[0].startsWith("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}"), lines[0]);
        assertEquals("{\"return\": {}}", lines[1]);
        JsonNode nodes = json(lines[2]);
        assertEquals("n0", nodes.get("return").get(0).get("node-name").asText(), lines[2]);
        assertEquals(1, nodes.get("id").asInt());
        assertEquals("{\"return\": {}}", lines[3]);
        assertEquals(0, d.awaitExit(), d.err.toString());
    }
}
