package io.jvhost.vhostuser;

import io.jvhost.block.BlockBackend;
import io.jvhost.iothread.AioContext;
import org.newsclub.net.unix.AFUNIXServerSocketChannel;
import org.newsclub.net.unix.AFUNIXSocketAddress;
import org.newsclub.net.unix.AFUNIXSocketChannel;
import org.newsclub.net.unix.FileDescriptorCast;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A vhost-user-blk export: a listening unix socket (its own path or an inherited fd) served on the main loop,
 * one front-end at a time. Each connection gets a fresh {@link BlkDevice}; the next front-end is accepted only
 * after the previous one's rings have stopped and its memory is unmapped.
 */
public final class VhostUserBlkExport implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(VhostUserBlkExport.class.getName());

    private final BlkExportConfig cfg;
    private final BlockBackend blk;
    private final Quiesce quiesce = new Quiesce();
    /** Per virtqueue, kept across front-end connections. */
    private final List<QueueStats> stats;
    private final AioContext mainLoop;
    private final List<AioContext> queueThreads;
    private AFUNIXServerSocketChannel server;
    private int serverFd;
    private AioContext.FdHandler acceptHandler;
    private Connection conn;
    private BlkDevice device;
    private DirtyStats lastDirtyStats = DirtyStats.NONE;
    private CompletableFuture<Void> connDone = CompletableFuture.completedFuture(null);
    private int connections;
    private boolean closed;
    /** Set once we created the socket file: close() unlinks only what this export made. */
    private boolean ownsSocketFile;

    public VhostUserBlkExport(BlkExportConfig cfg, BlockBackend blk, AioContext mainLoop, List<AioContext> queueThreads) {
        if (queueThreads.size() != cfg.numQueues()) {
            throw new IllegalArgumentException("export " + cfg.id() + ": " + cfg.numQueues() + " queues but " + queueThreads.size() + " iothreads");
        }
        for (AioContext t : queueThreads) {
            if (!t.isIoThread()) throw new IllegalArgumentException("export " + cfg.id() + ": virtqueues must run in iothreads, not " + t.name());
        }
        if (mainLoop.isIoThread()) throw new IllegalArgumentException("export " + cfg.id() + ": the socket belongs to the main loop");
        if (cfg.writable() && !blk.isWritable()) throw new IllegalArgumentException("export " + cfg.id() + ": writable export on a read-only backend");
        this.cfg = cfg;
        this.blk = blk;
        List<QueueStats> st = new java.util.ArrayList<>();
        for (int i = 0; i < cfg.numQueues(); i++) st.add(new QueueStats());
        this.stats = List.copyOf(st);
        this.mainLoop = mainLoop;
        // block_resize: the current front-end (if any) is told on the main loop, where the device lives.
        quiesce.setOnResized(() -> mainLoop.execute(this::onResized));
        blk.setDevOps(quiesce); // drain phase 3 for this export: its queues stop taking requests
        this.queueThreads = List.copyOf(queueThreads);
    }

    public BlkExportConfig config() {
        return cfg;
    }

    /** Listens: a unix path (created 0600; a stale socket file is replaced) or the inherited listening fd. */
    public void start() throws IOException {
        if (cfg.socketPath() != null) {
            Path p = Path.of(cfg.socketPath());
            if (Files.exists(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                // Replace a stale socket of an earlier run, but never delete anything that is not a socket.
                int mode = (Integer) Files.getAttribute(p, "unix:mode", java.nio.file.LinkOption.NOFOLLOW_LINKS);
                if ((mode & 0170000) != 0140000) throw new IOException(cfg.socketPath() + " exists and is not a socket");
                Files.delete(p);
            }
            server = AFUNIXServerSocketChannel.open();
            // The umask is process-wide; bind, then restrict before anyone can rely on it.
            server.bind(AFUNIXSocketAddress.of(new File(cfg.socketPath())), 1);
            ownsSocketFile = true;
            Files.setPosixFilePermissions(p, PosixFilePermissions.fromString("rw-------"));
        } else {
            server = FileDescriptorCast.unsafeUsing(cfg.listenFd()).as(AFUNIXServerSocketChannel.class);
        }
        server.configureBlocking(false);
        serverFd = FileDescriptorCast.using(server.getFileDescriptor()).as(Integer.class);
        call(() -> {
            acceptHandler = mainLoop.setFdHandler(serverFd, this::onAcceptable);
            return null;
        });
    }

    /** I/O statistics per virtqueue (query-blockstats); readable from any thread. */
    public List<QueueStats> queueStats() {
        return stats;
    }

    /** The block backend this export serves (management: stats, mirror, resize). */
    public BlockBackend backend() {
        return blk;
    }

    /** Number of front-ends accepted so far (tests, stats). */
    public int connectionCount() {
        return connections;
    }

    /**
     * Dirty-page logging done for the current front-end since it connected (for the previous one once it is gone;
     * {@link DirtyStats#NONE} before any). Any thread.
     */
    public DirtyStats dirtyStats() {
        try {
            return call(() -> device != null ? device.dirtyStats() : lastDirtyStats);
        } catch (IOException e) {
            throw new IllegalStateException(e.getMessage(), e);
        }
    }

    private void onAcceptable() {
        if (closed || conn != null) return;
        AFUNIXSocketChannel ch;
        try {
            ch = server.accept();
        } catch (IOException e) {
            LOG.warning(cfg.id() + ": accept failed: " + e.getMessage());
            return;
        }
        if (ch == null) return;
        connections++;
        String name = "export " + cfg.id() + " conn#" + connections;
        try {
            CompletableFuture<Void> done = new CompletableFuture<>();
            BlkDevice[] self = new BlkDevice[1];
            BlkDevice dev = new BlkDevice(name, cfg, blk, mainLoop, queueThreads, quiesce, stats, () -> {
                conn = null;
                lastDirtyStats = self[0].dirtyStats();
                device = null;
                done.complete(null);
                LOG.info(name + ": closed");
                if (!closed) resumeAccepting();
            });
            self[0] = dev;
            conn = new Connection(name, ch, mainLoop, dev);
            device = dev;
            connDone = done;
            // One front-end at a time: stop accepting until this one is gone (others wait in the backlog).
            acceptHandler.remove();
            acceptHandler = null;
            conn.start();
            LOG.info(name + ": front-end connected");
        } catch (IOException e) {
            LOG.warning(name + ": cannot set up connection: " + e.getMessage());
            conn = null;
            device = null;
            try {
                ch.close();
            } catch (IOException ignored) {
                // nothing more to do
            }
        }
    }

    /** Main loop: the backend's length changed; GET_CONFIG already reports it live, the front-end needs a nudge. */
    private void onResized() {
        LOG.info(cfg.id() + ": resized to " + blk.getLength() + " bytes");
        if (device != null) device.configChanged();
    }

    private void resumeAccepting() {
        if (acceptHandler == null && !closed) acceptHandler = mainLoop.setFdHandler(serverFd, this::onAcceptable);
    }

    /** Stops the rings (letting requests complete), disconnects the front-end, closes and unlinks the socket. */
    @Override
    public void close() {
        try {
            CompletableFuture<Void> f = closeAsync();
            if (mainLoop.inContextThread() && !f.isDone()) {
                // Waiting here would stop the very loop that finishes the close: it completes on its own.
                LOG.warning(cfg.id() + ": close() on the main loop with a front-end attached; finishing asynchronously");
                return;
            }
            f.get(60, TimeUnit.SECONDS);
        } catch (Exception e) {
            LOG.log(Level.WARNING, cfg.id() + ": close did not finish cleanly", e);
            closeSocket();
        }
    }

    /**
     * Non-blocking close, callable from any thread including the main loop (QMP block-export-del): the future
     * completes once the front-end's rings have stopped (their requests completed), it is disconnected, and the
     * socket is closed and unlinked.
     */
    public CompletableFuture<Void> closeAsync() {
        CompletableFuture<Void> done = new CompletableFuture<>();
        Runnable body = () -> {
            if (!closed) {
                closed = true;
                if (acceptHandler != null) {
                    acceptHandler.remove();
                    acceptHandler = null;
                }
                if (conn != null) conn.close();
            }
            connDone.whenComplete((x, t) -> {
                closeSocket();
                done.complete(null);
            });
        };
        // On the main loop itself (a failed start, a QMP command) run at once: nothing may wait for a later task.
        if (mainLoop.inContextThread()) body.run();
        else mainLoop.execute(body);
        return done;
    }

    private synchronized void closeSocket() {
        try {
            if (server != null) server.close();
        } catch (IOException e) {
            LOG.log(Level.FINE, "close", e);
        }
        if (ownsSocketFile) {
            ownsSocketFile = false;
            try {
                Files.deleteIfExists(Path.of(cfg.socketPath()));
            } catch (IOException e) {
                LOG.fine("unlink: " + e);
            }
        }
    }

    private <T> T call(java.util.concurrent.Callable<T> c) throws IOException {
        try {
            return mainLoop.call(c, 30, TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new IOException(cfg.id() + ": main loop did not run the task: " + e, e);
        }
    }
}
