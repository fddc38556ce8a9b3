package io.jvhost.vhostuser.frontend;

import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.sys.EventFd;

import java.io.IOException;
import java.lang.invoke.VarHandle;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;

/**
 * The driver side of one split virtqueue, living in {@link GuestMemory}: descriptor table, avail ring (with
 * used_event) and used ring (with avail_event), a kick eventfd the driver writes and a call eventfd it waits on.
 *
 * <p>Two levels of use: {@link #submit}/{@link #await} for well-formed virtio-blk requests, and raw accessors
 * ({@link #writeDescriptor}, {@link #putAvailEntry}, {@link #setAvailIdx} ...) for malformed rings in fuzz tests.
 * Not thread-safe: the test thread drives it; only the call-eventfd handler runs on the shared irq thread, and it
 * touches nothing but a semaphore.
 */
public final class DriverQueue implements AutoCloseable {
    /** One used-ring element as the back-end wrote it. */
    public record UsedElem(int id, long len) {}

    /** One buffer of a descriptor chain. */
    public record Segment(long gpa, int len, boolean writable) {}

    private final GuestMemory mem;
    private final int index;
    private final int size;
    private final long descGpa, availGpa, usedGpa;
    private final EventFd kick, call;
    private final Semaphore calls = new Semaphore(0);
    private final AtomicLong callCount = new AtomicLong();
    private final AioContext irq;
    private AioContext.FdHandler callHandler;

    private final int[] freeStack;
    private int freeTop;
    private final int[][] chains;          // head -> descriptors of the chain (null: not in flight)
    private final long[] indirectTables;   // head -> guest table to free (0: none)
    private final BlkRequest[] requests;   // head -> request
    private final boolean[] rawInFlight;   // head -> pushed with pushRawHead
    private final List<UsedElem> unexpected = new ArrayList<>();

    private boolean eventIdx;
    private boolean kickAlways;
    private int shadowAvail;   // next avail idx to publish
    private int lastKickAvail; // avail idx at the previous notification decision
    private int lastUsed;      // used idx consumed so far
    private long kicksSent, kicksSuppressed;
    private boolean closed;

    /**
     * Allocates a queue of {@code size} entries (1..32768; the driver must use a power of two for a legal split
     * ring, but odd sizes are allowed here for fuzzing) in {@code mem} and zeroes it.
     */
    public DriverQueue(GuestMemory mem, int index, int size) throws IOException {
        this(mem, index, size, -1);
    }

    /** As above, with all three ring parts in region {@code ringRegion} (-1: spread over the regions). */
    public DriverQueue(GuestMemory mem, int index, int size, int ringRegion) throws IOException {
        if (size < 1 || size > 32768) throw new IllegalArgumentException("queue size " + size);
        this.mem = mem;
        this.index = index;
        this.size = size;
        // Round-robin allocation puts desc/avail/used into different regions, exercising translation.
        this.descGpa = ringRegion < 0 ? mem.alloc(16L * size, 4096) : mem.alloc(16L * size, 4096, ringRegion);
        this.availGpa = ringRegion < 0 ? mem.alloc(6L + 2L * size, 4096) : mem.alloc(6L + 2L * size, 4096, ringRegion);
        this.usedGpa = ringRegion < 0 ? mem.alloc(6L + 8L * size, 4096) : mem.alloc(6L + 8L * size, 4096, ringRegion);
        this.freeStack = new int[size];
        this.chains = new int[size][];
        this.indirectTables = new long[size];
        this.requests = new BlkRequest[size];
        this.rawInFlight = new boolean[size];
        EventFd k = null, c = null;
        try {
            k = EventFd.create();
            c = EventFd.create();
        } catch (IOException e) {
            if (k != null) k.close();
            freeRing();
            throw e;
        }
        this.kick = k;
        this.call = c;
        this.irq = IrqThread.acquire();
        this.callHandler = irq.setFdHandler(call.fd(), () -> {
            if (call.drain() != 0) {
                callCount.incrementAndGet();
                calls.release();
            }
        });
        reset();
    }

    // ------------------------------------------------------------------------------------------ geometry

    public int index() { return index; }
    public int size() { return size; }
    public GuestMemory memory() { return mem; }
    public long descGpa() { return descGpa; }
    public long availGpa() { return availGpa; }
    public long usedGpa() { return usedGpa; }
    public long descUaddr() { return mem.uaddr(descGpa); }
    public long availUaddr() { return mem.uaddr(availGpa); }
    public long usedUaddr() { return mem.uaddr(usedGpa); }
    /** The kick eventfd (sent with SET_VRING_KICK; this queue writes it). */
    public int kickFd() { return kick.fd(); }
    /** The call eventfd (sent with SET_VRING_CALL; the irq thread watches it). */
    public int callFd() { return call.fd(); }

    /** Whether the driver uses used_event/avail_event (must match the negotiated VIRTIO_RING_F_EVENT_IDX). */
    public void setEventIdx(boolean on) { this.eventIdx = on; }
    public boolean eventIdx() { return eventIdx; }

    /** Kick after every publish, ignoring the device's suppression hints (default: honour them, as Linux does). */
    public void setKickAlways(boolean on) { this.kickAlways = on; }

    /** Notifications the queue actually sent / suppressed because the device asked for no kick. */
    public long kicksSent() { return kicksSent; }
    public long kicksSuppressed() { return kicksSuppressed; }
    /** Number of call-eventfd signals seen (spurious ones included). */
    public long callCount() { return callCount.get(); }

    /** Zeroes the ring and forgets all in-flight chains (requests in flight are abandoned, not completed). */
    public void reset() {
        checkOpen();
        mem.fill(descGpa, 16L * size, (byte) 0);
        mem.fill(availGpa, 6L + 2L * size, (byte) 0);
        mem.fill(usedGpa, 6L + 8L * size, (byte) 0);
        for (int h = 0; h < size; h++) {
            if (indirectTables[h] != 0) mem.free(indirectTables[h]);
            if (requests[h] != null) requests[h].abandon(mem);
            chains[h] = null;
            indirectTables[h] = 0;
            requests[h] = null;
            rawInFlight[h] = false;
        }
        freeTop = 0;
        for (int i = size - 1; i >= 0; i--) freeStack[freeTop++] = i;
        shadowAvail = lastKickAvail = lastUsed = 0;
        unexpected.clear();
        calls.drainPermits();
    }

    // ------------------------------------------------------------------------------------------ driver side

    public int freeDescriptors() { return freeTop; }

    /** Requests (and raw heads) submitted and not yet seen in the used ring. */
    public int inFlight() {
        int n = 0;
        for (int h = 0; h < size; h++) if (chains[h] != null || rawInFlight[h]) n++;
        return n;
    }

    /**
     * Builds a descriptor chain (or a single INDIRECT descriptor pointing at a table in guest RAM) for the
     * segments and places its head in the avail ring, unpublished. {@code indirectTableGpa} 0 = allocate a table.
     * Returns the head index, or -1 if there are not enough free descriptors.
     */
    public int addChain(List<Segment> segs, boolean indirect, long indirectTableGpa) {
        checkOpen();
        if (segs.isEmpty()) throw new IllegalArgumentException("empty chain");
        int need = indirect ? 1 : segs.size();
        if (need > freeTop) return -1;
        int[] descs = new int[need];
        for (int i = 0; i < need; i++) descs[i] = freeStack[--freeTop];
        int head = descs[0];
        if (indirect) {
            int n = segs.size();
            long table = indirectTableGpa != 0 ? mem.allocAt(indirectTableGpa, 16L * n) : mem.alloc(16L * n, 16);
            for (int i = 0; i < n; i++) {
                Segment s = segs.get(i);
                boolean more = i + 1 < n;
                putDesc(table + 16L * i, s.gpa, s.len, (s.writable ? VRING_DESC_F_WRITE : 0) | (more ? VRING_DESC_F_NEXT : 0), more ? i + 1 : 0);
            }
            writeDescriptor(head, table, 16 * n, VRING_DESC_F_INDIRECT, 0);
            indirectTables[head] = table;
        } else {
            for (int i = 0; i < need; i++) {
                Segment s = segs.get(i);
                boolean more = i + 1 < need;
                writeDescriptor(descs[i], s.gpa, s.len, (s.writable ? VRING_DESC_F_WRITE : 0) | (more ? VRING_DESC_F_NEXT : 0), more ? descs[i + 1] : 0);
            }
        }
        chains[head] = descs;
        putAvailEntry(shadowAvail % size, head);
        shadowAvail = (shadowAvail + 1) & 0xffff;
        return head;
    }

    /** Makes all added chains visible to the device (store-release of avail->idx). */
    public void publish() {
        checkOpen();
        mem.putU16Release(availGpa + 2, shadowAvail);
    }

    /**
     * Publishes and notifies the device unless it asked not to be (avail_event with EVENT_IDX, else
     * VRING_USED_F_NO_NOTIFY). Returns whether a kick was written.
     */
    public boolean kick() {
        publish();
        VarHandle.fullFence(); // the idx store must be visible before we read the device's suppression state
        int newIdx = shadowAvail, old = lastKickAvail;
        lastKickAvail = newIdx;
        boolean notify;
        if (kickAlways) {
            notify = true;
        } else if (eventIdx) {
            int ev = mem.getU16(usedGpa + 4 + 8L * size);
            notify = ((newIdx - ev - 1) & 0xffff) < ((newIdx - old) & 0xffff);
        } else {
            notify = (mem.getU16(usedGpa) & VRING_USED_F_NO_NOTIFY) == 0;
        }
        if (notify) notifyDevice();
        else kicksSuppressed++;
        return notify;
    }

    /** Writes the kick eventfd unconditionally. */
    public void notifyDevice() {
        checkOpen();
        kick.signal();
        kicksSent++;
    }

    /** Adds a request's chain (unpublished). Throws if the ring is full. */
    public void enqueue(BlkRequest r) {
        checkOpen();
        List<Segment> segs = r.prepare(mem);
        int head;
        try {
            head = addChain(segs, r.isIndirect(), r.indirectTableGpa());
        } catch (RuntimeException e) {
            r.abandon(mem);
            throw e;
        }
        if (head < 0) {
            r.abandon(mem);
            throw new IllegalStateException("queue " + index + " has no free descriptors for " + r);
        }
        requests[head] = r;
        r.submitted(this, head);
    }

    /** enqueue + kick. */
    public BlkRequest submit(BlkRequest r) {
        enqueue(r);
        kick();
        return r;
    }

    // --------------------------------------------------------------------------------------- completions

    /** Current used->idx (load-acquire). */
    public int usedIdx() {
        checkOpen();
        return mem.getU16Acquire(usedGpa + 2);
    }

    /**
     * Consumes every new used element: completes the matching requests, frees their descriptors and buffers.
     * Elements whose id is not in flight are returned too and recorded in {@link #unexpectedUsed()}.
     */
    public List<UsedElem> pollUsed() {
        checkOpen();
        List<UsedElem> out = new ArrayList<>();
        int end = usedIdx();
        // A hostile back-end could move used->idx by more than the ring size; never loop further than that.
        int n = Math.min((end - lastUsed) & 0xffff, size);
        for (int i = 0; i < n; i++) {
            long e = usedGpa + 4 + 8L * (lastUsed % size);
            UsedElem u = new UsedElem((int) mem.getU32(e), mem.getU32(e + 4));
            lastUsed = (lastUsed + 1) & 0xffff;
            out.add(u);
            retire(u);
        }
        if (n > 0 && ((end - lastUsed) & 0xffff) != 0) lastUsed = end; // skip the impossible remainder
        return out;
    }

    private void retire(UsedElem u) {
        int h = u.id();
        if (h < 0 || h >= size || (chains[h] == null && !rawInFlight[h])) {
            unexpected.add(u);
            return;
        }
        if (rawInFlight[h]) {
            rawInFlight[h] = false;
            return;
        }
        for (int d : chains[h]) freeStack[freeTop++] = d;
        chains[h] = null;
        if (indirectTables[h] != 0) {
            mem.free(indirectTables[h]);
            indirectTables[h] = 0;
        }
        BlkRequest r = requests[h];
        requests[h] = null;
        if (r != null) r.complete(mem, u.len());
    }

    /** Used elements that did not match anything in flight (a back-end bug, or a fuzz test's doing). */
    public List<UsedElem> unexpectedUsed() {
        return unexpected;
    }

    /**
     * Asks the device for an interrupt on the next used entry: with EVENT_IDX writes used_event = the used idx
     * consumed so far, else clears VRING_AVAIL_F_NO_INTERRUPT.
     */
    public void enableInterrupts() {
        if (eventIdx) mem.putU16(availGpa + 4 + 2L * size, lastUsed);
        else mem.putU16(availGpa, mem.getU16(availGpa) & ~VRING_AVAIL_F_NO_INTERRUPT);
    }

    /** Asks the device not to interrupt (flag without EVENT_IDX; used_event half a ring-index away with it). */
    public void disableInterrupts() {
        if (eventIdx) mem.putU16(availGpa + 4 + 2L * size, (lastUsed + 0x8000) & 0xffff);
        else mem.putU16(availGpa, mem.getU16(availGpa) | VRING_AVAIL_F_NO_INTERRUPT);
    }

    /**
     * Waits until at least {@code n} used elements were consumed (by this call), blocking on the call eventfd
     * between checks. Returns the elements; throws TimeoutException with what was seen so far.
     */
    public List<UsedElem> awaitUsed(int n, Duration timeout) throws TimeoutException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        List<UsedElem> got = new ArrayList<>();
        while (true) {
            got.addAll(pollUsed());
            if (got.size() >= n) return got;
            enableInterrupts();
            VarHandle.fullFence(); // publish used_event before re-reading used->idx (lost-wakeup race)
            if (usedIdx() != lastUsed) continue;
            long left = deadline - System.nanoTime();
            if (left <= 0 || !calls.tryAcquire(left, TimeUnit.NANOSECONDS)) {
                got.addAll(pollUsed());
                if (got.size() >= n) return got;
                throw new TimeoutException("queue " + index + ": " + got.size() + "/" + n + " used elements after " + timeout
                        + " (avail idx " + shadowAvail + ", used idx " + usedIdx() + ", calls " + callCount.get() + ")");
            }
        }
    }

    /** Like {@link #awaitUsed} but spins on used->idx without waiting for notifications (polling driver). */
    public List<UsedElem> pollUntil(int n, Duration timeout) throws TimeoutException {
        long deadline = System.nanoTime() + timeout.toNanos();
        List<UsedElem> got = new ArrayList<>();
        while (true) {
            got.addAll(pollUsed());
            if (got.size() >= n) return got;
            if (System.nanoTime() - deadline > 0) {
                throw new TimeoutException("queue " + index + ": " + got.size() + "/" + n + " used elements after polling " + timeout);
            }
            Thread.onSpinWait();
        }
    }

    /** Waits for one call-eventfd signal (spurious or not). Returns false on timeout. */
    public boolean awaitCall(Duration timeout) throws InterruptedException {
        return calls.tryAcquire(timeout.toNanos(), TimeUnit.NANOSECONDS);
    }

    /** Waits until {@code r} completed. */
    public BlkRequest await(BlkRequest r, Duration timeout) throws TimeoutException, InterruptedException {
        awaitAll(List.of(r), timeout);
        return r;
    }

    /** Waits until every request completed. */
    public void awaitAll(Collection<BlkRequest> rs, Duration timeout) throws TimeoutException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            pollUsed();
            long pending = rs.stream().filter(r -> !r.isDone()).count();
            if (pending == 0) return;
            long left = deadline - System.nanoTime();
            try {
                awaitUsed(1, Duration.ofNanos(Math.max(left, 1)));
            } catch (TimeoutException e) {
                throw new TimeoutException(pending + " of " + rs.size() + " requests not completed: " + e.getMessage());
            }
        }
    }

    // ------------------------------------------------------------------------------------------ raw access

    /** Takes {@code n} descriptor indices off the free list for hand-built (raw) chains. */
    public int[] reserveDescriptors(int n) {
        if (n > freeTop) throw new IllegalStateException("only " + freeTop + " free descriptors");
        int[] d = new int[n];
        for (int i = 0; i < n; i++) d[i] = freeStack[--freeTop];
        return d;
    }

    /** Returns descriptors taken with {@link #reserveDescriptors}. */
    public void releaseDescriptors(int... d) {
        for (int i : d) freeStack[freeTop++] = i;
    }

    /** Writes descriptor {@code i} of the table (no validation at all: for malformed rings). */
    public void writeDescriptor(int i, long addr, int len, int flags, int next) {
        if (i < 0 || i >= size) throw new IllegalArgumentException("descriptor index " + i);
        putDesc(descGpa + 16L * i, addr, len, flags, next);
    }

    private void putDesc(long at, long addr, int len, int flags, int next) {
        mem.putU64(at, addr);
        mem.putU32(at + 8, len & 0xffffffffL);
        mem.putU16(at + 12, flags);
        mem.putU16(at + 14, next);
    }

    /** Writes any 16-byte descriptor at any guest address (e.g. a hand-made indirect table). */
    public void writeDescriptorAt(long gpa, long addr, int len, int flags, int next) {
        putDesc(gpa, addr, len, flags, next);
    }

    /** Writes avail->ring[slot] = head, both unchecked (slot must be < size). */
    public void putAvailEntry(int slot, int head) {
        if (slot < 0 || slot >= size) throw new IllegalArgumentException("avail slot " + slot);
        mem.putU16(availGpa + 4 + 2L * slot, head);
    }

    /**
     * Places {@code head} (any value, even out of range) in the next avail slot, unpublished, and expects it
     * back in the used ring without a request attached.
     */
    public void pushRawHead(int head) {
        putAvailEntry(shadowAvail % size, head);
        shadowAvail = (shadowAvail + 1) & 0xffff;
        if (head >= 0 && head < size) rawInFlight[head] = true;
    }

    /** Sets avail->idx to any value (store-release) and makes it the queue's notion of published entries. */
    public void setAvailIdx(int idx) {
        shadowAvail = idx & 0xffff;
        publish();
    }

    /** The avail idx the driver has reached (published or not). */
    public int availIdx() { return shadowAvail; }

    public void setAvailFlags(int flags) { mem.putU16(availGpa, flags); }
    public int availFlags() { return mem.getU16(availGpa); }
    public void setUsedEvent(int v) { mem.putU16(availGpa + 4 + 2L * size, v); }
    public int usedFlags() { return mem.getU16(usedGpa); }
    /** avail_event as written by the device (meaningful with EVENT_IDX). */
    public int availEvent() { return mem.getU16(usedGpa + 4 + 8L * size); }
    /** The used idx this driver has consumed up to. */
    public int lastUsed() { return lastUsed; }

    /** Reads used->ring[slot] without consuming it. */
    public UsedElem usedElem(int slot) {
        long e = usedGpa + 4 + 8L * (slot % size);
        return new UsedElem((int) mem.getU32(e), mem.getU32(e + 4));
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("queue " + index + " is closed");
    }

    private void freeRing() {
        mem.free(descGpa);
        mem.free(availGpa);
        mem.free(usedGpa);
    }

    /** Stops watching the call fd, closes both eventfds and returns the ring memory (if the guest is still open). */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        callHandler.remove(); // waits until the loop dropped the fd, so closing it cannot race a reused number
        IrqThread.release();
        kick.close();
        call.close();
        if (!mem.isClosed()) {
            for (int h = 0; h < size; h++) {
                if (indirectTables[h] != 0) mem.free(indirectTables[h]);
                if (requests[h] != null) requests[h].abandon(mem);
            }
            freeRing();
        }
    }

    @Override
    public String toString() {
        return String.format("DriverQueue[%d size=%d desc=0x%x avail=0x%x used=0x%x]", index, size, descGpa, availGpa, usedGpa);
    }
}
