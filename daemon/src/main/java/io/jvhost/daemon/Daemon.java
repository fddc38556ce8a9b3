package io.jvhost.daemon;

import io.jvhost.block.BlockBackend;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockException;
import io.jvhost.block.BlockNodes;
import io.jvhost.block.job.MirrorJob;
import io.jvhost.daemon.DaemonConfig.ExportSpec;
import io.jvhost.daemon.DaemonConfig.IothreadSpec;
import io.jvhost.daemon.DaemonConfig.MonitorSpec;
import io.jvhost.daemon.qmp.Json;
import io.jvhost.daemon.qmp.QmpException;
import io.jvhost.daemon.qmp.QmpServer;
import io.jvhost.iothread.AioContext;
import io.jvhost.vhostuser.BlkExportConfig;
import io.jvhost.vhostuser.VhostUserBlkExport;

import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Everything one jvhost process serves, built from a {@link DaemonConfig}: the main loop (vhost-user sockets and
 * management), the iothreads (virtqueues), the block nodes, the exports and the QMP monitors. {@link #start}
 * returns once every export and monitor listens and the pidfile is written; {@link #close} takes it all down in
 * reverse order. Usable in-process (tests) as well as by {@link Main}.
 *
 * <p>Management state (nodes, iothreads, exports) has one owner, the main loop {@code jvhost-main}: the command
 * line is applied by tasks on it and QMP commands run on it, through the same methods ({@link #addIothread},
 * {@link #addBlockdev}, {@link #addExport}). Work that blocks (stopping an export, which waits for its rings to
 * drain; ending a thread) runs on a {@code jvhost-mgmt} thread and reports back to the main loop.
 */
public final class Daemon implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(Daemon.class.getName());
    private static final long MAIN_LOOP_TIMEOUT_S = 60;
    private static final ObjectNode QEMU_VERSION;

    static {
        // The QEMU release whose qemu-storage-daemon our command set follows; tools compare this number.
        QEMU_VERSION = Json.object();
        QEMU_VERSION.put("micro", 0);
        QEMU_VERSION.put("minor", 2);
        QEMU_VERSION.put("major", 7);
    }

    private final DaemonConfig cfg;
    private final Runnable onQuit;
    private final QmpServer.Limits qmpLimits;
    private AioContext mainLoop;
    private ExecutorService mgmt;
    private volatile QmpServer qmp;      // read by emit() from the main loop
    private boolean pidfileWritten;
    private boolean closed;

    // Owned by the main loop.
    private BlockNodes nodes;
    private BlockJobs jobs;
    private final Map<String, Map<String, String>> nodeOptions = new LinkedHashMap<>();
    /** An aio=io_uring node exists: iothreads created from now on run on io_uring (main loop only). */
    private boolean ioUringIothreads;
    private final Map<String, Iothread> iothreads = new LinkedHashMap<>();     // --object iothread / object-add
    private final Map<String, ExportEntry> exports = new LinkedHashMap<>();

    /** A user-created iothread. */
    record Iothread(IothreadSpec spec, AioContext ctx, long threadId) {}

    /** An export and what was made for it alone. */
    static final class ExportEntry {
        final ExportSpec spec;
        final BlockBackend blk;
        final VhostUserBlkExport export;
        final List<AioContext> ownIothreads;     // <export>-vq<q> when no iothread option was given
        boolean shuttingDown;

        ExportEntry(ExportSpec spec, BlockBackend blk, VhostUserBlkExport export, List<AioContext> ownIothreads) {
            this.spec = spec;
            this.blk = blk;
            this.export = export;
            this.ownIothreads = ownIothreads;
        }

        /** The node the export serves now: a completed mirror replaces the one it was created with. */
        String nodeName() {
            return blk.root().nodeName();
        }

        ExportSpec currentSpec() {
            String n = nodeName();
            return n.equals(spec.nodeName()) ? spec : new ExportSpec(spec.id(), n, spec.socketPath(), spec.listenFd(),
                    spec.numQueues(), spec.logicalBlockSize(), spec.writable(), spec.serial(), spec.iothreads());
        }
    }

    private Daemon(DaemonConfig cfg, Runnable onQuit, QmpServer.Limits qmpLimits) {
        this.cfg = cfg;
        this.onQuit = onQuit;
        this.qmpLimits = qmpLimits;
    }

    /** {@link #start(DaemonConfig, Runnable)} where QMP {@code quit} only logs. */
    public static Daemon start(DaemonConfig cfg) throws UsageException {
        return start(cfg, () -> LOG.warning("quit: nobody to tell"));
    }

    /**
     * Builds and starts everything. On failure, whatever was already built is closed again and the error comes
     * back as a {@link UsageException} naming the option it belongs to.
     *
     * @param onQuit what QMP {@code quit} does once its reply is written; runs on the QMP thread and must not
     *               block (Main releases its main thread, which then closes the daemon)
     */
    public static Daemon start(DaemonConfig cfg, Runnable onQuit) throws UsageException {
        return start(cfg, onQuit, QmpServer.Limits.DEFAULT);
    }

    static Daemon start(DaemonConfig cfg, Runnable onQuit, QmpServer.Limits qmpLimits) throws UsageException {
        Daemon d = new Daemon(cfg, onQuit, qmpLimits);
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
        AtomicInteger n = new AtomicInteger();
        mgmt = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "jvhost-mgmt-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
        onMain(() -> {
            nodes = new BlockNodes();
            jobs = new BlockJobs(mainLoop, mgmt, this::emit);
            return null;
        });
        // Nodes before iothreads: an aio=io_uring node makes the iothreads io_uring-backed (see addBlockdev).
        for (Map<String, String> tg : cfg.throttleGroups()) onMainDo(() -> addThrottleGroup(tg));
        for (Map<String, String> opts : cfg.blockdevs()) onMainDo(() -> addBlockdev(opts));
        for (IothreadSpec t : cfg.iothreads()) onMainDo(() -> addIothread(t));
        for (ExportSpec spec : cfg.exports()) onMainDo(() -> addExport(spec));

        if (!cfg.monitors().isEmpty()) {
            ObjectNode version = Json.object();
            version.set("qemu", QEMU_VERSION.deepCopy());
            version.put("package", "jvhost " + Main.version());
            qmp = new QmpServer(version, QmpCommands.of(this), qmpLimits);
            for (MonitorSpec m : cfg.monitors()) {
                String what = "chardev '" + m.chardev() + "'";
                replaceStaleSocket("--chardev", what, m.socketPath());
                try {
                    qmp.listen(m.chardev(), m.socketPath());
                } catch (IOException e) {
                    throw new UsageException("--chardev", what + ": cannot listen on " + m.socketPath() + ": " + e.getMessage());
                }
                LOG.info("QMP monitor on chardev " + m.chardev() + ", listening on " + m.socketPath());
            }
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

    /** Runs {@code c} on the main loop and waits; its UsageException or RuntimeException comes back as is. */
    private <T> T onMain(Callable<T> c) throws UsageException {
        try {
            return mainLoop.call(c, MAIN_LOOP_TIMEOUT_S, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            Throwable t = e.getCause();
            if (t instanceof UsageException u) throw u;
            if (t instanceof RuntimeException r) throw r;
            if (t instanceof Error er) throw er;
            throw new IllegalStateException(t);
        } catch (TimeoutException e) {
            throw new IllegalStateException("the main loop did not answer within " + MAIN_LOOP_TIMEOUT_S + " s", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }

    private interface MainTask {
        void run() throws UsageException;
    }

    private void onMainDo(MainTask t) throws UsageException {
        onMain(() -> {
            t.run();
            return null;
        });
    }

    private void assertMain(String what) {
        mainLoop.assertInContextThread(what);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Management operations: main loop only. Shared by the command line and QMP.

    /** {@code --object iothread} / object-add. */
    void addIothread(IothreadSpec spec) throws UsageException {
        assertMain("addIothread");
        if (objectExists(spec.id())) throw new UsageException("--object", "id '" + spec.id() + "' is already in use");
        AioContext ctx = AioContext.newIoThread(spec.id(), ioUringIothreads);
        ctx.setPollParams(spec.pollMaxNs(), spec.pollGrow(), spec.pollShrink());
        long tid;
        try {
            tid = ctx.call(Daemon::nativeThreadId, 10, TimeUnit.SECONDS);
        } catch (Exception e) {
            tid = -1;
        }
        iothreads.put(spec.id(), new Iothread(spec, ctx, tid));
        LOG.fine("iothread " + spec.id() + " started (thread-id " + tid + ")");
    }

    /** The calling thread's kernel thread id (what QEMU reports as thread-id), -1 if unknown. */
    private static long nativeThreadId() {
        try {
            // "/proc/thread-self" -> "<pid>/task/<tid>"
            String link = Files.readSymbolicLink(Path.of("/proc/thread-self")).toString();
            return Long.parseLong(link.substring(link.lastIndexOf('/') + 1));
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    /** {@code --blockdev} / blockdev-add: flat dotted keys, "driver" included. */
    void addBlockdev(Map<String, String> opts) throws UsageException {
        assertMain("addBlockdev");
        String child = opts.get("file");
        BlockDriverState c = child == null ? null : nodes.get(child);
        if (c != null) {
            // A mirror's target takes writes from the job only (QEMU: the job's BlockBackend shares no write permission).
            MirrorJob j = jobs.user(c);
            if (j != null && j.target() == c) throw new UsageException("--blockdev", BlockJobs.busy(c, j));
        }
        try {
            nodes.add(opts);
        } catch (BlockException e) {
            throw new UsageException("--blockdev", stripPrefix(e.getMessage(), "blockdev: "));
        } catch (RuntimeException e) {
            throw new UsageException("--blockdev", String.valueOf(e.getMessage()));
        }
        nodeOptions.put(opts.get("node-name"), Collections.unmodifiableMap(new LinkedHashMap<>(opts)));
        // Iothreads made from now on run on io_uring so the node can use their rings (earlier ones stay on epoll
        // and serve it through the thread pool; the command line opens nodes before it makes iothreads).
        for (Map.Entry<String, String> e : opts.entrySet()) {
            if ((e.getKey().equals("aio") || e.getKey().endsWith(".aio")) && "io_uring".equals(e.getValue())) ioUringIothreads = true;
        }
    }

    /** Iothreads and throttle groups share QOM's /objects namespace. */
    private boolean objectExists(String id) {
        return iothreads.containsKey(id) || nodes.throttleGroup(id) != null;
    }

    /**
     * {@code --object throttle-group,id=G,x-iops-total=...} / object-add: a budget shared by the throttle nodes
     * bound to it. {@code opts}: "id" and the limits, flat ({@code limits.iops-total} or legacy {@code x-iops-total}).
     */
    void addThrottleGroup(Map<String, String> opts) throws UsageException {
        assertMain("addThrottleGroup");
        String id = opts.get("id");
        if (id != null && objectExists(id)) throw new UsageException("--object", "id '" + id + "' is already in use");
        try {
            nodes.addThrottleGroup(opts);
        } catch (BlockException e) {
            throw new UsageException("--object", stripPrefix(e.getMessage(), "object: "));
        } catch (RuntimeException e) {
            throw new UsageException("--object", String.valueOf(e.getMessage()));
        }
    }

    /** {@code --export} / block-export-add: checks the export against what exists, then starts it. */
    void addExport(ExportSpec spec) throws UsageException {
        assertMain("addExport");
        Options.checkExport(spec, state());
        BlockDriverState root = nodes.get(spec.nodeName());
        MirrorJob job = jobs.user(root);
        if (job != null && job.target() == root) throw new UsageException("--export", BlockJobs.busy(root, job));
        List<AioContext> own = new ArrayList<>();
        BlockBackend blk = null;
        VhostUserBlkExport export = null;
        try {
            List<AioContext> queueThreads = new ArrayList<>(spec.numQueues());
            for (int q = 0; q < spec.numQueues(); q++) {
                String id = spec.iothreadOf(q);
                if (id == null) {
                    AioContext ctx = AioContext.newIoThread(spec.ownIothreadName(q), ioUringIothreads);
                    own.add(ctx);
                    queueThreads.add(ctx);
                } else {
                    queueThreads.add(iothreads.get(id).ctx());
                }
            }
            if (spec.socketPath() != null) replaceStaleSocket("--export", "export '" + spec.id() + "'", spec.socketPath());
            try {
                blk = new BlockBackend(root, spec.writable());
                BlkExportConfig ec = new BlkExportConfig(spec.id(), spec.socketPath(), spec.listenFd(),
                        spec.numQueues(), spec.logicalBlockSize(), spec.writable(), spec.serial());
                export = new VhostUserBlkExport(ec, blk, mainLoop, queueThreads);
            } catch (IllegalArgumentException e) {
                throw new UsageException("--export", e.getMessage());
            }
            try {
                export.start();
            } catch (IOException | RuntimeException e) {
                throw new UsageException("--export", "export '" + spec.id() + "': cannot listen on "
                        + spec.address() + ": " + e.getMessage());
            }
        } catch (UsageException | RuntimeException | Error e) {
            // Undo this export only. It never accepted a front-end, so its close has nothing to wait for; it runs
            // on a management thread all the same, as an export's close may need the main loop (this thread).
            if (export != null) {
                VhostUserBlkExport x = export;
                try {
                    mgmt.execute(() -> quietly("export " + spec.id(), x::close));
                } catch (RejectedExecutionException ex) {
                    // closing: close() takes it down
                }
            }
            if (blk != null) quietly("backend", blk::close);
            for (AioContext t : own) quietly(t.name(), t::close);
            throw e;
        }
        exports.put(spec.id(), new ExportEntry(spec, blk, export, own));
        LOG.info("export " + spec.id() + ": node '" + spec.nodeName() + "'" + (spec.writable() ? " writable" : " read-only")
                + ", " + spec.numQueues() + " queue(s), listening on " + spec.address());
    }

    /**
     * block-export-del: marks the export as shutting down and returns; a management thread then stops its rings
     * (requests taken from them complete first), disconnects its front-end and closes its socket, and the main
     * loop finally forgets it and emits BLOCK_EXPORT_DELETED. QEMU's vhost-user-blk server holds no export
     * reference for a connected front-end, so mode 'safe' disconnects it like 'hard'.
     */
    void deleteExport(String id) throws QmpException {
        assertMain("deleteExport");
        ExportEntry e = exports.get(id);
        if (e == null) throw new QmpException("Export '" + id + "' is not found");
        if (e.shuttingDown) throw new QmpException("Export '" + id + "' is already shutting down");
        e.shuttingDown = true;
        LOG.info("export " + id + ": deleting (draining its rings, disconnecting its front-end)");
        try {
            mgmt.execute(() -> {
                teardown(e);
                try {
                    mainLoop.execute(() -> {
                        exports.remove(id, e);
                        LOG.info("export " + id + ": deleted");
                        ObjectNode data = Json.object();
                        data.put("id", id);
                        emit("BLOCK_EXPORT_DELETED", data);
                    });
                } catch (RejectedExecutionException ex) {
                    // the daemon is closing: nobody to tell
                }
            });
        } catch (RejectedExecutionException ex) {
            // the daemon is closing: close() takes the export down
        }
    }

    /** Blocking: off the main loop. */
    private static void teardown(ExportEntry e) {
        quietly("export " + e.spec.id(), e.export::close);
        quietly("backend of " + e.spec.id(), e.blk::close);
        for (AioContext t : e.ownIothreads) quietly(t.name(), t::close);
    }

    /**
     * object-del: an iothread (completes once its thread has ended) or a throttle group that no throttle node
     * uses (QEMU: a group is deletable while only the QOM tree references it).
     */
    CompletableFuture<Void> deleteObject(String id) throws QmpException {
        assertMain("deleteObject");
        if (iothreads.containsKey(id)) return deleteIothread(id);
        if (nodes.throttleGroup(id) == null) throw new QmpException("object '" + id + "' not found");
        try {
            nodes.removeThrottleGroup(id);
        } catch (BlockException e) {
            throw new QmpException("object '" + id + "' is in use, can not be deleted");
        }
        LOG.fine("throttle group " + id + " deleted");
        return CompletableFuture.completedFuture(null);
    }

    /** object-del of an iothread; completes once its thread has ended. */
    private CompletableFuture<Void> deleteIothread(String id) throws QmpException {
        Iothread t = iothreads.get(id);
        for (ExportEntry e : exports.values()) {
            if (e.spec.iothreads().contains(id)) throw new QmpException("object '" + id + "' is in use, can not be deleted");
        }
        iothreads.remove(id);
        return CompletableFuture.runAsync(() -> quietly(t.ctx().name(), t.ctx()::close), mgmt);
    }

    /**
     * blockdev-del, with QEMU's checks in QEMU's order: the node must exist, no export's backend may use it
     * (QEMU: a BlockBackend; a mirror's target counts, QEMU's job has a backend on it), no job may hold it (op
     * blockers), and no other node may have it as a child. Removing a node waits (bounded) for requests still in
     * flight on it; a node nobody uses has none unless an export was just deleted.
     */
    void deleteBlockdev(String nodeName) throws QmpException {
        assertMain("deleteBlockdev");
        BlockDriverState bs = nodes.get(nodeName);
        if (bs == null) throw new QmpException("Failed to find node with node-name='" + nodeName + "'");
        MirrorJob job = jobs.user(bs);
        boolean exported = exports.values().stream().anyMatch(e -> e.blk.root() == bs);
        if (exported || (job != null && job.target() == bs)) throw new QmpException("Node " + nodeName + " is in use");
        if (job != null) throw new QmpException(BlockJobs.busy(bs, job));
        if (parentNodeOf(bs) != null) throw new QmpException("Block device " + nodeName + " is in use");
        try {
            nodes.remove(nodeName);
        } catch (BlockException e) {
            // Another user than the ones above (the block layer's own check): its words.
            throw new QmpException(stripPrefix(e.getMessage(), "blockdev: "));
        }
        nodeOptions.remove(nodeName);
        LOG.info("node " + nodeName + " deleted");
    }

    /** A node that has {@code bs} as a child, or null. */
    private BlockDriverState parentNodeOf(BlockDriverState bs) {
        for (BlockDriverState n : nodes.all()) {
            if (n == bs) continue;
            for (io.jvhost.block.BdrvChild c : n.children()) {
                if (c.bs() == bs) return n;
            }
        }
        return null;
    }

    /**
     * blockdev-mirror, once its arguments are checked: the node checks of QEMU's qmp_blockdev_mirror and
     * mirror_start_job, then the job ({@link BlockJobs#startMirror}). The source is a root node (exported or
     * not); on completion every user of the source (an export's backend) switches to the target.
     */
    void startMirror(String jobId, String device, String target, long granularity, int maxOps, boolean autoDismiss)
            throws QmpException {
        assertMain("startMirror");
        BlockDriverState src = nodes.get(device);
        if (src == null) throw new QmpException("Cannot find device='" + device + "' nor node-name='" + device + "'");
        if (parentNodeOf(src) != null) throw new QmpException("Need a root block node");
        BlockDriverState tgt = nodes.get(target);
        if (tgt == null) throw new QmpException("Cannot find device='" + target + "' nor node-name='" + target + "'");
        MirrorJob j = jobs.user(src);
        if (j != null) throw new QmpException(BlockJobs.busy(src, j));
        j = jobs.user(tgt);
        if (j != null) throw new QmpException(BlockJobs.busy(tgt, j));
        if (src == tgt) throw new QmpException("Can't mirror node into itself");
        if (src.getLength() != tgt.getLength()) throw new QmpException("Source and target image have different sizes");
        if (tgt.isReadOnly()) throw new QmpException("Block node is read-only");
        // The job must be the target's only writer until it completes (QEMU: permission conflict).
        for (ExportEntry e : exports.values()) {
            if (e.blk.root() == tgt) {
                throw new QmpException("Target node '" + target + "' is in use by export '" + e.spec.id() + "'");
            }
        }
        BlockDriverState p = parentNodeOf(tgt);
        if (p != null) throw new QmpException("Target node '" + target + "' is in use by node '" + p.nodeName() + "'");
        jobs.startMirror(jobId, src, tgt, granularity, maxOps, autoDismiss);
    }

    BlockJobs jobs() {
        return jobs;
    }

    /** The state a new export is checked against (main loop). */
    private Options.State state() {
        return new Options.State() {
            @Override
            public Boolean nodeReadOnly(String node) {
                BlockDriverState bs = nodes.get(node);
                return bs == null ? null : bs.isReadOnly();
            }

            @Override
            public boolean hasIothread(String id) {
                return iothreads.containsKey(id);
            }

            @Override
            public Collection<ExportSpec> exports() {
                // Exports shutting down still hold their socket and their node; a mirror may have moved them to another.
                return exports.values().stream().map(ExportEntry::currentSpec).toList();
            }

            @Override
            public Collection<MonitorSpec> monitors() {
                return cfg.monitors();
            }
        };
    }

    // Read access for QmpCommands (main loop).
    BlockNodes nodes() {
        return nodes;
    }

    Map<String, String> nodeOptions(String nodeName) {
        return nodeOptions.getOrDefault(nodeName, Map.of());
    }

    Collection<Iothread> iothreadList() {
        return iothreads.values();
    }

    Collection<ExportEntry> exportList() {
        return exports.values();
    }

    void quit() {
        LOG.info("QMP quit: shutting down");
        onQuit.run();
    }

    void emit(String event, ObjectNode data) {
        QmpServer q = qmp;
        if (q != null) q.emit(event, data);
    }

    // ------------------------------------------------------------------------------------------------------------

    /**
     * Refuses a path that exists and is not a socket; removes a stale socket (of an earlier run). For exports this
     * is also checked before the export is created: its close() (also run after a failed start) unlinks its path.
     */
    private static void replaceStaleSocket(String option, String what, String socketPath) throws UsageException {
        Path p = Path.of(socketPath);
        if (!Files.exists(p, LinkOption.NOFOLLOW_LINKS)) return;
        boolean socket;
        try {
            int mode = (Integer) Files.getAttribute(p, "unix:mode", LinkOption.NOFOLLOW_LINKS);
            socket = (mode & 0170000) == 0140000;
        } catch (IOException | UnsupportedOperationException e) {
            socket = false;
        }
        if (!socket) throw new UsageException(option, what + ": " + socketPath + " exists and is not a socket");
        try {
            Files.deleteIfExists(p);
        } catch (IOException e) {
            throw new UsageException(option, what + ": cannot replace the stale socket " + socketPath + ": " + e.getMessage());
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

    /** The main loop ({@code jvhost-main}): owner of the management state. */
    public AioContext mainLoop() {
        return mainLoop;
    }

    /** The QMP server, or null when no --monitor was given. */
    public QmpServer qmp() {
        return qmp;
    }

    /** The exports now (including those shutting down), in the order they were added. */
    public List<VhostUserBlkExport> exports() {
        try {
            return onMain(() -> exports.values().stream().map(e -> e.export).toList());
        } catch (UsageException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Stops the monitors, then the exports (rings drain, front-ends are disconnected, sockets unlinked), detaches
     * and closes the block nodes, stops the iothreads and the main loop, and removes the pidfile. Idempotent;
     * never throws.
     */
    @Override
    public void close() {
        synchronized (this) {
            if (closed) return;
            closed = true;
        }
        // No new commands; a command already handed to the main loop runs before the snapshot below.
        if (qmp != null) quietly("QMP server", qmp::close);
        List<ExportEntry> ex = List.of();
        List<Iothread> its = List.of();
        List<BlockJobs.Entry> js = List.of();
        BlockNodes ns = null;
        if (mainLoop != null) {
            try {
                Object[] snap = mainLoop.call(() -> new Object[] {
                        new ArrayList<>(exports.values()), new ArrayList<>(iothreads.values()), nodes,
                        jobs == null ? List.of() : jobs.snapshot()}, 30, TimeUnit.SECONDS);
                @SuppressWarnings("unchecked") List<ExportEntry> e0 = (List<ExportEntry>) snap[0];
                @SuppressWarnings("unchecked") List<Iothread> i0 = (List<Iothread>) snap[1];
                @SuppressWarnings("unchecked") List<BlockJobs.Entry> j0 = (List<BlockJobs.Entry>) snap[3];
                ex = e0;
                its = i0;
                ns = (BlockNodes) snap[2];
                js = j0;
            } catch (Exception e) {
                LOG.log(Level.WARNING, "the main loop did not hand over its state; closing what is known", e);
                ex = new ArrayList<>(exports.values());
                its = new ArrayList<>(iothreads.values());
                ns = nodes;
            }
        }
        // Jobs first: a mirror must not switch an export to its target while the exports go down.
        if (!js.isEmpty()) BlockJobs.close(js, 10, TimeUnit.SECONDS);
        // An export being deleted is closed again here: close() is idempotent and waits for the first one.
        for (int i = ex.size() - 1; i >= 0; i--) {
            ExportEntry e = ex.get(i);
            quietly("export " + e.spec.id(), e.export::close);
        }
        for (ExportEntry e : ex) quietly("backend of " + e.spec.id(), e.blk::close);
        if (ns != null) quietly("block nodes", ns::close);
        for (ExportEntry e : ex) {
            for (AioContext t : e.ownIothreads) quietly(t.name(), t::close);
        }
        for (Iothread t : its) quietly(t.ctx().name(), t.ctx()::close);
        if (mgmt != null) {
            mgmt.shutdown();
            try {
                if (!mgmt.awaitTermination(MAIN_LOOP_TIMEOUT_S, TimeUnit.SECONDS)) LOG.warning("management work still running");
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
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
