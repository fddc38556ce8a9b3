package io.jvhost.vhostuser;

import io.jvhost.block.BlockBackend;
import io.jvhost.block.BlockCompletion;
import io.jvhost.block.IoVec;
import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.PollHandler;
import io.jvhost.iothread.BottomHalf;
import io.jvhost.iothread.sys.EventFd;
import io.jvhost.virtqueue.DescChain;
import io.jvhost.virtqueue.DirtyLog;
import io.jvhost.virtqueue.GuestMemory;
import io.jvhost.virtqueue.InvalidGuestAddressException;
import io.jvhost.virtqueue.RingException;
import io.jvhost.virtqueue.SplitRing;
import io.jvhost.virtqueue.UsedRingWriteLog;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;

/**
 * One virtio-blk virtqueue, served entirely by its iothread: the kick handler, request parsing, block submission,
 * completions, used-ring updates and call notifications all run there. The main loop only posts
 * start/stop/update tasks to it and waits for their futures.
 */
final class BlkQueue {
    private static final Logger LOG = Logger.getLogger(BlkQueue.class.getName());
    /** Segments one request may have: Linux uses seg_max + 2 descriptors; allow any chain up to this. */
    static final int MAX_CHAIN = VirtioBlk.SEG_MAX + 2;

    /** Process-wide count of handler runs on a wrong thread (must stay 0; tests assert it). */
    static final AtomicLong WRONG_THREAD_RUNS = new AtomicLong();

    /** Test probe: told of every handler entry (queue, running thread) before the thread check. */
    interface HandlerProbe {
        void entered(BlkQueue q, Thread t);
    }

    /** Null in production; tests install one to prove where handlers ran (one volatile read per entry). */
    static volatile HandlerProbe probe;

    private final Quiesce quiesce;
    private final QueueStats stats;
    private final String name;
    private final int index;
    private final AioContext ctx;
    private final BlockBackend blk;
    private final byte[] serial;
    private final int lbs;
    private final BottomHalf flushBh;

    // State below is touched only on ctx's thread.
    private SplitRing ring;
    private GuestMemory mem;
    private EventFd kick, call, err;
    private AioContext.FdHandler kickHandler;
    private boolean running, broken;
    private Req[] pool = new Req[0];
    private int poolCount, freeTop;
    private Req[] free = new Req[0];
    private int inflight;
    private boolean usedDirty;
    private boolean outFua;
    /** process() stopped because every request slot was in flight; the next completion resumes it. */
    private boolean starved;
    /** The iothread is polling this ring (kicks are off until it stops: see {@link #poller}). */
    private boolean pollMode;
    /**
     * Adaptive polling (AioContext): while the loop polls, kicks stay suppressed and the loop finds new requests
     * by reading avail->idx; when it is about to sleep, kicks are re-enabled and the ring checked once more.
     */
    private final PollHandler poller = new PollHandler() {
        @Override
        public void pollBegin() {
            pollMode = true;
            if (!usable()) return;
            try {
                ring.disableNotification();
            } catch (RingException e) {
                markBroken(e.getMessage());
            } catch (InternalError e) {
                markBroken("guest memory access faulted: " + e.getMessage());
            }
        }

        @Override
        public boolean poll() {
            return usable() && !starved && processIfAvailable(false);
        }

        @Override
        public boolean pollEnd() {
            pollMode = false;
            // Not usable or starved: whoever resumes the ring re-enables kicks.
            return usable() && !starved && processIfAvailable(true);
        }
    };
    private boolean warnedNoStatus;
    private final BottomHalf processBh;
    private CompletableFuture<Integer> stopFuture;
    private long requestsDone;
    /** Set when the ring broke (read by the main loop for GET_STATUS's DEVICE_NEEDS_RESET); cleared by start. */
    private volatile boolean needsReset;

    // Dirty logging (live migration), iothread-confined like the rest: the main loop changes it only by posting
    // setLog/setUsedRingLog, so a log that was replaced is never touched again once those tasks have run.
    private final DirtyAccounting dirty;
    private final UsedRingWriteLog usedLogger = this::logUsedWrite;
    private DirtyLog log;
    private boolean logAll;        // VHOST_F_LOG_ALL acked
    private boolean logUsedRing;   // VHOST_VRING_F_LOG in SET_VRING_ADDR
    private long logUsedGpa;       // SET_VRING_ADDR log_guest_addr: where used-ring writes are logged
    private EventFd logCall;       // SET_LOG_FD (optional)
    private boolean logKickPending;

    BlkQueue(String name, int index, AioContext ctx, BlockBackend blk, String serial, int lbs, DirtyAccounting dirty,
             Quiesce quiesce, QueueStats stats) {
        this.quiesce = quiesce;
        this.stats = stats;
        this.name = name;
        this.index = index;
        this.ctx = ctx;
        this.blk = blk;
        this.serial = serial.getBytes(StandardCharsets.UTF_8);
        this.lbs = lbs;
        this.dirty = dirty;
        this.flushBh = ctx.newBottomHalf(this::flushUsed);
        this.processBh = ctx.newBottomHalf(this::process);
    }

    AioContext context() {
        return ctx;
    }

    /** Parameters of a ring start, computed on the main loop. */
    record StartParams(GuestMemory mem, int size, long desc, long avail, long used, boolean eventIdx, int base,
                       EventFd kick, EventFd call, EventFd err, boolean outFua) {}

    /** Starts serving the ring (runs on the iothread). Fails if the ring does not validate. */
    CompletableFuture<Void> start(StartParams p) {
        return ctx.submit(() -> {
            checkThread();
            ring = new SplitRing(p.mem, p.size, p.desc, p.avail, p.used, p.eventIdx, p.base);
            ring.setUsedWriteLog(usedLogger);
            mem = p.mem;
            kick = p.kick;
            call = p.call;
            err = p.err;
            outFua = p.outFua;
            broken = false;
            needsReset = false;
            running = true;
            stopFuture = null;
            if (pool.length < p.size) {
                pool = java.util.Arrays.copyOf(pool, p.size);
                Req[] nf = new Req[p.size];
                System.arraycopy(free, 0, nf, 0, freeTop);
                free = nf;
            }
            kickHandler = ctx.setFdHandler(kick.fd(), this::onKick);
            if (ctx.isIoThread()) ctx.addPollHandler(poller);
            // Requests may already be waiting (restart after migration, reconnect): look once.
            process();
            return null;
        });
    }

    /**
     * Stops the ring: no new requests are taken; completes with the next avail index once every request taken
     * from the ring has completed and its used entry and notification are written.
     */
    CompletableFuture<Integer> stop() {
        CompletableFuture<CompletableFuture<Integer>> f = ctx.submit(() -> {
            checkThread();
            if (stopFuture != null) return stopFuture;
            stopFuture = new CompletableFuture<>();
            running = false;
            detachHandlers();
            maybeFinishStop();
            return stopFuture;
        });
        return f.thenCompose(x -> x);
    }

    /** New call fd while running (the old one is returned to the caller to close after the swap). */
    CompletableFuture<EventFd> swapCall(EventFd newCall) {
        return ctx.submit(() -> {
            EventFd old = call;
            call = newCall;
            return old;
        });
    }

    CompletableFuture<EventFd> swapErr(EventFd newErr) {
        return ctx.submit(() -> {
            EventFd old = err;
            err = newErr;
            return old;
        });
    }

    /** A memory table that only grew: existing mappings stay valid, so no drain is needed. */
    CompletableFuture<Void> setMemory(GuestMemory m) {
        return ctx.submit(() -> {
            mem = m;
            if (ring != null) {
                try {
                    ring.setMemory(m);
                } catch (RingException e) {
                    markBroken(e.getMessage());
                }
            }
            return null;
        });
    }

    long requestsDone() {
        return requestsDone;
    }

    /** Whether the ring broke since it was last started (any thread). */
    boolean needsReset() {
        return needsReset;
    }

    /**
     * Device-wide dirty-log settings: the log (null: none), whether VHOST_F_LOG_ALL is on, the optional SET_LOG_FD
     * eventfd. Applied between two requests, without stopping the ring; once the future completed this queue no
     * longer touches the previous log or eventfd (the caller may unmap/close them).
     */
    CompletableFuture<Void> setLog(DirtyLog newLog, boolean on, EventFd newLogCall) {
        return ctx.submit(() -> {
            checkThread();
            if (logKickPending && logCall != null && logCall != newLogCall) logCall.signal(); // marks made for the old one
            logKickPending = false;
            log = newLog;
            logAll = on;
            logCall = newLogCall;
            return null;
        });
    }

    /** This ring's VHOST_VRING_F_LOG and log_guest_addr (SET_VRING_ADDR); may change while the ring runs. */
    CompletableFuture<Void> setUsedRingLog(boolean on, long logGpa) {
        return ctx.submit(() -> {
            checkThread();
            logUsedRing = on;
            logUsedGpa = logGpa;
            return null;
        });
    }

    String name() {
        return name;
    }

    private void checkThread() {
        HandlerProbe p = probe;
        if (p != null) p.entered(this, Thread.currentThread());
        if (!ctx.inContextThread()) {
            WRONG_THREAD_RUNS.incrementAndGet();
            ctx.assertInContextThread(name + " virtqueue handler"); // the message is built only when it fails
        }
    }

    /** Test hook: runs the kick handler in the CALLING thread, as a misrouted event would; must be refused. */
    void runKickHandlerInCallingThread() {
        onKick();
    }

    private void onKick() {
        checkThread();
        kick.drain();
        process();
    }

    /** Takes every available request, re-checking after re-enabling notifications (no lost kick). */
    /** From any thread: look at the ring again soon (after a drained section ended). */
    void wake() {
        processBh.schedule();
    }

    private void process() {
        if (!running || broken || quiesced()) return;
        try {
            while (true) {
                ring.disableNotification();
                while (running) {
                    if (quiesced()) break; // drain phase 3: take nothing new; drainedEnd wakes us
                    if (freeTop == 0 && poolCount == pool.length) {
                        // Every slot is in flight (a full queue is legal): continue when one completes. Kicks stay
                        // off meanwhile; SplitRing itself refuses a driver that makes more than size available.
                        starved = true;
                        break;
                    }
                    Req r = freeTop > 0 ? free[--freeTop] : (pool[poolCount++] = new Req());
                    if (!ring.pop(r.chain)) {
                        free[freeTop++] = r;
                        break;
                    }
                    inflight++;
                    r.handleSafely();
                }
                // While the loop polls this ring, kicks stay off (it reads avail->idx itself).
                if (starved || quiesced() || !running || pollMode || !ring.enableNotification()) break;
            }
        } catch (RingException e) {
            markBroken(e.getMessage());
        } catch (InternalError e) {
            // HotSpot turns a SIGBUS (front-end shrank the memory file under us) into this: a broken device.
            markBroken("guest memory access faulted: " + e.getMessage());
        }
        flushUsed();
    }

    /** Polling: processes the ring if the driver added requests (after re-enabling kicks, if asked); true if it did. */
    private boolean processIfAvailable(boolean reenableKicks) {
        try {
            if (!(reenableKicks ? ring.enableNotification() : ring.hasAvailable())) return false;
        } catch (RingException e) {
            markBroken(e.getMessage());
            return true;
        } catch (InternalError e) {
            markBroken("guest memory access faulted: " + e.getMessage());
            return true;
        }
        process();
        return true;
    }

    /**
     * Drain phase 3 for this queue: the export's callback (Quiesce), or the backend's own drained state, which
     * is set a moment earlier. Looking at both means at most one request per queue (popped just before) is
     * parked by the backend, however long the draining thread is preempted between the two.
     */
    private boolean quiesced() {
        return quiesce.active() || blk.isQuiesced();
    }

    private boolean usable() {
        return running && !broken && ring != null && !quiesced();
    }

    /** Kicks and polling stop reaching this queue (iothread). */
    private void detachHandlers() {
        if (kickHandler != null) {
            kickHandler.remove();
            kickHandler = null;
        }
        if (ctx.isIoThread()) ctx.removePollHandler(poller);
        pollMode = false;
    }

    private void markBroken(String why) {
        if (broken) return;
        broken = true;
        needsReset = true;
        // One clear line; the queue stops (virtio: DEVICE_NEEDS_RESET). Other queues and exports keep going.
        LOG.severe(name + ": ring broken, queue stopped (needs reset): " + why);
        detachHandlers();
        if (err != null) err.signal();
    }

    /** Publishes used entries and notifies the driver once per batch (and the log eventfd, if pages were marked). */
    private void flushUsed() {
        if (usedDirty) {
            usedDirty = false;
            try {
                ring.publish();
                if (ring.needsNotify() && call != null) call.signal();
            } catch (RingException e) {
                markBroken(e.getMessage());
            } catch (InternalError e) {
                markBroken("guest memory access faulted: " + e.getMessage());
            }
        }
        if (logKickPending) {
            // Like libvhost-user's vu_log_kick, but once per batch instead of once per write.
            logKickPending = false;
            if (logCall != null) logCall.signal();
        }
    }

    // ---------------------------------------------------------------- dirty logging

    /** Marks the pages of guest-physical [gpa, gpa+len) the device has just written, if logging is on. */
    private void logWrite(long gpa, long len) {
        if (!logAll || log == null || len <= 0) return;
        markRange(gpa, len);
    }

    /** SplitRing wrote [off, off+len) of the used ring: logged at log_guest_addr + off with VHOST_VRING_F_LOG. */
    private void logUsedWrite(long off, int len) {
        if (!logAll || !logUsedRing || log == null) return;
        markRange(logUsedGpa + off, len);
    }

    private void markRange(long gpa, long len) {
        long last = gpa + len - 1;
        if (Long.compareUnsigned(last, gpa) < 0) { // wraps 2^64: a hostile log_guest_addr, nothing to mark there
            outsideLog(gpa);
            return;
        }
        for (long p = gpa >>> DirtyLog.PAGE_SHIFT, end = last >>> DirtyLog.PAGE_SHIFT; p <= end; p++) {
            if (log.markPage(p)) {
                dirty.pages.add(p);
                logKickPending = true;
            } else {
                outsideLog(p << DirtyLog.PAGE_SHIFT);
            }
        }
    }

    private void outsideLog(long gpa) {
        dirty.outsideLog.increment();
        if (dirty.warnedOutside.compareAndSet(false, true)) {
            LOG.severe(name + ": a write at guest address 0x" + Long.toHexString(gpa) + " lies outside the dirty log (" + log
                    + "): migration may miss such pages; further ones are only counted");
        }
    }

    private void finish(Req r, int status, int usedLen) {
        try {
            mem.writeU8(r.statusGpa, status);
            logWrite(r.statusGpa, 1);
            ring.push(r.chain.head(), usedLen);
            usedDirty = true;
        } catch (InvalidGuestAddressException | RingException e) {
            markBroken(e.getMessage());
        } catch (InternalError e) {
            markBroken("guest memory access faulted: " + e.getMessage());
        }
        requestsDone++;
        QueueStats.Kind k = kindOf(r.type);
        if (k != null && r.startNs != 0) stats.account(k, r.bytes, System.nanoTime() - r.startNs, status == VirtioBlk.S_OK);
        inflight--;
        free[freeTop++] = r;
        if (starved && running) {
            starved = false;
            processBh.schedule();
        }
        if (running) {
            flushBh.schedule(); // coalesce: one publish + one notification for all completions of this pass
        } else {
            flushUsed();
            maybeFinishStop();
        }
    }

    private static QueueStats.Kind kindOf(int type) {
        switch (type) {
            case VirtioBlk.T_IN: return QueueStats.Kind.READ;
            case VirtioBlk.T_OUT:
            case VirtioBlk.T_OUT_FUA: return QueueStats.Kind.WRITE;
            case VirtioBlk.T_FLUSH: return QueueStats.Kind.FLUSH;
            case VirtioBlk.T_DISCARD: return QueueStats.Kind.DISCARD;
            case VirtioBlk.T_WRITE_ZEROES: return QueueStats.Kind.WRITE_ZEROES;
            default: return null;
        }
    }

    private void maybeFinishStop() {
        if (stopFuture != null && inflight == 0) {
            flushUsed();
            CompletableFuture<Integer> f = stopFuture;
            f.complete(ring == null ? -1 : ring.lastAvailIdx());
        }
    }

    /** A request slot, reused: parsing and completion allocate nothing. */
    private final class Req implements BlockCompletion {
        final DescChain chain = new DescChain(MAX_CHAIN);
        final IoVec iov = new IoVec(MAX_CHAIN + 64);
        final IoVecViews addSeg = new IoVecViews(iov); // guest-memory views without a slice per segment
        final byte[] hdr = new byte[16];
        final ByteBuffer hdrBuf = ByteBuffer.wrap(hdr).order(ByteOrder.LITTLE_ENDIAN);
        long statusGpa;
        int type = -1;
        long startNs, bytes;
        int usedLen;
        /** Bytes of the writable buffers a submitted read may have filled (0: none); logged at completion. */
        long readLen;

        /** Parses and submits; statuses that need no I/O complete at once. */
        /** Whether the request went to the block layer (then only its completion may finish it). */
        boolean submitted;

        /**
         * A fault while parsing (e.g. SIGBUS turned into InternalError by HotSpot when the front-end shrinks its
         * memory file) must still finish the request, or the ring could never stop and the export would wedge.
         */
        void handleSafely() {
            submitted = false;
            readLen = 0;
            try {
                handle();
            } catch (RuntimeException | InternalError e) {
                markBroken("request handling failed: " + e);
                if (!submitted) {
                    try {
                        done(VirtioBlk.S_IOERR, 1);
                    } catch (RuntimeException | InternalError e2) {
                        inflight--; // status unwritable: at least give the slot back so the ring can stop
                        free[freeTop++] = this;
                    }
                }
            }
        }

        void handle() {
            startNs = 0;
            bytes = 0;
            type = -1;
            if (chain.writableBytes() < 1) {
                // No status byte to write: hand the buffers back with length 0 (nothing else is possible).
                if (!warnedNoStatus) { // a guest must not be able to flood the log
                    warnedNoStatus = true;
                    LOG.warning(name + ": request without status buffer (head " + chain.head() + "); further ones not logged");
                }
                statusGpa = -1;
                try {
                    ring.push(chain.head(), 0);
                    usedDirty = true;
                } catch (RingException e) {
                    markBroken(e.getMessage());
                }
                inflight--;
                free[freeTop++] = this;
                return;
            }
            int last = chain.count() - 1;
            statusGpa = chain.addr(last) + chain.len(last) - 1;
            if (chain.readableBytes() < 16) {
                done(VirtioBlk.S_IOERR, 1);
                return;
            }
            try {
                readReadable(0, hdr, 16);
            } catch (InvalidGuestAddressException e) {
                done(VirtioBlk.S_IOERR, 1);
                return;
            }
            type = hdrBuf.getInt(0);
            startNs = System.nanoTime(); // stats: latency as seen by the queue
            long sector = hdrBuf.getLong(8);
            long outData = chain.readableBytes() - 16;
            long inData = chain.writableBytes() - 1;
            try {
                switch (type) {
                    case VirtioBlk.T_IN:
                        rw(sector, inData, false, 0);
                        break;
                    case VirtioBlk.T_OUT:
                        rw(sector, outData, true, 0);
                        break;
                    case VirtioBlk.T_OUT_FUA:
                        if (!outFua) { // the spec lets a driver send it only when negotiated
                            done(VirtioBlk.S_UNSUPP, 1);
                            break;
                        }
                        rw(sector, outData, true, BlockBackend.FUA);
                        break;
                    case VirtioBlk.T_FLUSH:
                        usedLen = 1;
                        submitted = true;
                        blk.flush(this);
                        break;
                    case VirtioBlk.T_GET_ID:
                        getId(inData);
                        break;
                    case VirtioBlk.T_DISCARD:
                    case VirtioBlk.T_WRITE_ZEROES:
                        discardOrZeroes(outData);
                        break;
                    default:
                        done(VirtioBlk.S_UNSUPP, 1);
                }
            } catch (InvalidGuestAddressException | IllegalStateException e) {
                // Unmappable data buffer (cannot happen after pop validated it) or too many segments.
                done(VirtioBlk.S_IOERR, 1);
            }
        }

        private void rw(long sector, long len, boolean write, int flags) throws InvalidGuestAddressException {
            if (write && !blk.isWritable()) {
                done(VirtioBlk.S_IOERR, 1);
                return;
            }
            // Offset and length must both be whole logical blocks (as QEMU's virtio-blk checks; DISCARD/WZ too).
            if (!inRange(sector, len) || len % lbs != 0 || (sector << VirtioBlk.SECTOR_SHIFT) % lbs != 0) {
                done(VirtioBlk.S_IOERR, 1);
                return;
            }
            long off = sector << VirtioBlk.SECTOR_SHIFT;
            bytes = len;
            iov.clear();
            if (write) {
                gather(true, 16, len);
                usedLen = 1;
                submitted = true;
                blk.pwritev(off, iov, flags, this);
            } else {
                gather(false, 0, len);
                usedLen = (int) Math.min(Integer.MAX_VALUE, len + 1);
                readLen = len;
                submitted = true;
                blk.preadv(off, iov, this);
            }
        }

        private void getId(long inData) throws InvalidGuestAddressException {
            int n = (int) Math.min(VirtioBlk.ID_BYTES, inData);
            byte[] id = new byte[n]; // GET_ID is rare (probe time); not on the I/O hot path
            System.arraycopy(serial, 0, id, 0, Math.min(serial.length, n));
            writeWritable(id, n);
            logWritable(n);
            done(VirtioBlk.S_OK, n + 1);
        }

        private void discardOrZeroes(long outData) throws InvalidGuestAddressException {
            if (outData > 16) { // we advertise max_*_seg = 1
                done(VirtioBlk.S_UNSUPP, 1);
                return;
            }
            if (outData < 16) {
                done(VirtioBlk.S_IOERR, 1);
                return;
            }
            readReadable(16, hdr, 16); // header already parsed; reuse its buffer
            long sector = hdrBuf.getLong(0);
            long num = Integer.toUnsignedLong(hdrBuf.getInt(8));
            int flags = hdrBuf.getInt(12);
            boolean wz = type == VirtioBlk.T_WRITE_ZEROES;
            if ((flags & ~(wz ? VirtioBlk.WZ_FLAG_UNMAP : 0)) != 0) {
                done(VirtioBlk.S_UNSUPP, 1);
                return;
            }
            long max = wz ? VirtioBlk.MAX_WRITE_ZEROES_SECTORS : VirtioBlk.MAX_DISCARD_SECTORS;
            if (!blk.isWritable() || num > max || !inRange(sector, num << VirtioBlk.SECTOR_SHIFT)
                    || ((sector << VirtioBlk.SECTOR_SHIFT) | (num << VirtioBlk.SECTOR_SHIFT)) % lbs != 0) {
                done(VirtioBlk.S_IOERR, 1);
                return;
            }
            usedLen = 1;
            long off = sector << VirtioBlk.SECTOR_SHIFT, bytes = num << VirtioBlk.SECTOR_SHIFT;
            this.bytes = bytes;
            if (wz) {
                submitted = true;
                blk.pwriteZeroes(off, bytes, (flags & VirtioBlk.WZ_FLAG_UNMAP) != 0 ? BlockBackend.MAY_UNMAP : 0, this);
            } else {
                submitted = true;
                blk.pdiscard(off, bytes, this);
            }
        }

        /** sector*512 must not overflow and [off, off+len) must lie within the device. */
        private boolean inRange(long sector, long len) {
            if (sector < 0 || sector > (Long.MAX_VALUE >> VirtioBlk.SECTOR_SHIFT)) return false;
            long off = sector << VirtioBlk.SECTOR_SHIFT;
            long cap = blk.getLength();
            return len >= 0 && off <= cap && len <= cap - off;
        }

        /** Appends views of [skip, skip+len) of the readable (or writable) part of the chain to iov. */
        private void gather(boolean readable, long skip, long len) throws InvalidGuestAddressException {
            int from = readable ? 0 : chain.readableCount();
            int to = readable ? chain.readableCount() : chain.count();
            for (int i = from; i < to && len > 0; i++) {
                long segLen = chain.len(i);
                if (skip >= segLen) {
                    skip -= segLen;
                    continue;
                }
                long n = Math.min(segLen - skip, len);
                mem.slices(chain.addr(i) + skip, n, addSeg);
                len -= n;
                skip = 0;
            }
        }

        private void readReadable(long skip, byte[] dst, int len) throws InvalidGuestAddressException {
            int done = 0;
            for (int i = 0; i < chain.readableCount() && done < len; i++) {
                long segLen = chain.len(i);
                if (skip >= segLen) {
                    skip -= segLen;
                    continue;
                }
                int n = (int) Math.min(segLen - skip, len - done);
                mem.read(chain.addr(i) + skip, dst, done, n);
                done += n;
                skip = 0;
            }
        }

        private void writeWritable(byte[] src, int len) throws InvalidGuestAddressException {
            int done = 0;
            for (int i = chain.readableCount(); i < chain.count() && done < len; i++) {
                int n = (int) Math.min(chain.len(i), len - done);
                mem.write(chain.addr(i), src, done, n);
                done += n;
            }
        }

        /** Logs the first {@code len} bytes of the device-writable buffers (they were just written). */
        private void logWritable(long len) {
            if (!logAll || log == null) return;
            for (int i = chain.readableCount(); i < chain.count() && len > 0; i++) {
                long n = Math.min(chain.len(i), len);
                markRange(chain.addr(i), n);
                len -= n;
            }
        }

        private void done(int status, int len) {
            finish(this, status, len);
        }

        /** Block-layer completion: runs on this queue's iothread (the block layer completes in the submitter's context). */
        @Override
        public void complete(int ret) {
            checkThread();
            // A read wrote into guest buffers, even a failed one may have in part: log them after the I/O and
            // before the used entry is published.
            if (readLen > 0) logWritable(readLen);
            finish(this, ret == 0 ? VirtioBlk.S_OK : VirtioBlk.S_IOERR, ret == 0 ? usedLen : 1);
        }
    }
}
