package io.jvhost.block;

import io.jvhost.iothread.AioContext;

import java.util.IdentityHashMap;
import java.util.Map;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A throttle group (QEMU's {@code --object throttle-group}, block/throttle-groups.c): one I/O budget, kept as
 * QEMU's leaky buckets, shared by every {@code throttle} node bound to it, whichever threads submit to them.
 *
 * <p>A request that fits the budget (and has nobody queued ahead of it in its direction) passes at once.
 * Otherwise it waits in its direction's FIFO queue (reads and writes queue separately, as in QEMU), still
 * counted as in flight on its throttle node; a timer on the AioContext of the request at the head of the queue
 * (the pool's timer thread for plain submitters) fires when the budget allows it and releases as many queued
 * requests as fit; each continues in its own submitter's context. Drain phase 1 ({@link #disable}) releases a
 * node's queued requests at once, never dropping or reordering them, and lets its new requests pass (still
 * counted against the budget) until the drained section ends: drain never waits for the throttle timer.
 *
 * <p>The limits can change at run time ({@link #setLimits}, QMP's qom-set of {@code limits}): the change applies
 * to the queued requests at once (a loosened limit releases those that now fit, a tightened one makes them and the
 * next ones wait longer). Unlike QEMU, which zeroes the buckets on reconfiguration (a fresh burst allowance each
 * time), the budget already used is kept, so tightening bites immediately.
 *
 * <p>All state is guarded by one lock per group; no callback or submission runs under it.
 */
public final class ThrottleGroup {
    private static final long NS = 1_000_000_000L;

    private final String id;
    private final ReentrantLock lock = new ReentrantLock();

    // ---- guarded by lock (cfg is also read without it: an immutable object, replaced whole) ----
    private volatile ThrottleConfig cfg;
    private final double[] level = new double[6];
    private final double[] burstLevel = new double[6];
    private long lastLeak = System.nanoTime();
    private final BlockRequest[] head = new BlockRequest[2], tail = new BlockRequest[2];
    private final int[] queued = new int[2];
    private final boolean[] releaseArmed = new boolean[2];
    private final Map<AioContext, AioContext.Timer[]> timers = new IdentityHashMap<>();
    /** The pool timer's pending release per direction (plain submitters), so a re-arm can cancel it. */
    private final ScheduledFuture<?>[] poolRelease = new ScheduledFuture<?>[2];
    private final Runnable[] release = {() -> release(0), () -> release(1)};
    /** Throttle nodes bound to this group (guarded by the owning BlockNodes). */
    int members;

    ThrottleGroup(String id, ThrottleConfig cfg) {
        this.id = id;
        this.cfg = cfg;
    }

    public String id() {
        return id;
    }

    /** The limits in QAPI spelling ({@code iops-total}, {@code bps-read-max}, ...), non-zero ones only. */
    public Map<String, Long> limits() {
        return cfg.toMap();
    }

    /** The current configuration (immutable). */
    public ThrottleConfig config() {
        return cfg;
    }

    /**
     * Replaces the limits (QEMU's throttle-group {@code limits} property). Buckets are first leaked at the old rates
     * up to now; then both directions' queues are re-evaluated at once: requests that fit the new budget are
     * released (each in its own context), and the release timer is re-armed for the new wait of the rest.
     */
    public void setLimits(ThrottleConfig c) {
        BlockRequest released;
        lock.lock();
        try {
            released = apply(c);
        } finally {
            lock.unlock();
        }
        proceedAll(released);
    }

    /**
     * Changes the given ThrottleLimits members (QAPI names) and keeps the others, atomically against concurrent
     * updates (QEMU's qom-set of {@code limits}); the result is checked as a whole, and nothing changes if it is
     * invalid.
     */
    public void updateLimits(Map<String, Long> changes) throws BlockException {
        BlockRequest released;
        lock.lock();
        try {
            released = apply(cfg.withLimits(changes));
        } finally {
            lock.unlock();
        }
        proceedAll(released);
    }

    /** Switches to c; returns the chain of requests to release. Lock held. */
    private BlockRequest apply(ThrottleConfig c) {
        leak(System.nanoTime());
        ThrottleConfig old = cfg;
        for (int i = 0; i < 6; i++) {
            // Buckets the old configuration did not track hold stale levels: start them empty.
            if (old.avg[i] == 0) level[i] = 0;
            if (old.avg[i] == 0 || old.burstLength[i] <= 1) burstLevel[i] = 0;
        }
        cfg = c;
        BlockRequest first = null;
        for (int d = 1; d >= 0; d--) {
            if (head[d] == null) continue;
            disarm(d);
            BlockRequest chain = releasable(d);
            // Reads go first, then writes, as each queue is FIFO on its own.
            if (chain != null) {
                BlockRequest last = chain;
                while (last.next != null) last = last.next;
                last.next = first;
                first = chain;
            }
        }
        return first;
    }

    /** Cancels direction d's pending release (whichever context or pool timer holds it). Lock held. */
    private void disarm(int d) {
        releaseArmed[d] = false;
        for (AioContext.Timer[] t : timers.values()) t[d].cancel();
        if (poolRelease[d] != null) {
            poolRelease[d].cancel(false);
            poolRelease[d] = null;
        }
    }

    /** Requests waiting for budget right now. */
    public int queuedRequests() {
        lock.lock();
        try {
            return queued[0] + queued[1];
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String toString() {
        return "ThrottleGroup(" + id + ", " + cfg.toMap() + ")";
    }

    // ------------------------------------------------------------------------------------------ requests

    /**
     * Admits {@code r} of throttle node {@code m} now (returns true: the caller passes it on) or queues it
     * (returns false: it is passed on later through {@link ThrottleDriver#proceed}).
     */
    boolean intercept(ThrottleDriver m, BlockRequest r, boolean write, long bytes) {
        int d = write ? 1 : 0;
        lock.lock();
        try {
            if (m.noThrottle > 0) {
                account(write, bytes);
                return true;
            }
            if (queued[d] == 0) {
                leak(System.nanoTime());
                if (computeWait(write) == 0) {
                    account(write, bytes);
                    return true;
                }
            }
            r.next = null;
            if (tail[d] == null) head[d] = r; else tail[d].next = r;
            tail[d] = r;
            queued[d]++;
            if (!releaseArmed[d]) {
                leak(System.nanoTime());
                armRelease(d, head[d], Math.max(1, computeWait(write)));
            }
            return false;
        } finally {
            lock.unlock();
        }
    }

    /** The release timer of direction d: lets queued requests go while the budget allows. */
    private void release(int d) {
        BlockRequest first;
        lock.lock();
        try {
            // A timer that fired while setLimits re-armed (its cancel came too late) has nothing left to do.
            if (!releaseArmed[d]) return;
            releaseArmed[d] = false;
            first = releasable(d);
        } finally {
            lock.unlock();
        }
        proceedAll(first);
    }

    /**
     * Dequeues (and accounts) the requests at the head of direction d that the budget allows now; re-arms the
     * release for the rest. Returns them as a chain. Lock held, release not armed.
     */
    private BlockRequest releasable(int d) {
        BlockRequest first = null, last = null;
        while (head[d] != null) {
            leak(System.nanoTime());
            long w = computeWait(d == 1);
            if (w > 0) {
                armRelease(d, head[d], w);
                break;
            }
            BlockRequest r = dequeueHead(d);
            account(d == 1, r.bytes);
            if (last == null) first = r; else last.next = r;
            last = r;
        }
        return first;
    }

    /** Drain phase 1 for node m: release all its queued requests now and let new ones pass. */
    void disable(ThrottleDriver m) {
        BlockRequest first = null, last = null;
        lock.lock();
        try {
            m.noThrottle++;
            for (int d = 0; d < 2; d++) {
                BlockRequest prev = null;
                for (BlockRequest r = head[d]; r != null; ) {
                    BlockRequest next = r.next;
                    if (r.node().driver() == m) {
                        if (prev == null) head[d] = next; else prev.next = next;
                        if (tail[d] == r) tail[d] = prev;
                        queued[d]--;
                        account(d == 1, r.bytes);
                        r.next = null;
                        if (last == null) first = r; else last.next = r;
                        last = r;
                    } else {
                        prev = r;
                    }
                    r = next;
                }
            }
        } finally {
            lock.unlock();
        }
        proceedAll(first);
    }

    /** Drain phase 5 for node m. */
    void enable(ThrottleDriver m) {
        lock.lock();
        try {
            if (m.noThrottle <= 0) throw new IllegalStateException("throttling enabled twice");
            m.noThrottle--;
        } finally {
            lock.unlock();
        }
    }

    private BlockRequest dequeueHead(int d) {
        BlockRequest r = head[d];
        head[d] = r.next;
        if (head[d] == null) tail[d] = null;
        r.next = null;
        queued[d]--;
        return r;
    }

    /** Continues each released request in its own context (outside the lock). */
    private static void proceedAll(BlockRequest r) {
        while (r != null) {
            BlockRequest next = r.next;
            r.next = null;
            ThrottleDriver m = (ThrottleDriver) r.node().driver();
            r.continueIn(r.context(), m);
            r = next;
        }
    }

    /** Arms direction d's release for {@code waitNs} from now on the context of {@code r}. Lock held. */
    private void armRelease(int d, BlockRequest r, long waitNs) {
        releaseArmed[d] = true;
        AioContext ctx = r.context();
        if (ctx != null) {
            AioContext.Timer[] t = timers.computeIfAbsent(ctx, c -> new AioContext.Timer[] {c.newTimer(release[0]), c.newTimer(release[1])});
            t[d].schedule(waitNs, java.util.concurrent.TimeUnit.NANOSECONDS);
            return;
        }
        try {
            poolRelease[d] = r.node().pool().schedule(release[d], waitNs);
        } catch (RejectedExecutionException e) {
            releaseArmed[d] = false; // shutting down; a later request re-arms
        }
    }

    // ------------------------------------------------------------------------------ leaky buckets (QEMU)

    /** throttle_do_leak: lets every bucket drain for the time since the last leak. Lock held. */
    private void leak(long now) {
        long delta = now - lastLeak;
        if (delta <= 0) return;
        lastLeak = now;
        for (int i = 0; i < 6; i++) {
            if (cfg.avg[i] == 0) continue;
            level[i] = Math.max(level[i] - (double) cfg.avg[i] * delta / NS, 0);
            if (cfg.burstLength[i] > 1) {
                burstLevel[i] = Math.max(burstLevel[i] - (double) cfg.max[i] * delta / NS, 0);
            }
        }
    }

    /** throttle_compute_wait over the buckets of one direction: ns until a request may go, 0 if now. */
    private long computeWait(boolean write) {
        long wait = 0;
        for (int i = 0; i < 6; i++) {
            if (!ThrottleConfig.applies(i, write) || cfg.avg[i] == 0) continue;
            wait = Math.max(wait, bucketWait(i));
        }
        return wait;
    }

    private long bucketWait(int i) {
        double avg = cfg.avg[i], max = cfg.max[i];
        double bucketSize, burstBucketSize;
        if (max == 0) {
            // Allow short bursts even without a burst limit, as QEMU does (a tenth of a second's worth).
            bucketSize = avg / 10;
            burstBucketSize = 0;
        } else {
            bucketSize = max * cfg.burstLength[i];
            burstBucketSize = max / 10;
        }
        double extra = level[i] - bucketSize;
        if (extra > 0) return (long) (extra * NS / avg);
        if (cfg.burstLength[i] > 1) {
            extra = burstLevel[i] - burstBucketSize;
            if (extra > 0) return (long) (extra * NS / max);
        }
        return 0;
    }

    /** throttle_account. Lock held. */
    private void account(boolean write, long bytes) {
        double units = 1.0;
        if (cfg.opSize != 0 && bytes > cfg.opSize) units = (double) bytes / cfg.opSize;
        for (int i = 0; i < 6; i++) {
            if (!ThrottleConfig.applies(i, write) || cfg.avg[i] == 0) continue;
            double amount = ThrottleConfig.isBps(i) ? Math.max(0, bytes) : units;
            level[i] += amount;
            if (cfg.burstLength[i] > 1) burstLevel[i] += amount;
        }
    }
}
