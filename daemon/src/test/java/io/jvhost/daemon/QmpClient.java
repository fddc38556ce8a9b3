package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A QMP client for tests, independent of the server's code: the JDK's unix socket, lines split on LF, a plain
 * Jackson mapper. A reader thread sorts what arrives into replies (greeting included) and events; every wait is
 * bounded.
 */
final class QmpClient implements AutoCloseable {
    static final long TIMEOUT_S = 30;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final SocketChannel ch;
    private final BlockingQueue<JsonNode> replies = new LinkedBlockingQueue<>();
    private final BlockingQueue<JsonNode> events = new LinkedBlockingQueue<>();
    final CompletableFuture<Void> eof = new CompletableFuture<>();
    /** Every raw line received, with its CR LF (wire format checks). */
    final BlockingQueue<String> rawLines = new LinkedBlockingQueue<>();
    final JsonNode greeting;

    private QmpClient(SocketChannel ch) throws Exception {
        this.ch = ch;
        Thread t = new Thread(this::readLoop, "qmp-test-client");
        t.setDaemon(true);
        t.start();
        greeting = reply();
    }

    /** Connects and reads the greeting. */
    static QmpClient connect(Path socket) throws Exception {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(socket));
        return new QmpClient(ch);
    }

    /** Connects, reads the greeting and negotiates capabilities. */
    static QmpClient negotiated(Path socket) throws Exception {
        QmpClient c = connect(socket);
        JsonNode r = c.execute("qmp_capabilities", null);
        assertEquals("{}", r.get("return").toString(), r.toString());
        return c;
    }

    private void readLoop() {
        ByteBuffer buf = ByteBuffer.allocate(8192);
        ByteArrayOutputStream line = new ByteArrayOutputStream();
        try {
            while (ch.read(buf) >= 0) {
                buf.flip();
                while (buf.hasRemaining()) {
                    byte b = buf.get();
                    line.write(b);
                    if (b == '\n') {
                        String s = line.toString(StandardCharsets.UTF_8);
                        line.reset();
                        rawLines.add(s);
                        JsonNode n = JSON.readTree(s);
                        (n.has("event") ? events : replies).add(n);
                    }
                }
                buf.clear();
            }
        } catch (IOException e) {
            // closed by us, or reset by the server
        } finally {
            eof.complete(null);
        }
    }

    /** Sends raw bytes as they are. */
    void sendRaw(String text) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) ch.write(b);
    }

    /** Half-closes: the server sees end of input, this side can still read. */
    void shutdownOutput() throws IOException {
        ch.shutdownOutput();
    }

    /** Sends a request built from its parts and returns the reply. */
    JsonNode execute(String command, String argumentsJson) throws Exception {
        return send("{\"execute\": \"" + command + "\"" + (argumentsJson == null ? "" : ", \"arguments\": " + argumentsJson) + "}");
    }

    /** Sends one raw request and returns the next reply (bounded wait). */
    JsonNode send(String request) throws Exception {
        sendRaw(request + "\n");
        return reply();
    }

    JsonNode reply() throws InterruptedException {
        JsonNode r = replies.poll(TIMEOUT_S, TimeUnit.SECONDS);
        assertNotNull(r, "no reply within " + TIMEOUT_S + " s");
        return r;
    }

    /** The {@code return} value of a command that must succeed. */
    JsonNode ok(String command, String argumentsJson) throws Exception {
        JsonNode r = execute(command, argumentsJson);
        assertTrue(r.has("return"), command + " failed: " + r);
        return r.get("return");
    }

    /** Asserts that the command fails with this class and description. */
    void fails(String errorClass, String desc, String command, String argumentsJson) throws Exception {
        JsonNode r = execute(command, argumentsJson);
        assertTrue(r.has("error"), command + " should fail: " + r);
        assertEquals(errorClass, r.get("error").get("class").asText(), r.toString());
        assertEquals(desc, r.get("error").get("desc").asText(), r.toString());
    }

    /** The next event with this name (earlier other events are skipped), bounded. */
    JsonNode event(String name) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (true) {
            long left = deadline - System.nanoTime();
            JsonNode e = left <= 0 ? null : events.poll(left, TimeUnit.NANOSECONDS);
            assertNotNull(e, "no " + name + " event within " + TIMEOUT_S + " s");
            if (e.get("event").asText().equals(name)) return e;
        }
    }

    /** The next event, whatever its name (bounded). */
    JsonNode nextEvent() throws InterruptedException {
        JsonNode e = events.poll(TIMEOUT_S, TimeUnit.SECONDS);
        assertNotNull(e, "no event within " + TIMEOUT_S + " s");
        return e;
    }

    boolean hasPendingEvent() {
        return !events.isEmpty();
    }

    /** Waits (bounded) until the server has closed the connection. */
    void awaitEof() throws Exception {
        eof.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
