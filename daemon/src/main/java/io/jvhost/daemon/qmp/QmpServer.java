package io.jvhost.daemon.qmp;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.ServerChannelRecvByteBufAllocator;
import io.netty.channel.WriteBufferWaterMark;
import io.netty.channel.socket.ChannelInputShutdownEvent;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import io.netty.util.concurrent.DefaultThreadFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * QMP, the QEMU Machine Protocol, on unix sockets: QEMU's monitor semantics for the commands we implement.
 *
 * <p>Threads: the server has its own single-threaded netty epoll loop ({@code jvhost-qmp}); it reads, frames,
 * parses and checks requests, answers the protocol commands itself and hands every other command to the executor
 * the command names (the daemon's main loop, the one owner of exports, nodes and iothreads), then writes the reply
 * back on its own loop. Nothing here blocks: a command in progress only stops reading from that client.
 *
 * <p>Per client, as QEMU without out-of-band execution: one command at a time, in order; replies carry the
 * request's {@code id}. Hostile or broken clients: a JSON text longer than {@link Limits#maxMessageBytes} gets an
 * error and the connection is closed; a client that lets more than {@link Limits#maxOutboundBytes} of replies and
 * events pile up unread is disconnected. Neither affects other monitors, nor the main loop.
 *
 * <p>Each monitor socket serves one client at a time, like a QEMU {@code -chardev socket,server=on}: the next
 * client waits in the listen backlog until the current one disconnects.
 */
public final class QmpServer implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(QmpServer.class.getName());

    /** QEMU's json-streamer limits nesting to 1024; QMP arguments need a handful of levels. */
    public static final int MAX_NESTING = 256;

    public static final String CAPABILITIES = "qmp_capabilities";

    /** Per-client bounds. */
    public record Limits(int maxMessageBytes, int maxOutboundBytes) {
        public static final Limits DEFAULT = new Limits(1 << 20, 1 << 20);

        public Limits {
            if (maxMessageBytes < 64 || maxOutboundBytes < 4096) throw new IllegalArgumentException("limits too small");
        }
    }

    private final ObjectNode version;
    private final Limits limits;
    private final Map<String, QmpCommand> commands = new LinkedHashMap<>();
    private final MultiThreadIoEventLoopGroup group;
    private final EventLoop loop;
    private final List<Monitor> monitors = new ArrayList<>();              // guarded by this
    private final Set<Session> sessions = new LinkedHashSet<>();           // QMP loop only
    private volatile boolean closed;

    /**
     * @param version the {@code query-version} value, e.g. {"qemu": {"micro": 0, "minor": 2, "major": 7},
     *                "package": "jvhost 0.1.0"}
     * @param commands the commands besides qmp_capabilities, query-version and query-commands
     */
    public QmpServer(ObjectNode version, List<QmpCommand> commands, Limits limits) {
        this.version = version.deepCopy();
        this.limits = limits;
        Qapi.Type noArgs = Qapi.struct();
        // qmp_capabilities is answered by the session itself (it changes the session's mode); listed for query-commands.
        register(new QmpCommand(CAPABILITIES, Qapi.struct(Qapi.optional("enable", Qapi.listOf(Qapi.enumOf("oob")))),
                null, args -> {
                    throw new IllegalStateException("handled by the session");
                }, null));
        register(QmpCommand.sync("query-version", noArgs, null, args -> this.version.deepCopy()));
        register(QmpCommand.sync("query-commands", noArgs, null, args -> commandList()));
        for (QmpCommand c : commands) register(c);
        group = new MultiThreadIoEventLoopGroup(1, new DefaultThreadFactory("jvhost-qmp", false), EpollIoHandler.newFactory());
        loop = group.next();
    }

    private void register(QmpCommand c) {
        if (commands.putIfAbsent(c.name(), c) != null) throw new IllegalArgumentException("command " + c.name() + " twice");
    }

    private ArrayNode commandList() {
        ArrayNode a = Json.array();
        for (String n : commands.keySet()) a.addObject().put("name", n);
        return a;
    }

    /** The command names that query-commands lists, in registration order. */
    public List<String> commandNames() {
        return List.copyOf(commands.keySet());
    }

    /**
     * Listens on a new unix socket (mode 0600) for monitor {@code name}. The path must not exist (the caller decides
     * about stale sockets); it is unlinked again by {@link #close}.
     */
    public synchronized void listen(String name, String socketPath) throws IOException {
        if (closed) throw new IOException("QMP server closed");
        Monitor m = new Monitor(name, socketPath);
        ServerBootstrap b = new ServerBootstrap()
                .group(group)
                .channel(EpollServerDomainSocketChannel.class)
                // Accept one client at a time, when we ask for it (see Monitor.acceptNext).
                .option(ChannelOption.AUTO_READ, false)
                .option(ChannelOption.RCVBUF_ALLOCATOR, new ServerChannelRecvByteBufAllocator().maxMessagesPerRead(1))
                .childOption(ChannelOption.AUTO_READ, false)
                // A client may send its requests and shut down its sending side (echo ... | socat): answer them all.
                .childOption(ChannelOption.ALLOW_HALF_CLOSURE, true)
                .childOption(ChannelOption.WRITE_BUFFER_WATER_MARK,
                        new WriteBufferWaterMark(limits.maxOutboundBytes() / 2, limits.maxOutboundBytes()))
                .childHandler(new ChannelInitializer<Channel>() {
                    @Override
                    protected void initChannel(Channel ch) {
                        ch.pipeline().addLast(new Session(m, ch));
                    }
                });
        ChannelFuture f = b.bind(new DomainSocketAddress(socketPath));
        if (!f.awaitUninterruptibly(30, TimeUnit.SECONDS) || !f.isSuccess()) {
            f.channel().close();
            Throwable c = f.cause();
            throw new IOException(c == null ? "bind timed out" : String.valueOf(c.getMessage()), c);
        }
        m.server = f.channel();
        monitors.add(m);
        try {
            // The umask is process-wide; tighten right after bind, as the exports do.
            Files.setPosixFilePermissions(Path.of(socketPath), PosixFilePermissions.fromString("rw-------"));
        } catch (IOException | UnsupportedOperationException e) {
            throw new IOException("cannot restrict " + socketPath + ": " + e.getMessage(), e);
        }
        m.server.read();
        LOG.fine("QMP monitor " + name + " listening on " + socketPath);
    }

    /**
     * Sends an event to every client that has left capabilities negotiation, as QEMU does. Any thread; the order
     * of events from one thread is kept, also relative to replies that thread completes afterwards.
     */
    public void emit(String event, ObjectNode data) {
        Instant now = Instant.now();
        ObjectNode m = Json.object();
        m.put("event", event);
        if (data != null) m.set("data", data);
        ObjectNode ts = m.putObject("timestamp");
        ts.put("seconds", now.getEpochSecond());
        ts.put("microseconds", now.getNano() / 1000);
        byte[] line = Json.encodeLine(m);
        LOG.fine(() -> "QMP event " + Json.toString(m));
        runOnLoop(() -> {
            for (Session s : List.copyOf(sessions)) {
                if (s.negotiated) s.sendLine(line);
            }
        });
    }

    /** Clients connected now, over all monitors (tests). */
    public int clientCount() {
        if (closed) return 0;
        CompletableFuture<Integer> n = new CompletableFuture<>();
        runOnLoop(() -> n.complete(sessions.size()));
        return n.orTimeout(10, TimeUnit.SECONDS).join();
    }

    private void runOnLoop(Runnable r) {
        try {
            loop.execute(r);
        } catch (RejectedExecutionException e) {
            // closed: nobody is listening any more
        }
    }

    /** Closes the sockets (unlinking them) and every client, and stops the QMP loop. Idempotent. */
    @Override
    public void close() {
        List<Monitor> ms;
        synchronized (this) {
            if (closed) return;
            closed = true;
            ms = new ArrayList<>(monitors);
        }
        for (Monitor m : ms) m.server.close().awaitUninterruptibly(10, TimeUnit.SECONDS);
        // Clients are closed explicitly: stopping the loop alone leaves their sockets open until GC.
        CompletableFuture<List<ChannelFuture>> closing = new CompletableFuture<>();
        runOnLoop(() -> {
            List<ChannelFuture> fs = new ArrayList<>();
            for (Session s : List.copyOf(sessions)) fs.add(s.ch.close());
            closing.complete(fs);
        });
        try {
            for (ChannelFuture f : closing.get(10, TimeUnit.SECONDS)) f.awaitUninterruptibly(10, TimeUnit.SECONDS);
        } catch (Exception e) {
            LOG.log(Level.FINE, "closing QMP clients", e);
        }
        group.shutdownGracefully(0, 2, TimeUnit.SECONDS).awaitUninterruptibly(30, TimeUnit.SECONDS);
    }

    // ------------------------------------------------------------------------------------------------------------

    private static final class Monitor {
        final String name;
        final String path;
        Channel server;

        Monitor(String name, String path) {
            this.name = name;
            this.path = path;
        }

        @Override
        public String toString() {
            return "QMP monitor " + name;
        }
    }

    /** One client: touched only on the QMP loop. */
    private final class Session extends ChannelInboundHandlerAdapter {
        private final Monitor monitor;
        private final Channel ch;
        private final JsonFramer framer = new JsonFramer(limits.maxMessageBytes(), MAX_NESTING);
        boolean negotiated;
        private boolean busy;          // a command is running elsewhere: read and parse nothing more until it is done
        private boolean closing;
        private boolean inputShutdown; // the client sent EOF: answer what it sent, then close
        // Read only when every complete request received has been handled: unread requests wait in the socket
        // (where the client feels the back-pressure), not in our buffer.
        private boolean needInput = true;

        Session(Monitor monitor, Channel ch) {
            this.monitor = monitor;
            this.ch = ch;
        }

        @Override
        public void channelActive(ChannelHandlerContext ctx) {
            if (closed) {
                ch.close();
                return;
            }
            sessions.add(this);
            LOG.fine(monitor + ": client connected");
            ObjectNode greeting = Json.object();
            ObjectNode qmp = greeting.putObject("QMP");
            qmp.set("version", version.deepCopy());
            qmp.putArray("capabilities");   // no out-of-band execution
            send(greeting);
            ch.read();
        }

        @Override
        public void channelInactive(ChannelHandlerContext ctx) {
            closing = true;
            sessions.remove(this);
            LOG.fine(monitor + ": client disconnected");
            // The next client in the backlog may come in now.
            if (!closed && monitor.server.isOpen()) monitor.server.read();
        }

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            ByteBuf b = (ByteBuf) msg;
            try {
                if (!closing) framer.feed(b);
            } finally {
                b.release();
            }
            pump();
        }

        @Override
        public void channelReadComplete(ChannelHandlerContext ctx) {
            readMoreIfIdle();
        }

        @Override
        public void userEventTriggered(ChannelHandlerContext ctx, Object evt) {
            if (evt instanceof ChannelInputShutdownEvent) {
                inputShutdown = true;
                pump();
                closeIfDone();
            }
        }

        /** After the client's EOF: close once every complete request has been answered (a partial one is dropped). */
        private void closeIfDone() {
            if (inputShutdown && !busy && !closing) {
                closing = true;
                ch.close();
            }
        }

        @Override
        public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
            LOG.log(Level.FINE, monitor + ": connection error", cause);
            closing = true;
            ch.close();
        }

        private void readMoreIfIdle() {
            if (!busy && needInput && !closing && !inputShutdown && ch.isActive()) ch.read();
        }

        /** Handles complete requests in order until one has to wait or the input runs out. */
        private void pump() {
            while (!busy && !closing && ch.isActive()) {
                JsonFramer.Frame f = framer.next();
                needInput = f == null;
                if (f == null) return;
                switch (f.kind()) {
                    case TOO_LARGE -> {
                        LOG.warning(monitor + ": client sent more than " + limits.maxMessageBytes()
                                + " bytes without completing a JSON text; disconnecting it");
                        sendError(null, new QmpException("JSON message exceeds " + limits.maxMessageBytes()
                                + " bytes; closing the connection"));
                        closing = true;
                        ch.close();   // what is not in the socket yet is dropped: the client may not be reading
                        return;
                    }
                    case TOO_DEEP -> sendError(null, new QmpException("JSON nesting depth limit exceeded"));
                    case MESSAGE -> {
                        try {
                            handle(f);
                        } catch (RuntimeException e) {
                            // A bug, not the client's fault: answer and keep the session.
                            LOG.log(Level.WARNING, monitor + ": request failed", e);
                            busy = false;
                            sendError(null, new QmpException("internal error: " + e));
                        }
                    }
                }
            }
        }

        private void handle(JsonFramer.Frame f) {
            JsonNode req;
            try {
                req = Json.parse(f.buf(), f.off(), f.len());
            } catch (IOException e) {
                sendError(null, new QmpException(Json.parseError(e)));
                return;
            }
            JsonNode id = req.isObject() ? req.get("id") : null;
            try {
                String name = checkRequest(req);
                QmpCommand cmd = commands.get(name);
                if (!negotiated && !name.equals(CAPABILITIES)) {
                    // QEMU's cap-negotiation command table holds only qmp_capabilities; its not-found error is reworded.
                    throw new QmpException(QmpException.COMMAND_NOT_FOUND,
                            "Expecting capabilities negotiation with '" + CAPABILITIES + "'");
                }
                if (cmd == null) {
                    throw new QmpException(QmpException.COMMAND_NOT_FOUND, "The command " + name + " has not been found");
                }
                JsonNode a = req.get("arguments");
                Map<String, String> args = Qapi.flatten(cmd.arguments(), a == null ? Json.object() : (ObjectNode) a);
                LOG.fine(() -> monitor + ": " + name + " " + args);
                if (name.equals(CAPABILITIES)) {
                    capabilities(args);
                    sendReturn(id, Json.object());
                    return;
                }
                run(cmd, args, id);
            } catch (QmpException e) {
                sendError(id, e);
            }
        }

        /** QEMU's qmp_dispatch_check_obj, without out-of-band execution. Returns the command name. */
        private String checkRequest(JsonNode req) throws QmpException {
            if (!req.isObject()) throw new QmpException("QMP input must be a JSON object");
            String name = null;
            for (Map.Entry<String, JsonNode> e : req.properties()) {
                switch (e.getKey()) {
                    case "execute" -> {
                        if (!e.getValue().isTextual()) throw new QmpException("QMP input member 'execute' must be a string");
                        name = e.getValue().textValue();
                    }
                    case "arguments" -> {
                        if (!e.getValue().isObject()) throw new QmpException("QMP input member 'arguments' must be an object");
                    }
                    case "id" -> { }
                    default -> throw new QmpException("QMP input member '" + e.getKey() + "' is unexpected");
                }
            }
            if (name == null) throw new QmpException("QMP input lacks member 'execute'");
            return name;
        }

        private void capabilities(Map<String, String> args) throws QmpException {
            if (negotiated) {
                throw new QmpException(QmpException.COMMAND_NOT_FOUND, "Capabilities negotiation is already complete, command ignored");
            }
            for (Map.Entry<String, String> e : args.entrySet()) {
                // The schema admits only 'oob', which we do not offer (no out-of-band execution).
                throw new QmpException("Capability '" + e.getValue() + "' not available");
            }
            negotiated = true;
        }

        private void run(QmpCommand cmd, Map<String, String> args, JsonNode id) {
            busy = true;
            Runnable work = () -> invoke(cmd, args).whenComplete((v, t) -> runOnLoop(() -> finish(cmd, id, v, t)));
            if (cmd.executor() == null) {
                work.run();
                return;
            }
            try {
                cmd.executor().execute(work);
            } catch (RejectedExecutionException e) {
                busy = false;
                sendError(id, new QmpException("jvhost is shutting down"));
            }
        }

        private CompletionStage<? extends JsonNode> invoke(QmpCommand cmd, Map<String, String> args) {
            try {
                CompletionStage<? extends JsonNode> st = cmd.handler().run(args);
                return st != null ? st : CompletableFuture.failedFuture(new IllegalStateException(cmd.name() + " returned nothing"));
            } catch (Throwable t) {
                return CompletableFuture.failedFuture(t);
            }
        }

        private void finish(QmpCommand cmd, JsonNode id, JsonNode value, Throwable t) {
            busy = false;
            if (t != null) {
                while ((t instanceof CompletionException || t instanceof ExecutionException) && t.getCause() != null) {
                    t = t.getCause();
                }
                if (t instanceof QmpException q) {
                    sendError(id, q);
                } else {
                    LOG.log(Level.WARNING, monitor + ": " + cmd.name() + " failed", t);
                    sendError(id, new QmpException(t.getMessage() != null ? t.getMessage() : t.toString()));
                }
            } else {
                sendReturn(id, value == null ? Json.object() : value);
                // Even if the client went away meanwhile: the command was executed (quit must still quit).
                if (cmd.afterReply() != null) cmd.afterReply().run();
            }
            pump();
            readMoreIfIdle();
            closeIfDone();
        }

        private void sendReturn(JsonNode id, JsonNode value) {
            ObjectNode r = Json.object();
            r.set("return", value);
            if (id != null) r.set("id", id);
            send(r);
        }

        private void sendError(JsonNode id, QmpException e) {
            LOG.fine(() -> monitor + ": error " + e.errorClass() + ": " + e.getMessage());
            ObjectNode r = Json.object();
            ObjectNode err = r.putObject("error");
            err.put("class", e.errorClass());
            err.put("desc", e.getMessage());
            if (id != null) r.set("id", id);
            send(r);
        }

        private void send(JsonNode msg) {
            sendLine(Json.encodeLine(msg));
        }

        /** Writes one line; disconnects a client that lets too much pile up (it does not read). */
        void sendLine(byte[] line) {
            if (closing || !ch.isActive()) return;
            ch.writeAndFlush(Unpooled.wrappedBuffer(line));
            if (!ch.isWritable()) {
                LOG.warning(monitor + ": client does not read (more than " + limits.maxOutboundBytes()
                        + " bytes of replies and events pending); disconnecting it");
                closing = true;
                ch.close();
            }
        }
    }

}
