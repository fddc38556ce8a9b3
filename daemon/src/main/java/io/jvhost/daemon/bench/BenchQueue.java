package io.jvhost.daemon.bench;

import io.jvhost.iothread.sys.Libc;

import java.lang.invoke.VarHandle;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The driver side of one split virtqueue plus the thread that drives it: keeps up to iodepth virtio-blk requests
 * in flight, reaps completions and times each request.
 *
 * <p>Everything is laid out once in {@link GuestRam}: the ring, and per request slot a 128-byte control block
 * (16-byte header at 0, status byte at 16, a 3-entry indirect table at 64) and a data buffer. The descriptor
 * chain of every slot is written once at setup (slot s owns descriptors 3s..3s+2, or descriptor s pointing at
 * its indirect table), so a submission writes only the header, the status byte (and with randrw the data
 * descriptor's direction) and one avail-ring entry. The steady-state loop allocates nothing.
 *
 * <p>Per batch: fill all free slots, take one timestamp, publish avail->idx (store-release), and kick unless the
 * device suppressed notifications (avail_event with EVENT_IDX, else VRING_USED_F_NO_NOTIFY). Reaping reads
 * used->idx (load-acquire) and takes one timestamp for the batch of completions it finds. With nothing to reap,
 * the thread either blocks in read(2) on the call eventfd after asking for a notification at the next used index
 * (used_event = last seen used index with EVENT_IDX, else clearing VRING_AVAIL_F_NO_INTERRUPT; a fence and a
 * re-check close the race with a completion published meanwhile), or spins on used->idx (poll mode, with
 * notifications suppressed so the device saves its eventfd writes).
 *
 * <p>The back-end is not trusted: a used element that names no request in flight, more used entries than
 * requests in flight, or a status other than OK ends the run with a {@link BenchException}.
 */
final class BenchQueue implements Runnable {
    static final int T_IN = 0, T_OUT = 1;
    static final int DESC_F_NEXT = 1, DESC_F_WRITE = 2, DESC_F_INDIRECT = 4;
    static final int USED_F_NO_NOTIFY = 1, AVAIL_F_NO_INTERRUPT = 1;
    static final int CTL_SIZE = 128, CTL_STATUS = 16, CTL_TABLE = 64;
    static final byte STATUS_PENDING = (byte) 0xff;

    final int index;
    final int queueSize;
    final long descGpa, availGpa, usedGpa;
    final int kickFd, callFd;

    private final BenchRun run;
    private final ByteBuffer bb;
    private final int mask, depth, bs;
    private final boolean eventIdx, poll, indirect;
    private final BenchOptions.Rw rw;
    private final int mixRead;
    private final int availFlags, availIdx, availRing, usedEvent, usedFlags, usedIdx, usedRing, availEvent;
    private final int[] ctl;          // slot -> control block offset
    private final short[] head;       // slot -> head descriptor id
    private final int[] dataFlags;    // slot -> offset of its data descriptor's flags (randrw flips it)
    private final long[] startNs;
    private final boolean[] inFlight, isRead;
    private final int[] free, batch;
    private int freeTop;
    private final long[] eventBuf = new long[1];

    // offsets
    private final long blocks;        // random: device blocks of bs in the region
    private final long seqFirst, seqBlocks;
    private long seqNext;
    private long rng;

    // ring state
    private int shadowAvail, lastKickAvail, lastUsed, inflight;

    // statistics: written by the queue thread only; read by others after join, except `completed` (progress)
    final LatencyHistogram hist = new LatencyHistogram();
    long reads, writes;
    private long kicks, waits, submitBatches, reapBatches;
    /** The counters above over the measured window (they restart when it starts). */
    long windowKicks, windowWaits, windowSubmitBatches, windowReapBatches;
    /** Times the call eventfd had to be made blocking again (see {@link #makeCallFdBlocking}). */
    long callFdResets;
    long cpuStartNs = -1, cpuEndNs = -1, allocStart = -1, allocEnd = -1;
    final AtomicLong completed = new AtomicLong();
    private long completedLocal;

    /** Guest RAM one queue needs (every piece page aligned, in the order the constructor allocates them). */
    static long ramNeeded(BenchOptions o) {
        long q = o.effectiveQueueSize();
        return page(16 * q) + page(6 + 2 * q) + page(6 + 8 * q) + page((long) CTL_SIZE * o.ioDepth())
                + o.ioDepth() * page(o.blockSize());
    }

    private static long page(long n) {
        return (n + GuestRam.PAGE - 1) & -GuestRam.PAGE;
    }

    /**
     * Lays the queue out in {@code ram} and writes its descriptors.
     *
     * @param regionBytes bytes of the device the run may touch, from offset 0 (a multiple of 512, >= bs)
     * @param eventIdx    whether VIRTIO_RING_F_EVENT_IDX was negotiated
     */
    BenchQueue(BenchRun run, GuestRam ram, int index, BenchOptions o, long regionBytes, boolean eventIdx,
               int kickFd, int callFd) {
        this.run = run;
        this.bb = ram.buf;
        this.index = index;
        this.queueSize = o.effectiveQueueSize();
        this.mask = queueSize - 1;
        this.depth = o.ioDepth();
        this.bs = o.blockSize();
        this.eventIdx = eventIdx;
        this.poll = o.waitMode() == BenchOptions.Wait.POLL;
        this.indirect = o.indirect();
        this.rw = o.rw();
        this.mixRead = o.rw() == BenchOptions.Rw.RANDRW ? o.rwMixRead() : (o.rw().writes() ? 0 : 100);
        this.kickFd = kickFd;
        this.callFd = callFd;
        if (depth * o.descriptorsPerRequest() > queueSize) {
            throw new IllegalArgumentException("--queue-size " + queueSize + " cannot hold " + depth + " requests of "
                    + o.descriptorsPerRequest() + " descriptors");
        }

        descGpa = ram.alloc(16L * queueSize, GuestRam.PAGE);
        availGpa = ram.alloc(6 + 2L * queueSize, GuestRam.PAGE);
        usedGpa = ram.alloc(6 + 8L * queueSize, GuestRam.PAGE);
        availFlags = (int) availGpa;
        availIdx = (int) availGpa + 2;
        availRing = (int) availGpa + 4;
        usedEvent = (int) availGpa + 4 + 2 * queueSize;
        usedFlags = (int) usedGpa;
        usedIdx = (int) usedGpa + 2;
        usedRing = (int) usedGpa + 4;
        availEvent = (int) usedGpa + 4 + 8 * queueSize;

        ctl = new int[depth];
        head = new short[depth];
        dataFlags = new int[depth];
        startNs = new long[depth];
        inFlight = new boolean[depth];
        isRead = new boolean[depth];
        free = new int[depth];
        batch = new int[depth];
        long ctlBase = ram.alloc((long) CTL_SIZE * depth, GuestRam.PAGE);
        for (int s = 0; s < depth; s++) ctl[s] = (int) (ctlBase + (long) CTL_SIZE * s);
        boolean readInit = mixRead > 0;
        for (int s = 0; s < depth; s++) {
            long data = ram.alloc(bs, GuestRam.PAGE);
            int c = ctl[s];
            bb.putInt(c, readInit ? T_IN : T_OUT).putInt(c + 4, 0).putLong(c + 8, 0);
            int dataDirection = readInit ? DESC_F_WRITE : 0;
            if (indirect) {
                int t = c + CTL_TABLE;
                putDesc(t, c, 16, DESC_F_NEXT, 1);
                putDesc(t + 16, data, bs, DESC_F_NEXT | dataDirection, 2);
                putDesc(t + 32, c + CTL_STATUS, 1, DESC_F_WRITE, 0);
                putDesc((int) descGpa + 16 * s, t, 48, DESC_F_INDIRECT, 0);
                head[s] = (short) s;
                dataFlags[s] = t + 16 + 12;
            } else {
                int d = (int) descGpa + 16 * 3 * s;
                putDesc(d, c, 16, DESC_F_NEXT, 3 * s + 1);
                putDesc(d + 16, data, bs, DESC_F_NEXT | dataDirection, 3 * s + 2);
                putDesc(d + 32, c + CTL_STATUS, 1, DESC_F_WRITE, 0);
                head[s] = (short) (3 * s);
                dataFlags[s] = d + 16 + 12;
            }
        }
        for (int s = depth - 1; s >= 0; s--) free[freeTop++] = s;

        // Start with notifications off; the wait loop asks for them only right before it blocks.
        suppressNotifications();

        blocks = regionBytes / bs;
        long stripe = blocks / o.queues();
        if (stripe == 0) {
            seqFirst = 0;
            seqBlocks = blocks;
        } else {
            seqFirst = stripe * index;
            seqBlocks = stripe;
        }
        rng = mix64(o.seed() + 0x9E3779B97F4A7C15L * (index + 1));
        if (rng == 0) rng = 1;
    }

    private void putDesc(int at, long addr, int len, int flags, int next) {
        bb.putLong(at, addr).putInt(at + 8, len).putShort(at + 12, (short) flags).putShort(at + 14, (short) next);
    }

    /** SplitMix64 finaliser: spreads a seed over all bits. */
    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** xorshift64*: a good enough, allocation-free generator for offsets and the read/write mix. */
    private long nextRandom() {
        long x = rng;
        x ^= x >>> 12;
        x ^= x << 25;
        x ^= x >>> 27;
        rng = x;
        return x * 0x2545F4914F6CDD1DL;
    }

    private long nextOffset() {
        if (rw.random()) return Long.remainderUnsigned(nextRandom(), blocks) * bs;
        long b = seqFirst + seqNext;
        if (++seqNext == seqBlocks) seqNext = 0;
        return b * bs;
    }

    private boolean nextIsRead() {
        if (mixRead == 100) return true;
        if (mixRead == 0) return false;
        return Long.remainderUnsigned(nextRandom() >>> 1, 100) < mixRead;
    }

    // ------------------------------------------------------------------------------------------ the loop

    @Override
    public void run() {
        try {
            loop();
        } catch (Throwable t) {
            run.fail("queue " + index + ": " + (t instanceof BenchException ? t.getMessage() : t.toString()), t);
        } finally {
            run.queueDone();
        }
    }

    private void loop() throws BenchException {
        final long wStart = run.windowStart(), wEnd = run.windowEnd();
        boolean started = false, ended = false;
        while (true) {
            if (run.aborted()) return;
            long now = System.nanoTime();
            if (!started && now - wStart >= 0) {
                started = true;
                kicks = waits = submitBatches = reapBatches = 0;
                cpuStartNs = threadCpu();
                allocStart = threadAllocated();
            }
            if (!ended && now - wEnd >= 0) {
                ended = true;
                cpuEndNs = threadCpu();
                allocEnd = threadAllocated();
                windowKicks = kicks;
                windowWaits = waits;
                windowSubmitBatches = submitBatches;
                windowReapBatches = reapBatches;
            }
            if (ended) {
                if (inflight == 0) return;
            } else {
                submit();
            }
            if (reap(wStart, wEnd) == 0) waitForUsed();
        }
    }

    private void submit() throws BenchException {
        int n = freeTop;
        if (n == 0) return;
        boolean mixed = mixRead != 0 && mixRead != 100;
        for (int k = 0; k < n; k++) {
            int s = free[--freeTop];
            boolean read = nextIsRead();
            long off = nextOffset();
            int c = ctl[s];
            bb.putInt(c, read ? T_IN : T_OUT);
            bb.putLong(c + 8, off >>> 9);
            bb.put(c + CTL_STATUS, STATUS_PENDING);
            if (mixed) bb.putShort(dataFlags[s], (short) (read ? DESC_F_NEXT | DESC_F_WRITE : DESC_F_NEXT));
            isRead[s] = read;
            inFlight[s] = true;
            bb.putShort(availRing + 2 * (shadowAvail & mask), head[s]);
            shadowAvail = (shadowAvail + 1) & 0xffff;
            batch[k] = s;
        }
        // One timestamp for the batch: its requests become visible to the device together, at the publish below.
        long t = System.nanoTime();
        for (int k = 0; k < n; k++) startNs[batch[k]] = t;
        inflight += n;
        submitBatches++;
        GuestRam.U16.setRelease(bb, availIdx, (short) shadowAvail);
        VarHandle.fullFence(); // the idx store must be visible before we read the device's suppression state
        boolean notify;
        if (eventIdx) {
            int ev = bb.getShort(availEvent) & 0xffff;
            notify = ((shadowAvail - ev - 1) & 0xffff) < ((shadowAvail - lastKickAvail) & 0xffff);
        } else {
            notify = (bb.getShort(usedFlags) & USED_F_NO_NOTIFY) == 0;
        }
        lastKickAvail = shadowAvail;
        if (notify) {
            if (Libc.eventfd_write(kickFd, 1L) != 0) throw new BenchException("writing the kick eventfd failed: errno " + Libc.errno());
            kicks++;
        }
    }

    private int reap(long wStart, long wEnd) throws BenchException {
        int used = ((short) GuestRam.U16.getAcquire(bb, usedIdx)) & 0xffff;
        int n = (used - lastUsed) & 0xffff;
        if (n == 0) return 0;
        if (n > inflight) {
            throw new BenchException("back-end moved used->idx from " + lastUsed + " to " + used + " with only " + inflight + " requests in flight");
        }
        long now = System.nanoTime();
        boolean record = now - wStart >= 0 && now - wEnd < 0;
        for (int i = 0; i < n; i++) {
            int id = bb.getInt(usedRing + 8 * (lastUsed & mask));
            int s = slotOf(id);
            if (s < 0 || !inFlight[s]) {
                throw new BenchException("back-end returned descriptor id " + Integer.toUnsignedString(id) + " which is not in flight");
            }
            int status = bb.get(ctl[s] + CTL_STATUS) & 0xff;
            if (status != 0) {
                throw new BenchException((isRead[s] ? "read" : "write") + " of " + bs + " bytes at sector "
                        + bb.getLong(ctl[s] + 8) + " failed with virtio-blk status " + status
                        + (status == 1 ? " (IOERR)" : status == 2 ? " (UNSUPP)" : status == 0xff ? " (never written)" : ""));
            }
            inFlight[s] = false;
            free[freeTop++] = s;
            if (record) {
                hist.record(now - startNs[s]);
                if (isRead[s]) reads++;
                else writes++;
            }
            lastUsed = (lastUsed + 1) & 0xffff;
        }
        inflight -= n;
        reapBatches++;
        completedLocal += n;
        completed.lazySet(completedLocal);
        if (poll && eventIdx) suppressNotifications(); // keep used_event out of reach as used->idx moves on
        return n;
    }

    private int slotOf(int id) {
        if (indirect) return id >= 0 && id < depth ? id : -1;
        if (id < 0 || id % 3 != 0) return -1;
        int s = id / 3;
        return s < depth ? s : -1;
    }

    /** used_event half the index space away (EVENT_IDX) or VRING_AVAIL_F_NO_INTERRUPT: the device need not call. */
    private void suppressNotifications() {
        if (eventIdx) bb.putShort(usedEvent, (short) (lastUsed + 0x8000));
        else bb.putShort(availFlags, (short) AVAIL_F_NO_INTERRUPT);
    }

    private void waitForUsed() throws BenchException {
        if (poll) {
            Thread.onSpinWait();
            return;
        }
        // Ask for a call at the next used entry, then re-check: a completion published before the device could
        // see the request would otherwise leave us blocked forever (the classic lost-wakeup race).
        if (eventIdx) bb.putShort(usedEvent, (short) lastUsed);
        else bb.putShort(availFlags, (short) 0);
        VarHandle.fullFence();
        int used = ((short) GuestRam.U16.getAcquire(bb, usedIdx)) & 0xffff;
        if (used == lastUsed && !run.aborted()) {
            waits++;
            long r = Libc.read(callFd, eventBuf, 8);
            if (r != 8) {
                int e = Libc.errno();
                if (e == Libc.EAGAIN) {
                    makeCallFdBlocking();
                } else if (e != Libc.EINTR) {
                    throw new BenchException("reading the call eventfd failed: errno " + e);
                }
            }
        }
        suppressNotifications();
    }

    /**
     * The back-end may put the call eventfd in non-blocking mode (jvhost does, against peers that would let its
     * writes block), and O_NONBLOCK belongs to the open file description we share with it: then read(2) would
     * return EAGAIN and the queue thread would spin instead of sleeping. An eventfd write blocks only when the
     * counter would pass 2^64-2, so clearing the flag again changes nothing for the back-end.
     */
    void makeCallFdBlocking() throws BenchException {
        int fl = Libc.fcntl(callFd, Libc.F_GETFL, 0);
        if (fl < 0) throw new BenchException("fcntl(F_GETFL) on the call eventfd failed: errno " + Libc.errno());
        if ((fl & Libc.O_NONBLOCK) == 0) return;
        if (Libc.fcntl(callFd, Libc.F_SETFL, fl & ~Libc.O_NONBLOCK) < 0) {
            throw new BenchException("fcntl(F_SETFL) on the call eventfd failed: errno " + Libc.errno());
        }
        callFdResets++;
    }

    /** Wakes the thread if it is blocked on the call eventfd (abort, watchdog). */
    void wake() {
        Libc.eventfd_write(callFd, 1L);
    }

    /** The avail index published so far (what GET_VRING_BASE should return once the device has drained). */
    int availIndex() {
        return shadowAvail;
    }

    int inFlightCount() {
        return inflight;
    }

    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

    private static long threadCpu() {
        try {
            return THREADS.isCurrentThreadCpuTimeSupported() ? THREADS.getCurrentThreadCpuTime() : -1;
        } catch (UnsupportedOperationException e) {
            return -1;
        }
    }

    private static long threadAllocated() {
        if (THREADS instanceof com.sun.management.ThreadMXBean t && t.isThreadAllocatedMemorySupported()) {
            return t.getCurrentThreadAllocatedBytes();
        }
        return -1;
    }
}
