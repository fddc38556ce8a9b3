package io.jvhost.vhostuser;

import io.jvhost.block.BlockBackend;
import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.sys.EventFd;
import io.jvhost.iothread.sys.Libc;
import io.jvhost.virtqueue.GuestMemory;
import io.jvhost.virtqueue.InvalidGuestAddressException;
import io.jvhost.virtqueue.MemoryRegion;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
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

    static final long PROTOCOL_FEATURES = Proto.PF_MQ | Proto.PF_REPLY_ACK | Proto.PF_BACKEND_REQ | Proto.PF_CONFIG
            | Proto.PF_CONFIGURE_MEM_SLOTS;

    /** QEMU's VIRTQUEUE_MAX_SIZE: bounds the per-queue request pool a front-end can make us allocate. */
    static final int MAX_QUEUE_SIZE = 1024;

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

    BlkDevice(String name, BlkExportConfig cfg, BlockBackend blk, AioContext mainLoop, List<AioContext> threads, Runnable onDone) {
        this.name = name;
        this.cfg = cfg;
        this.blk = blk;
        this.mainLoop = mainLoop;
        this.onDone = onDone;
        this.vrings = new Vring[cfg.numQueues()];
        for (int i = 0; i < vrings.length; i++) {
            vrings[i] = new Vring(new BlkQueue(name + " vq" + i, i, threads.get(i), blk, cfg.serial(), cfg.logicalBlockSize()));
        }
        blk.setWriteCacheEnabled(writeback);
    }

    long offeredFeatures() {
        long f = Proto.F_VERSION_1 | Proto.F_INDIRECT_DESC | Proto.F_EVENT_IDX | Proto.F_PROTOCOL_FEATURES
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

    private static boolean hasOwnReply(int req) {
        switch (req) {
            case Proto.GET_FEATURES:
            case Proto.GET_PROTOCOL_FEATURES:
            case Proto.GET_VRING_BASE:
            case Proto.GET_QUEUE_NUM:
            case Proto.GET_CONFIG:
            case Proto.GET_MAX_MEM_SLOTS:
                return true;
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
                return stopAll().thenRun(() -> {
                    ackedFeatures = 0;
                    featuresSet = false;
                });
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
                backendReqFd = fd; // kept for CONFIG_CHANGE messages (resize, later)
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
        ackedFeatures = f;
        featuresSet = true;
        // Without PROTOCOL_FEATURES rings are enabled from the start (spec).
        if ((f & Proto.F_PROTOCOL_FEATURES) == 0) {
            for (Vring v : vrings) v.enabled = true;
        }
        // No FLUSH negotiated: the driver cannot ask for stability, so every write must be stable (writethrough).
        blk.setWriteCacheEnabled(writeback && (f & VirtioBlk.F_FLUSH) != 0);
        return null;
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
            v.addrFlags = flags; // logging flag toggles (migration) do not stop the ring
            v.logGpa = log;
            return null;
        }
        v.descUaddr = desc;
        v.usedUaddr = used;
        v.availUaddr = avail;
        v.logGpa = log;
        v.addrFlags = flags;
        v.addrSet = true;
        return maybeStart(v);
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
        return stopRing(v).thenAcceptAsync(next -> {
            // Stopped: the kick fd goes; a later SET_VRING_KICK starts the ring again.
            v.started = false;
            if (v.kick != null) {
                v.kick.close();
                v.kick = null;
            }
            ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putInt(idx).putInt(v.base);
            b.flip();
            c.reply(Proto.GET_VRING_BASE, b);
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
            if (backendReqFd >= 0) {
                Libc.close(backendReqFd);
                backendReqFd = -1;
            }
            onDone.run();
        }, mainLoop);
    }
}
