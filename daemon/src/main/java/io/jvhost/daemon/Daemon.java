package io.jvhost.daemon;

import io.jvhost.block.BlockBackend;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockException;
import io.jvhost.block.BlockNodes;
import io.jvhost.daemon.DaemonConfig.ExportSpec;
import io.jvhost.daemon.DaemonConfig.IothreadSpec;
import io.jvhost.iothread.AioContext;
import io.jvhost.vhostuser.BlkExportConfig;
import io.jvhost.vhostuser.VhostUserBlkExport;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Everything one jvhost process serves, built from a {@link DaemonConfig}: the main loop (vhost-user sockets),
 * the iothreads (virtqueues), the block nodes and the exports. {@link #start} returns once every export listens
 * and the pidfile is written; {@link #close} takes it all down in reverse order. Usable in-process (tests) as well
 * as by {@link Main}.
 */
public final class Daemon implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(Daemon.class.getName());

    private final DaemonConfig cfg;
    private AioContext mainLoop;
    private final Map<String, AioContext> iothreads = new LinkedHashMap<>();   // --object iothread, by id
    private final List<AioContext> ownIothreads = new ArrayList<>();           // <export>-vq<i>
    private BlockNodes nodes;
    private final List<BlockBackend> backends = new ArrayList<>();
    private final List<VhostUserBlkExport> exports = new ArrayList<>();
    private boolean pidfileWritten;
    private boolean closed;

    private Daemon(DaemonConfig cfg) {
        this.cfg = cfg;
    }

    /**
     * Builds and starts everything. On failure, whatever was already built is closed again and the error comes
     * back as a {@link UsageException} naming the option it belongs to.
     */
    public static Daemon start(DaemonConfig cfg) throws UsageException {
        Daemon d = new Daemon(cfg);
        try {
            d.build();
            return d;
        } catch (UsageException | RuntimeException | Error e) {
            d.close();
            throw e;
        }
    }

    private void build() throws UsageException {
        mainLoop = AioContext.newMainLoop("jvhost-main");
        for (IothreadSpec t : cfg.iothreads()) {
            iothreads.put(t.id(), AioContext.newIoThread(t.id()));
        }

        nodes = new BlockNodes();
        for (Map<String, String> opts : cfg.blockdevs()) {
            try {
                nodes.add(opts);
            } catch (BlockException e) {
                throw new UsageException("--blockdev", stripPrefix(e.getMessage(), "blockdev: "));
            } catch (RuntimeException e) {
                throw new UsageException("--blockdev", String.valueOf(e.getMessage()));
            }
        }

        for (ExportSpec spec : cfg.exports()) {
            BlockDriverState root = nodes.get(spec.nodeName());
            if (root == null) {   // Options checked this; only a block layer renaming nodes could get here
                throw new UsageException("--export", "node '" + spec.nodeName() + "' not found");
            }
            List<AioContext> queueThreads = new ArrayList<>(spec.numQueues());
            for (int q = 0; q < spec.numQueues(); q++) {
                String id = spec.iothreadOf(q);
                if (id == null) {
                    AioContext own = AioContext.newIoThread(spec.ownIothreadName(q));
                    ownIothreads.add(own);
                    queueThreads.add(own);
                } else {
                    queueThreads.add(iothreads.get(id));
                }
            }
            if (spec.socketPath() != null) checkSocketPath(spec);
            VhostUserBlkExport export;
            try {
                BlockBackend blk = new BlockBackend(root, spec.writable());
                backends.add(blk);
                BlkExportConfig ec = new BlkExportConfig(spec.id(), spec.socketPath(), spec.listenFd(),
                        spec.numQueues(), spec.logicalBlockSize(), spec.writable(), spec.serial());
                export = new VhostUserBlkExport(ec, blk, mainLoop, queueThreads);
            } catch (IllegalArgumentException e) {
                throw new UsageException("--export", e.getMessage());
            }
            exports.add(export);   // before start(): close() also cleans up a half-started export
            try {
                export.start();
            } catch (IOException | RuntimeException e) {
                throw new UsageException("--export", "export '" + spec.id() + "': cannot listen on "
                        + spec.address() + ": " + e.getMessage());
            }
            LOG.info("export " + spec.id() + ": node '" + spec.nodeName() + "'" + (spec.writable() ? " writable" : " read-only")
                    + ", " + spec.numQueues() + " queue(s), listening on " + spec.address());
        }

        if (cfg.pidfile() != null) {
            try {
                writePidfile(cfg.pidfile());
                pidfileWritten = true;
            } catch (IOException e) {
                throw new UsageException("--pidfile", "cannot write " + cfg.pidfile() + ": " + e.getMessage());
            }
        }
    }

    /**
     * Refuses a path that exists and is not a socket before the export is created: the export replaces stale
     * sockets, and its close() (also run after a failed start) unlinks whatever is at its path.
     */
    private static void checkSocketPath(ExportSpec spec) throws UsageException {
        Path p = Path.of(spec.socketPath());
        if (!Files.exists(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) return;
        boolean socket;
        try {
            int mode = (Integer) Files.getAttribute(p, "unix:mode", java.nio.file.LinkOption.NOFOLLOW_LINKS);
            socket = (mode & 0170000) == 0140000;
        } catch (IOException | UnsupportedOperationException e) {
            socket = false;
        }
        if (!socket) {
            throw new UsageException("--export", "export '" + spec.id() + "': " + spec.socketPath()
                    + " exists and is not a socket");
        }
    }

    /** Written via a temporary file and a rename so that a reader never sees a partial pid. */
    private static void writePidfile(Path pidfile) throws IOException {
        Path abs = pidfile.toAbsolutePath();
        Path tmp = abs.resolveSibling("." + abs.getFileName() + ".tmp" + ProcessHandle.current().pid());
        Files.write(tmp, (ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.US_ASCII));
        try {
            Files.move(tmp, abs, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
    }

    private static String stripPrefix(String msg, String prefix) {
        if (msg == null) return "failed";
        return msg.startsWith(prefix) ? msg.substring(prefix.length()) : msg;
    }

    public DaemonConfig config() {
        return cfg;
    }

    /** The started exports, in command-line order. */
    public List<VhostUserBlkExport> exports() {
        return Collections.unmodifiableList(exports);
    }

    /**
     * Stops the exports (rings drain, front-ends are disconnected, sockets unlinked), detaches and closes the
     * block nodes, stops the iothreads and the main loop, and removes the pidfile. Idempotent; never throws.
     */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        for (int i = exports.size() - 1; i >= 0; i--) {
            VhostUserBlkExport e = exports.get(i);
            quietly("export " + e.config().id(), e::close);
        }
        for (BlockBackend b : backends) quietly("backend " + b, b::close);
        if (nodes != null) quietly("block nodes", nodes::close);
        for (AioContext t : ownIothreads) quietly(t.name(), t::close);
        for (AioContext t : iothreads.values()) quietly(t.name(), t::close);
        if (mainLoop != null) quietly(mainLoop.name(), mainLoop::close);
        if (pidfileWritten) {
            quietly("pidfile", () -> {
                try {
                    Files.deleteIfExists(cfg.pidfile());
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            });
        }
    }

    private static void quietly(String what, Runnable r) {
        try {
            r.run();
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "closing " + what + " failed", e);
        }
    }
}
