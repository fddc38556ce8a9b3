package io.jvhost.vhostuser;

import io.jvhost.block.BlockBackend;
import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.sys.EventFd;
import io.jvhost.iothread.sys.Libc;
import io.jvhost.virtqueue.DirtyLog;
import io.jvhost.virtqueue.GuestMemory;
import io.jvhost.virtqueue.InvalidGuestAddressException;
import io.jvhost.virtqueue.MemoryRegion;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.logging.Logger;

/**
 * The vhost-user-blk device state of ONE front-end connection (a new connection gets a new, clean instance).
 * Runs on the main loop. Messages whose effect must wait for iothreads (a ring that drains before it stops, a
 * memory table that is replaced under running rings) return a future; the connection stops reading until it
 * completes, so messages keep their order and the main loop never blocks.
 */
final class BlkDevice implements Connection.Handler {
    private static final Logger LOG = Logger.getLogger(BlkDevice.class.getName());

    static final long PROTOCOL_FEATURES = Proto.PF_MQ | Proto.PF_LOG_SHMFD | Proto.PF_REPLY_ACK | Proto.PF_BACKEND_REQ
            | Proto.PF_CONFIG | Proto.PF_RESET_DEVICE | Proto.PF_CONFIGURE_MEM_SLOTS | Proto.PF_STATUS;

    /** SET_VRING_ADDR flags: VHOST_VRING_F_LOG (bit 0), log used-ring writes at the log address. */
    static final int VRING_F_LOG = 1;
    /** Virtio device status bits (SET_STATUS). */
    static final int S_DRIVER_OK = 4, S_NEEDS_RESET = 64;
    /** Bound on the used-ring pages remembered for the statistics (a front-end may re-address rings at will). */
    private static final int MAX_USED_RING_PAGES = 4096;

    /** QEMU's VIRTQUEUE_MAX_SIZE: bounds the per-queue request pool a front-end can make us allocate. */
    static final int MAX_QUEUE_SIZE = 1024;

    private final Quiesce quiesce;
    private final String name;
    private final BlkExportConfig cfg;
    private final BlockBackend blk;
    private final AioContext mainLoop;
    private final Vring[] vrings;
    private final Runnable onDone;

    private long ackedFeatures;
    private boolean featuresSet;
    private long ackedProtocolFeatures;
    private GuestMemory mem = GuestMemory.empty();
    private int backendReqFd = -1;
    private boolean writeback = true;
    private boolean closed;
    private int status; // virtio device status byte (SET_STATUS)

    // Dirty logging (migration). The queues get every change through posted tasks (see pushLog).
    private final DirtyAccounting dirty = new DirtyAccounting();
    private DirtyLog log;
    private EventFd logCall;
    /** The last SET_LOG_BASE was refused: LOG_ALL is refused until a log is mapped, so the front-end notices. */
    private boolean logBaseRefused;
    /** LOG_ALL was on since the last statistics line (one line per logging session). */
    private boolean logSessionOpen;
    /** Pages (at their log address) of the used rings that were given VHOST_VRING_F_LOG. */
    private final Set<Long> usedRingLogPages = new LinkedHashSet<>();

    /** Front-end view of one ring; the live ring state is in {@link BlkQueue} on its iothread. */
    private static final class Vring {
        final BlkQueue q;
        int num;
        boolean addrSet;
        long descUaddr, usedUaddr, availUaddr, logGpa;
        int addrFlags;
        int base;
        EventFd kick, call, err;
        boolean enabled, started, running;
        CompletableFuture<Integer> stopping;

        Vring(BlkQueue q) {
            this.q = q;
        }
    }

    BlkDevice(String name, BlkExportConfig cfg, BlockBackend blk, AioContext mainLoop, List<AioContext> threads,
              Quiesce quiesce, List<QueueStats> stats, Runnable onDone) {
        this.quiesce = quiesce;
        this.name = name;
        this.cfg = cfg;
        this.blk = blk;
        this.mainLoop = mainLoop;
        this.onDone = onDone;
        this.vrings = new Vring[cfg.numQueues()];
        for (int i = 0; i < vrings.length; i++) {
            vrings[i] = new Vring(new BlkQueue(name + " vq" + i, i, threads.get(i), blk, cfg.serial(), cfg.logicalBlockSize(), dirty, quiesce, stats.get(i)));
            quiesce.register(vrings[i].q);
        }
        writeback = !cfg.writethrough();
        blk.setWriteCacheEnabled(writeback);
    }

    long offeredFeatures() {
        long f = Proto.F_VERSION_1 | Proto.F_INDIRECT_DESC | Proto.F_EVENT_IDX | Proto.F_PROTOCOL_FEATURES | Proto.F_LOG_ALL
                | VirtioBlk.F_SIZE_MAX | VirtioBlk.F_SEG_MAX | VirtioBlk.F_BLK_SIZE | VirtioBlk.F_FLUSH
                | VirtioBlk.F_TOPOLOGY | VirtioBlk.F_CONFIG_WCE | VirtioBlk.F_MQ | VirtioBlk.F_DISCARD
                | VirtioBlk.F_WRITE_ZEROES | VirtioBlk.F_OUT_FUA;
        if (!blk.isWritable()) f |= VirtioBlk.F_RO;
        return f;
    }

    // ---------------------------------------------------------------- dispatch

    @Override
    public void onMessage(Connection c, Message m) {
        mainLoop.assertInContextThread("vhost-user message handling");
        CompletableFuture<Void> pending;
        try {
            pending = handle(c, m);
        } catch (FatalProtocolException e) {
            LOG.warning(name + ": " + e.getMessage() + "; closing connection");
            c.close();
            return;
        } catch (ProtocolException e) {
            fail(c, m, e.getMessage());
            return;
        } catch (RuntimeException e) {
            // A bug of ours must not take the process down; the front-end gets a failure or a disconnect.
            LOG.log(java.util.logging.Level.SEVERE, name + ": " + m + " failed", e);
            fail(c, m, "internal error: " + e);
            return;
        }
        if (pending == null) {
            ack(c, m, 0);
            return;
        }
        c.pause();
        pending.whenComplete((v, t) -> mainLoop.execute(() -> {
            if (c.isClosed()) return;
            if (t != null) {
                Throwable cause = t instanceof java.util.concurrent.CompletionException && t.getCause() != null ? t.getCause() : t;
                fail(c, m, cause.getMessage());
            } else {
                ack(c, m, 0);
            }
            c.resume();
        }));
    }

    /** REPLY_ACK: every message that asked for it and has no reply of its own gets a u64 status. */
    private void ack(Connection c, Message m, long status) {
        if (m.needReply() && !hasOwnReply(m.request) && (ackedProtocolFeatures & Proto.PF_REPLY_ACK) != 0) {
            c.replyU64(m.request, status);
        }
    }

    private void fail(Connection c, Message m, String why) {
        if (m.needReply() && !hasOwnReply(m.request) && (ackedProtocolFeatures & Proto.PF_REPLY_ACK) != 0) {
            LOG.warning(name + ": " + Proto.name(m.request) + " refused: " + why);
            c.replyU64(m.request, 1);
        } else {
            // No way to report the error in-band: the front-end must not go on believing it worked.
            LOG.warning(name + ": " + Proto.name(m.request) + " refused: " + why + "; closing connection");
            c.close();
        }
    }

    private boolean hasOwnReply(int req) {
        switch (req) {
            case Proto.GET_FEATURES:
            case Proto.GET_PROTOCOL_FEATURES:
            case Proto.GET_VRING_BASE:
            case Proto.GET_QUEUE_NUM:
            case Proto.GET_CONFIG:
            case Proto.GET_MAX_MEM_SLOTS:
                return true;
            case Proto.GET_STATUS: // without STATUS it is refused like any unknown message (REPLY_ACK nack)
                return (ackedProtocolFeatures & Proto.PF_STATUS) != 0;
            case Proto.SET_LOG_BASE: // the spec's mandatory reply, only with LOG_SHMFD
                return (ackedProtocolFeatures & Proto.PF_LOG_SHMFD) != 0;
            default:
                return false;
        }
    }

    private CompletableFuture<Void> handle(Connection c, Message m) throws ProtocolException {
        switch (m.request) {
            case Proto.GET_FEATURES:
                m.expectSize(0);
                c.replyU64(m.request, offeredFeatures());
                return null;
            case Proto.SET_FEATURES:
                return setFeatures(m);
            case Proto.GET_PROTOCOL_FEATURES:
                m.expectSize(0);
                c.replyU64(m.request, PROTOCOL_FEATURES);
                return null;
            case Proto.SET_PROTOCOL_FEATURES: {
                m.expectSize(8);
                long pf = m.u64(0);
                if ((pf & ~PROTOCOL_FEATURES) != 0) throw new ProtocolException("protocol features 0x" + Long.toHexString(pf) + " not offered");
                ackedProtocolFeatures = pf;
                return null;
            }
            case Proto.SET_OWNER:
                m.expectSize(0);
                return null;
            case Proto.RESET_OWNER:
                // Deprecated; treated as "stop every ring" so a front-end using it gets a quiet device.
                return stopAll().thenComposeAsync(x -> {
                    if (closed) return CompletableFuture.completedFuture(null);
                    boolean wasLogging = logging();
                    ackedFeatures = 0;
                    featuresSet = false;
                    return wasLogging ? pushLog().thenRunAsync(this::endLogSession, mainLoop) : CompletableFuture.completedFuture(null);
                }, mainLoop);
            case Proto.RESET_DEVICE:
                m.expectSize(0);
                return resetDevice();
            case Proto.SET_STATUS:
                return setStatus(m);
            case Proto.GET_STATUS:
                requireStatusFeature(m);
                m.expectSize(0);
                c.replyU64(m.request, deviceStatus());
                return null;
            case Proto.SET_LOG_BASE:
                return setLogBase(c, m);
            case Proto.SET_LOG_FD:
                return setLogFd(m);
            case Proto.GET_QUEUE_NUM:
                m.expectSize(0);
                c.replyU64(m.request, vrings.length);
                return null;
            case Proto.GET_MAX_MEM_SLOTS:
                m.expectSize(0);
                c.replyU64(m.request, GuestMemory.maxRegions());
                return null;
            case Proto.SET_MEM_TABLE:
                return setMemTable(m);
            case Proto.ADD_MEM_REG:
                return addMemReg(m);
            case Proto.REM_MEM_REG:
                return remMemReg(m);
            case Proto.SET_VRING_NUM: {
                Vring v = vringOf(m, 8);
                int num = m.u32(4);
                if (num < 1 || num > MAX_QUEUE_SIZE || Integer.bitCount(num) != 1) throw new ProtocolException("SET_VRING_NUM: bad queue size " + Integer.toUnsignedString(num));
                if (v.running) throw new ProtocolException("SET_VRING_NUM on running ring");
                v.num = num;
                return null;
            }
            case Proto.SET_VRING_ADDR:
                return setVringAddr(m);
            case Proto.SET_VRING_BASE: {
                Vring v = vringOf(m, 8);
                if (v.running) throw new ProtocolException("SET_VRING_BASE on running ring");
                v.base = m.u32(4) & 0xffff;
                return null;
            }
            case Proto.GET_VRING_BASE:
                return getVringBase(c, m);
            case Proto.SET_VRING_KICK:
                return setVringFd(m, 0);
            case Proto.SET_VRING_CALL:
                return setVringFd(m, 1);
            case Proto.SET_VRING_ERR:
                return setVringFd(m, 2);
            case Proto.SET_VRING_ENABLE: {
                Vring v = vringOf(m, 8);
                int on = m.u32(4);
                if (on != 0 && on != 1) throw new ProtocolException("SET_VRING_ENABLE: bad value " + on);
                v.enabled = on == 1;
                if (v.enabled) return maybeStart(v);
                return stopRing(v).thenApply(x -> null);
            }
            case Proto.GET_CONFIG:
                return getConfig(c, m);
            case Proto.SET_CONFIG:
                return setConfig(m);
            case Proto.SET_BACKEND_REQ_FD: {
                m.expectSize(0);
                int fd = m.takeFd(0);
                if (fd < 0) throw new ProtocolException("SET_BACKEND_REQ_FD without fd");
                if (backendReqFd >= 0) Libc.close(backendReqFd);
                backendReqFd = fd; // kept for CONFIG_CHANGE messages (block_resize)
                return null;
            }
            default:
                throw new ProtocolException("unsupported message " + Proto.name(m.request));
        }
    }

    private Vring vringOf(Message m, int size) throws ProtocolException {
        m.expectSize(size);
        int idx = m.u32(0);
        if (idx < 0 || idx >= vrings.length) throw new ProtocolException(Proto.name(m.request) + ": vring index " + Integer.toUnsignedString(idx) + " out of range");
        return vrings[idx];
    }

    // ---------------------------------------------------------------- features

    private CompletableFuture<Void> setFeatures(Message m) throws ProtocolException {
        m.expectSize(8);
        long f = m.u64(0);
        if ((f & ~offeredFeatures()) != 0) throw new ProtocolException("features 0x" + Long.toHexString(f & ~offeredFeatures()) + " not offered");
        for (Vring v : vrings) {
            if (v.running && ((f ^ ackedFeatures) & (Proto.F_EVENT_IDX | Proto.F_INDIRECT_DESC)) != 0) {
                throw new ProtocolException("SET_FEATURES changes ring features while rings run");
            }
        }
        if ((f & Proto.F_LOG_ALL) != 0 && logBaseRefused) {
            // QEMU ignores the value of SET_LOG_BASE's reply but checks this ack: refusing here makes a log we
            // could not map fail the migration instead of silently losing dirty pages.
            throw new ProtocolException("SET_FEATURES: LOG_ALL refused, the last SET_LOG_BASE could not be mapped");
        }
        boolean wasLogging = logging();
        ackedFeatures = f;
        featuresSet = true;
        // Without PROTOCOL_FEATURES rings are enabled from the start (spec).
        if ((f & Proto.F_PROTOCOL_FEATURES) == 0) {
            for (Vring v : vrings) v.enabled = true;
        }
        // No FLUSH negotiated: the driver cannot ask for stability, so every write must be stable (writethrough).
        blk.setWriteCacheEnabled(writeback && (f & VirtioBlk.F_FLUSH) != 0);
        if (wasLogging == logging()) return null;
        // Migration toggles LOG_ALL while the rings run: the queues switch between two requests, nothing stops.
        // The ack waits for that, so every write after it is logged (on) or the counts are final (off).
        if (logging()) logSessionOpen = true;
        return pushLog().thenRunAsync(() -> {
            if (!logging()) endLogSession();
        }, mainLoop);
    }

    // ---------------------------------------------------------------- dirty logging

    private boolean logging() {
        return (ackedFeatures & Proto.F_LOG_ALL) != 0;
    }

    /** Hands the current log, LOG_ALL and log eventfd to every queue; completes when all of them switched. */
    private CompletableFuture<Void> pushLog() {
        List<CompletableFuture<?>> fs = new ArrayList<>();
        for (Vring v : vrings) fs.add(v.q.setLog(log, logging(), logCall));
        return CompletableFuture.allOf(fs.toArray(new CompletableFuture[0]));
    }

    /** The statistics line, once per logging session (LOG_ALL off, device reset or disconnect). */
    private void endLogSession() {
        if (!logSessionOpen) return;
        logSessionOpen = false;
        LOG.info(name + ": " + dirtyStats().logText());
    }

    DirtyStats dirtyStats() {
        int usedMarked = 0;
        for (long p : usedRingLogPages) if (dirty.pages.contains(p)) usedMarked++;
        return new DirtyStats(dirty.pages.count(), usedMarked, usedRingLogPages.size(), dirty.outsideLog.sum());
    }

    /** Remembers the pages a ring's used ring occupies at its log address (for the statistics only). */
    private void noteUsedRingLog(Vring v) {
        if ((v.addrFlags & VRING_F_LOG) == 0 || v.num == 0) return;
        long first = v.logGpa, last = v.logGpa + 6 + 8L * v.num - 1;
        if (Long.compareUnsigned(last, first) < 0) return; // wraps: no page of it can be marked either
        for (long p = first >>> DirtyLog.PAGE_SHIFT; p <= last >>> DirtyLog.PAGE_SHIFT; p++) {
            if (usedRingLogPages.size() >= MAX_USED_RING_PAGES) return;
            usedRingLogPages.add(p);
        }
    }

    /**
     * SET_LOG_BASE (LOG_SHMFD): {u64 mmap_size, u64 mmap_offset} + the log's fd. The reply (u64: 0 mapped, 1
     * refused) is sent only after every queue has switched to the new log, and the previous log is unmapped only
     * then: QEMU syncs and frees the old log as soon as it has the reply.
     */
    private CompletableFuture<Void> setLogBase(Connection c, Message m) throws ProtocolException {
        if ((ackedProtocolFeatures & Proto.PF_LOG_SHMFD) == 0) {
            // Without LOG_SHMFD the log would be an address in the front-end's own memory: unusable for us.
            throw new ProtocolException("SET_LOG_BASE without the LOG_SHMFD protocol feature");
        }
        DirtyLog next;
        int fd = m.takeFd(0);
        try {
            if (m.size() != 16) throw new IOException("payload size " + m.size() + ", expected 16");
            long size = m.payload.getLong(0), offset = m.payload.getLong(8);
            if (fd < 0) throw new IOException("no fd");
            next = DirtyLog.map(fd, size, offset);
        } catch (IOException | IllegalArgumentException e) {
            refuseLogBase(c, e.getMessage());
            return null;
        } finally {
            if (fd >= 0) Libc.close(fd); // the mapping keeps the memory
        }
        long end = 0;
        for (MemoryRegion r : mem.regions()) end = Math.max(end, r.gpa() + r.size());
        if (Long.compareUnsigned(end, next.pages() << DirtyLog.PAGE_SHIFT) > 0) {
            // The spec wants the log to cover all guest memory; QEMU resizes it before growing memory. Marks past
            // it are counted and reported, not fatal.
            LOG.warning(name + ": " + next + " does not cover guest memory up to 0x" + Long.toHexString(end));
        }
        DirtyLog old = log;
        log = next;
        logBaseRefused = false;
        return pushLog().thenRunAsync(() -> {
            if (old != null) old.close();
            c.replyU64(Proto.SET_LOG_BASE, 0);
        }, mainLoop);
    }

    private void refuseLogBase(Connection c, String why) {
        LOG.warning(name + ": SET_LOG_BASE refused: " + why);
        logBaseRefused = true;
        c.replyU64(Proto.SET_LOG_BASE, 1);
        if (logging()) {
            // The front-end believes its new log is in use (QEMU does not look at the reply's value) and frees the
            // old one: writes from now on would go unlogged. Dropping the session is the only honest answer.
            LOG.warning(name + ": dirty logging is on and the new log is unusable; closing connection");
            c.close();
        }
    }

    /** SET_LOG_FD: an optional eventfd, signalled once per completion batch that marked pages. */
    private CompletableFuture<Void> setLogFd(Message m) throws ProtocolException {
        int fd = m.takeFd(0);
        if (fd < 0) throw new ProtocolException("SET_LOG_FD without fd");
        if (!isEventFd(fd)) {
            Libc.close(fd);
            throw new ProtocolException("SET_LOG_FD: fd is not an eventfd");
        }
        try {
            Libc.setNonBlocking(fd);
        } catch (IOException e) {
            Libc.close(fd);
            throw new ProtocolException("SET_LOG_FD: " + e.getMessage());
        }
        EventFd old = logCall;
        logCall = EventFd.adopt(fd);
        return pushLog().thenRunAsync(() -> closeQuietly(old), mainLoop);
    }

    // ---------------------------------------------------------------- reset and status

    private void requireStatusFeature(Message m) throws ProtocolException {
        if ((ackedProtocolFeatures & Proto.PF_STATUS) == 0) {
            throw new ProtocolException(Proto.name(m.request) + " without the STATUS protocol feature");
        }
    }

    /** The stored status, plus DEVICE_NEEDS_RESET while a running ring is broken (a stop or reset clears it). */
    private long deviceStatus() {
        int s = status;
        for (Vring v : vrings) if (v.running && v.q.needsReset()) s |= S_NEEDS_RESET;
        return s;
    }

    /**
     * SET_STATUS: stores the virtio status byte. Leaving DRIVER_OK, or 0 (reset), quiesces every ring exactly like
     * GET_VRING_BASE (in-flight requests complete first; the ack follows). Ring state is kept: QEMU 8+ sends
     * SET_STATUS 0 in vhost_dev_stop BEFORE GET_VRING_BASE and migrates the bases that returns.
     */
    private CompletableFuture<Void> setStatus(Message m) throws ProtocolException {
        requireStatusFeature(m);
        m.expectSize(8);
        long s = m.u64(0);
        if (s < 0 || s > 0xff) throw new ProtocolException("SET_STATUS: 0x" + Long.toHexString(s) + " is not a status byte");
        int old = status;
        status = (int) s;
        if (s != 0 && ((old & S_DRIVER_OK) == 0 || (s & S_DRIVER_OK) != 0)) return null;
        List<CompletableFuture<?>> fs = new ArrayList<>();
        for (Vring v : vrings) fs.add(stopAndForgetKick(v));
        return CompletableFuture.allOf(fs.toArray(new CompletableFuture[0]));
    }

    /**
     * RESET_DEVICE: stops every ring (requests complete first), then returns the device to its initial state:
     * features, ring configuration (size, addresses, base, kick, enable), dirty log, status byte and the write
     * cache mode. Kept, being the session rather than the device: ownership, protocol features, the memory
     * table (QEMU only sends memory changes, it would not resend it), the call/err eventfds (QEMU sends err fds
     * only at realize) and the back-end request channel.
     */
    private CompletableFuture<Void> resetDevice() {
        return stopAll().thenComposeAsync(x -> {
            if (closed) return CompletableFuture.completedFuture(null);
            boolean wasLogging = logging();
            for (Vring v : vrings) {
                v.num = 0;
                v.addrSet = false;
                v.descUaddr = v.usedUaddr = v.availUaddr = v.logGpa = 0;
                v.addrFlags = 0;
                v.base = 0;
                v.enabled = false;
                v.started = false;
                closeQuietly(v.kick);
                v.kick = null;
            }
            ackedFeatures = 0;
            featuresSet = false;
            status = 0;
            writeback = !cfg.writethrough();
            blk.setWriteCacheEnabled(writeback);
            DirtyLog oldLog = log;
            EventFd oldCall = logCall;
            log = null;
            logCall = null;
            logBaseRefused = false;
            List<CompletableFuture<?>> fs = new ArrayList<>();
            fs.add(pushLog());
            for (Vring v : vrings) fs.add(v.q.setUsedRingLog(false, 0));
            return CompletableFuture.allOf(fs.toArray(new CompletableFuture[0])).thenRunAsync(() -> {
                if (oldLog != null) oldLog.close();
                closeQuietly(oldCall);
                if (wasLogging) endLogSession();
            }, mainLoop);
        }, mainLoop);
    }

    // ---------------------------------------------------------------- memory

    private static MemoryRegion mapRegion(ByteBuffer p, int off, int fd) throws ProtocolException {
        long gpa = p.getLong(off), size = p.getLong(off + 8), uaddr = p.getLong(off + 16), mmapOff = p.getLong(off + 24);
        try {
            return MemoryRegion.map(fd, gpa, size, uaddr, mmapOff);
        } catch (IOException | IllegalArgumentException e) {
            throw new ProtocolException("cannot map region gpa=0x" + Long.toHexString(gpa) + " size=0x" + Long.toHexString(size) + ": " + e.getMessage());
        }
    }

    private CompletableFuture<Void> setMemTable(Message m) throws ProtocolException {
        m.expectMinSize(8);
        int n = m.u32(0);
        if (n < 1 || n > 8) throw new ProtocolException("SET_MEM_TABLE: " + Integer.toUnsignedString(n) + " regions (1..8 allowed)");
        m.expectSize(8 + 32 * n);
        if (m.fdCount() != n) throw new ProtocolException("SET_MEM_TABLE: " + n + " regions but " + m.fdCount() + " fds");
        List<MemoryRegion> mapped = new ArrayList<>();
        GuestMemory next = GuestMemory.empty();
        try {
            for (int i = 0; i < n; i++) {
                int fd = m.takeFd(i);
                try {
                    MemoryRegion r = mapRegion(m.payload, 8 + 32 * i, fd);
                    mapped.add(r);
                    next = next.with(r);
                } finally {
                    Libc.close(fd); // the mapping keeps the memory; the fd is not needed
                }
            }
        } catch (ProtocolException | InvalidGuestAddressException e) {
            mapped.forEach(MemoryRegion::close);
            throw new ProtocolException("SET_MEM_TABLE: " + e.getMessage());
        }
        return replaceMemory(next, mem.regions());
    }

    private CompletableFuture<Void> addMemReg(Message m) throws ProtocolException {
        m.expectSize(8 + 32);
        if (m.fdCount() != 1) throw new ProtocolException("ADD_MEM_REG: expected 1 fd, got " + m.fdCount());
        int fd = m.takeFd(0);
        MemoryRegion r;
        try {
            r = mapRegion(m.payload, 8, fd);
        } finally {
            Libc.close(fd);
        }
        GuestMemory next;
        try {
            next = mem.with(r);
        } catch (InvalidGuestAddressException e) {
            r.close();
            throw new ProtocolException("ADD_MEM_REG: " + e.getMessage());
        }
        mem = next;
        // Growing the table leaves every existing mapping valid: running rings just take the new snapshot.
        List<CompletableFuture<?>> fs = new ArrayList<>();
        for (Vring v : vrings) if (v.running) fs.add(v.q.setMemory(next));
        return CompletableFuture.allOf(fs.toArray(new CompletableFuture[0])).thenComposeAsync(x -> startAll(), mainLoop);
    }

    private CompletableFuture<Void> remMemReg(Message m) throws ProtocolException {
        m.expectSize(8 + 32);
        ByteBuffer p = m.payload;
        long gpa = p.getLong(8), size = p.getLong(16), uaddr = p.getLong(24);
        MemoryRegion victim = null;
        for (MemoryRegion r : mem.regions()) {
            if (r.gpa() == gpa && r.size() == size && r.uaddr() == uaddr) victim = r;
        }
        if (victim == null) throw new ProtocolException("REM_MEM_REG: no region gpa=0x" + Long.toHexString(gpa) + " size=0x" + Long.toHexString(size));
        GuestMemory next = mem.without(gpa, size, uaddr);
        return replaceMemory(next, List.of(victim));
    }

    /**
     * Swaps the memory table under the rings: every running ring is stopped first (its requests completed), so no
     * iothread and no block-layer worker can touch a region when it is unmapped; then the rings restart.
     */
    private CompletableFuture<Void> replaceMemory(GuestMemory next, List<MemoryRegion> toUnmap) {
        List<Vring> wasRunning = new ArrayList<>();
        List<CompletableFuture<?>> stops = new ArrayList<>();
        for (Vring v : vrings) {
            if (v.running) {
                wasRunning.add(v);
                stops.add(stopRing(v));
            }
        }
        return CompletableFuture.allOf(stops.toArray(new CompletableFuture[0])).thenComposeAsync(x -> {
            if (closed) {
                // The session ended while we waited: onClosed unmapped the old table; drop the new one too.
                for (MemoryRegion r : next.regions()) if (!mem.regions().contains(r)) r.close();
                return CompletableFuture.completedFuture(null);
            }
            List<MemoryRegion> keep = next.regions();
            mem = next;
            for (MemoryRegion r : toUnmap) if (!keep.contains(r)) r.close();
            // A ring only stopped for the swap was "started" and resumes; it is restarted from where it stopped.
            for (Vring v : wasRunning) v.started = true;
            return startAll();
        }, mainLoop);
    }

    // ---------------------------------------------------------------- rings

    private CompletableFuture<Void> setVringAddr(Message m) throws ProtocolException {
        Vring v = vringOf(m, 40);
        int flags = m.u32(4);
        long desc = m.u64(8), used = m.u64(16), avail = m.u64(24), log = m.u64(32);
        if (v.running) {
            if (desc != v.descUaddr || used != v.usedUaddr || avail != v.availUaddr) {
                throw new ProtocolException("SET_VRING_ADDR moves a running ring");
            }
            // Migration toggles VHOST_VRING_F_LOG on running rings: switched between two requests, never stopped.
            // The ack waits for the switch, so every used-ring write after it is logged.
            v.addrFlags = flags;
            v.logGpa = log;
            noteUsedRingLog(v);
            return v.q.setUsedRingLog((flags & VRING_F_LOG) != 0, log);
        }
        v.descUaddr = desc;
        v.usedUaddr = used;
        v.availUaddr = avail;
        v.logGpa = log;
        v.addrFlags = flags;
        v.addrSet = true;
        noteUsedRingLog(v);
        // Posted before any start task, so the ring starts with it (tasks of one iothread run in order).
        CompletableFuture<Void> logSet = v.q.setUsedRingLog((flags & VRING_F_LOG) != 0, log);
        CompletableFuture<Void> started = maybeStart(v);
        return started == null ? logSet : CompletableFuture.allOf(logSet, started);
    }

    private CompletableFuture<Void> setVringFd(Message m, int which) throws ProtocolException {
        m.expectSize(8);
        long u = m.u64(0);
        int idx = (int) (u & Proto.VRING_IDX_MASK);
        if ((u & ~(Proto.VRING_IDX_MASK | Proto.VRING_NOFD_MASK)) != 0) throw new ProtocolException(Proto.name(m.request) + ": reserved bits set");
        if (idx >= vrings.length) throw new ProtocolException(Proto.name(m.request) + ": vring index " + idx + " out of range");
        Vring v = vrings[idx];
        boolean nofd = (u & Proto.VRING_NOFD_MASK) != 0;
        EventFd efd = null;
        if (!nofd) {
            int fd = m.takeFd(0);
            if (fd < 0) throw new ProtocolException(Proto.name(m.request) + ": missing fd");
            if (!isEventFd(fd)) {
                // A socket at EOF would spin the iothread; a file on FUSE/NFS would block it.
                Libc.close(fd);
                throw new ProtocolException(Proto.name(m.request) + ": fd is not an eventfd");
            }
            try {
                Libc.setNonBlocking(fd); // a blocking fd must never stall an iothread
            } catch (IOException e) {
                Libc.close(fd);
                throw new ProtocolException(Proto.name(m.request) + ": " + e.getMessage());
            }
            efd = EventFd.adopt(fd);
        } else if (which == 0) {
            throw new ProtocolException("SET_VRING_KICK without fd (polling mode) is not supported");
        }
        switch (which) {
            case 0: { // kick: (re)starts the ring
                EventFd nk = efd;
                CompletableFuture<Integer> stopped = v.running ? stopRing(v) : CompletableFuture.completedFuture(0);
                return stopped.thenComposeAsync(x -> {
                    if (closed) {
                        nk.close();
                        return CompletableFuture.completedFuture(null);
                    }
                    if (v.kick != null) v.kick.close();
                    v.kick = nk;
                    v.started = true;
                    return orDone(maybeStart(v));
                }, mainLoop);
            }
            case 1: {
                EventFd old = v.call;
                v.call = efd;
                if (v.running) return v.q.swapCall(efd).thenAccept(o -> closeQuietly(o));
                closeQuietly(old);
                return null;
            }
            default: {
                EventFd old = v.err;
                v.err = efd;
                if (v.running) return v.q.swapErr(efd).thenAccept(o -> closeQuietly(o));
                closeQuietly(old);
                return null;
            }
        }
    }

    /** readlink of /proc/self/fd/N is computed by the kernel without calling into the fd's filesystem. */
    static boolean isEventFd(int fd) {
        try {
            return java.nio.file.Files.readSymbolicLink(java.nio.file.Path.of("/proc/self/fd/" + fd)).toString().equals("anon_inode:[eventfd]");
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    private static void closeQuietly(EventFd e) {
        if (e != null) e.close();
    }

    private CompletableFuture<Void> getVringBase(Connection c, Message m) throws ProtocolException {
        Vring v = vringOf(m, 8);
        int idx = m.u32(0);
        return stopAndForgetKick(v).thenRunAsync(() -> {
            ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putInt(idx).putInt(v.base);
            b.flip();
            c.reply(Proto.GET_VRING_BASE, b);
        }, mainLoop);
    }

    /**
     * The ring stop of GET_VRING_BASE (and of SET_STATUS leaving DRIVER_OK): drains the ring, then forgets its
     * kick fd, so only a new SET_VRING_KICK starts it again (from v.base, the next avail index).
     */
    private CompletableFuture<Void> stopAndForgetKick(Vring v) {
        return stopRing(v).thenAcceptAsync(next -> {
            v.started = false;
            if (v.kick != null && !v.running) {
                v.kick.close();
                v.kick = null;
            }
        }, mainLoop);
    }

    /** Starts the ring once it has everything: size, addresses, memory, a kick, and is enabled. */
    private CompletableFuture<Void> maybeStart(Vring v) {
        if (closed || v.running || !v.started || !v.enabled || !v.addrSet || v.num == 0 || v.kick == null || mem.regions().isEmpty()) {
            return null;
        }
        long desc, avail, used;
        try {
            desc = mem.uaddrToGpa(v.descUaddr, 16L * v.num);
            avail = mem.uaddrToGpa(v.availUaddr, 6 + 2L * v.num);
            used = mem.uaddrToGpa(v.usedUaddr, 6 + 8L * v.num);
        } catch (InvalidGuestAddressException e) {
            return CompletableFuture.failedFuture(new ProtocolException("ring addresses do not translate: " + e.getMessage()));
        }
        v.running = true;
        noteUsedRingLog(v);
        boolean eventIdx = (ackedFeatures & Proto.F_EVENT_IDX) != 0;
        return v.q.start(new BlkQueue.StartParams(mem, v.num, desc, avail, used, eventIdx, v.base, v.kick, v.call, v.err,
                        (ackedFeatures & VirtioBlk.F_OUT_FUA) != 0))
                .whenCompleteAsync((x, t) -> {
                    if (t != null) v.running = false;
                }, mainLoop);
    }

    private static CompletableFuture<Void> orDone(CompletableFuture<Void> f) {
        return f != null ? f : CompletableFuture.completedFuture(null);
    }

    private CompletableFuture<Void> startAll() {
        List<CompletableFuture<?>> fs = new ArrayList<>();
        for (Vring v : vrings) {
            CompletableFuture<Void> f = maybeStart(v);
            if (f != null) fs.add(f);
        }
        return CompletableFuture.allOf(fs.toArray(new CompletableFuture[0]));
    }

    /** Stops a running ring; completes (on the main loop) once its requests have all completed. */
    private CompletableFuture<Integer> stopRing(Vring v) {
        if (v.stopping != null) return v.stopping;
        if (!v.running) return CompletableFuture.completedFuture(v.base);
        CompletableFuture<Integer> f = v.q.stop().thenApplyAsync(next -> {
            v.running = false;
            v.stopping = null;
            if (next >= 0) v.base = next;
            return v.base;
        }, mainLoop);
        v.stopping = f;
        return f;
    }

    private CompletableFuture<Void> stopAll() {
        List<CompletableFuture<?>> fs = new ArrayList<>();
        for (Vring v : vrings) fs.add(stopRing(v));
        return CompletableFuture.allOf(fs.toArray(new CompletableFuture[0]));
    }

    // ---------------------------------------------------------------- config

    private byte[] configSpace() {
        return VirtioBlk.config(blk.getLength(), cfg.logicalBlockSize(), vrings.length, writeback);
    }

    private CompletableFuture<Void> getConfig(Connection c, Message m) throws ProtocolException {
        m.expectMinSize(12);
        int off = m.u32(0), size = m.u32(4);
        if (size <= 0 || size > 256 || off < 0 || off > 256 - size || m.size() != 12 + size) {
            // GET_CONFIG has its own reply: a zero-size payload tells the front-end it failed.
            LOG.warning(name + ": GET_CONFIG refused: bad offset/size " + Integer.toUnsignedString(off) + "/" + Integer.toUnsignedString(size));
            c.reply(Proto.GET_CONFIG, ByteBuffer.allocate(0));
            return null;
        }
        byte[] cs = configSpace();
        ByteBuffer b = ByteBuffer.allocate(12 + size).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(off).putInt(size).putInt(m.u32(8));
        for (int i = 0; i < size; i++) b.put(off + i < cs.length ? cs[off + i] : 0);
        b.flip();
        c.reply(Proto.GET_CONFIG, b);
        return null;
    }

    private CompletableFuture<Void> setConfig(Message m) throws ProtocolException {
        m.expectMinSize(12);
        int off = m.u32(0), size = m.u32(4), flags = m.u32(8);
        if (size < 0 || m.size() != 12 + size) throw new ProtocolException("SET_CONFIG: size " + Integer.toUnsignedString(size) + " does not match payload");
        // Only the writeback byte is writable by the driver; live-migration writes of read-only fields refused.
        if (flags != 0 || off != VirtioBlk.CFG_WRITEBACK || size != 1) {
            throw new ProtocolException("SET_CONFIG: only the writeback field (offset 32, size 1, flags 0) is writable");
        }
        writeback = m.payload.get(12) != 0;
        boolean flushNegotiated = !featuresSet || (ackedFeatures & VirtioBlk.F_FLUSH) != 0;
        blk.setWriteCacheEnabled(writeback && flushNegotiated);
        return null;
    }

    // ---------------------------------------------------------------- teardown

    @Override
    public void onClosed(Connection c) {
        closed = true;
        // Stop every ring (requests complete first), then unmap and release everything of this session.
        stopAll().whenCompleteAsync((x, t) -> {
            if (t != null) {
                // A ring did not stop: its requests may still write into guest memory. Leaking the mappings
                // is the only safe choice (unmapping would crash the JVM under a block worker).
                LOG.severe(name + ": rings did not stop (" + t + "); guest memory stays mapped, export no longer accepts front-ends");
                return;
            }
            for (Vring v : vrings) {
                closeQuietly(v.kick);
                closeQuietly(v.call);
                closeQuietly(v.err);
                v.kick = v.call = v.err = null;
            }
            for (MemoryRegion r : mem.regions()) r.close();
            mem = GuestMemory.empty();
            if (log != null) {
                log.close();
                log = null;
            }
            closeQuietly(logCall);
            logCall = null;
            endLogSession(); // only if logging was still on: the line of a migration source that just quit
            if (backendReqFd >= 0) {
                Libc.close(backendReqFd);
                backendReqFd = -1;
            }
            for (Vring v : vrings) quiesce.unregister(v.q);
            onDone.run();
        }, mainLoop);
    }

    /**
     * Main loop: the capacity changed. With BACKEND_REQ, sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on the
     * back-end channel so the front-end re-reads the config space (GET_CONFIG) and tells the guest. No reply is
     * requested (the front-end only acks with NEED_REPLY), so nothing is ever read here; the send never blocks:
     * if the channel is full the notice is dropped with a warning (the guest sees the size on its next config read).
     *
     * @return true if the message went out
     */
    boolean configChanged() {
        mainLoop.assertInContextThread("config change notice");
        if ((ackedProtocolFeatures & Proto.PF_BACKEND_REQ) == 0 || backendReqFd < 0) {
            LOG.info(name + ": no back-end channel; the front-end is not told about the new capacity");
            return false;
        }
        byte[] hdr = new byte[Proto.HDR_SIZE]; // request u32, flags u32, size u32 (0), little-endian
        putLe32(hdr, 0, Proto.BACKEND_CONFIG_CHANGE_MSG);
        putLe32(hdr, 4, Proto.VERSION);
        long n = Libc.send(backendReqFd, hdr, hdr.length, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
        if (n != hdr.length) {
            // A partial header cannot happen on a unix stream socket with room for 12 bytes; either way, drop it.
            LOG.warning(name + ": CONFIG_CHANGE_MSG not sent (" + (n < 0 ? "errno " + Libc.errno() : n + " bytes") + ")");
            return false;
        }
        return true;
    }

    private static void putLe32(byte[] b, int off, int v) {
        b[off] = (byte) v;
        b[off + 1] = (byte) (v >>> 8);
        b[off + 2] = (byte) (v >>> 16);
        b[off + 3] = (byte) (v >>> 24);
    }
}
