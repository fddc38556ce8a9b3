package io.jvhost.testvm;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Predicate;

/**
 * A minimal QMP client over a unix socket. QEMU is started with {@code -qmp unix:PATH} (client mode)
 * and connects to a socket this JVM listens on, so no waiting for QEMU's socket file is needed.
 * One reader thread parses the one-JSON-value-per-line stream into responses and events.
 */
public final class QmpClient implements AutoCloseable {
    private final SocketChannel channel;
    private final Thread reader;
    private final EventLog<Map<String, Object>> responses = new EventLog<>();
    private final EventLog<Map<String, Object>> events = new EventLog<>();
    private final AtomicLong ids = new AtomicLong();
    private volatile Map<String, Object> greeting;

    /** Thrown when QEMU answers a command with an error object. */
    public static final class QmpException extends IOException {
        private static final long serialVersionUID = 1L;
        private final String errorClass;

        QmpException(String command, String errorClass, String desc) {
            super(command + ": " + errorClass + ": " + desc);
            this.errorClass = errorClass;
        }

        public String errorClass() {
            return errorClass;
        }
    }

    private QmpClient(SocketChannel channel, String name) {
        this.channel = channel;
        this.reader = new Thread(this::readLoop, "qmp-reader-" + name);
        this.reader.setDaemon(true);
    }

    /**
     * Accepts QEMU's connection on {@code server}, waiting at most {@code timeout} or until
     * {@code qemuExited} completes, then does the capabilities handshake.
     */
    static QmpClient accept(ServerSocketChannel server, CompletableFuture<?> qemuExited, Duration timeout,
                            String name) throws IOException, InterruptedException {
        SocketChannel ch;
        server.configureBlocking(false);
        try (Selector sel = Selector.open()) {
            server.register(sel, SelectionKey.OP_ACCEPT);
            qemuExited.thenRun(sel::wakeup);
            long deadline = System.nanoTime() + timeout.toNanos();
            while (true) {
                ch = server.accept();
                if (ch != null) {
                    break;
                }
                if (qemuExited.isDone()) {
                    throw new IOException("QEMU exited before connecting to QMP");
                }
                long leftMs = (deadline - System.nanoTime()) / 1_000_000;
                if (leftMs <= 0) {
                    throw new IOException("QEMU did not connect to QMP within " + timeout);
                }
                sel.select(leftMs);
                sel.selectedKeys().clear();
                if (Thread.interrupted()) {
                    throw new InterruptedException();
                }
            }
        }
        ch.configureBlocking(true);
        QmpClient c = new QmpClient(ch, name);
        c.reader.start();
        c.handshake(timeout);
        return c;
    }

    private void handshake(Duration timeout) throws IOException, InterruptedException {
        Optional<Map<String, Object>> g = responses.awaitNext(m -> m.containsKey("QMP"), timeout);
        if (g.isEmpty()) {
            throw new IOException("no QMP greeting within " + timeout);
        }
        greeting = g.get();
        execute("qmp_capabilities", Map.of(), timeout);
    }

    public Map<String, Object> greeting() {
        return greeting;
    }

    /** Runs a command and returns its "return" value (usually a Map or List; empty Map for none). */
    public Object execute(String command, Map<String, ?> arguments, Duration timeout)
            throws IOException, InterruptedException {
        String id = "jvh-" + ids.incrementAndGet();
        Map<String, Object> msg = new LinkedHashMap<>();
        msg.put("execute", command);
        if (arguments != null && !arguments.isEmpty()) {
            msg.put("arguments", arguments);
        }
        msg.put("id", id);
        byte[] bytes = (Json.write(msg) + "\n").getBytes(StandardCharsets.UTF_8);
        synchronized (channel) {
            ByteBuffer buf = ByteBuffer.wrap(bytes);
            while (buf.hasRemaining()) {
                channel.write(buf);
            }
        }
        Optional<Map<String, Object>> r = responses.awaitNext(m -> id.equals(m.get("id")), timeout);
        if (r.isEmpty()) {
            throw new IOException("no QMP reply to " + command + " within " + timeout
                    + (responses.isClosed() ? " (connection closed)" : ""));
        }
        Map<String, Object> resp = r.get();
        if (resp.containsKey("error")) {
            @SuppressWarnings("unchecked")
            Map<String, Object> err = (Map<String, Object>) resp.get("error");
            throw new QmpException(command, String.valueOf(err.get("class")), String.valueOf(err.get("desc")));
        }
        return resp.get("return");
    }

    public Object execute(String command, Duration timeout) throws IOException, InterruptedException {
        return execute(command, Map.of(), timeout);
    }

    /** Waits for the next event called {@code name} not yet returned by this method. */
    public Optional<Map<String, Object>> awaitEvent(String name, Duration timeout) throws InterruptedException {
        return events.awaitNext(e -> name.equals(e.get("event")), timeout);
    }

    /** Waits for the next event (not yet returned by an await) that matches {@code match}. */
    public Optional<Map<String, Object>> awaitEvent(Predicate<Map<String, Object>> match, Duration timeout)
            throws InterruptedException {
        return events.awaitNext(match, timeout);
    }

    /** Makes the awaits ignore every event received so far (e.g. before triggering a new one). */
    public void skipEvents() {
        events.skipAll();
    }

    /** All events received so far. */
    public List<Map<String, Object>> events() {
        return events.snapshot();
    }

    public boolean isConnected() {
        return !responses.isClosed();
    }

    private void readLoop() {
        ByteBuffer buf = ByteBuffer.allocate(65536);
        ByteArrayOutputStream line = new ByteArrayOutputStream();
        Throwable cause = null;
        try {
            while (channel.read(buf.clear()) >= 0) {
                buf.flip();
                while (buf.hasRemaining()) {
                    byte b = buf.get();
                    if (b != '\n') {
                        line.write(b);
                        continue;
                    }
                    String text = line.toString(StandardCharsets.UTF_8).trim();
                    line.reset();
                    if (text.isEmpty()) {
                        continue;
                    }
                    Map<String, Object> m = Json.parseObject(text);
                    if (m.containsKey("event")) {
                        events.append(m);
                    } else {
                        responses.append(m);
                    }
                }
            }
        } catch (ClosedChannelException e) {
            // close() was called
        } catch (IOException | RuntimeException e) {
            cause = e;
        } finally {
            responses.close(cause);
            events.close(cause);
        }
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
