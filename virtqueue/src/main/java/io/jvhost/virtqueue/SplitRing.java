package io.jvhost.virtqueue;

import java.lang.invoke.VarHandle;

/**
 * The device side of a virtio 1.x split virtqueue. Not thread-safe: used only from its queue's iothread.
 *
 * <p>Layout (guest-physical, little-endian): descriptor table {@code 16*size} bytes of {u64 addr, u32 len, u16 flags,
 * u16 next}; available ring {u16 flags, u16 idx, u16 ring[size], u16 used_event}; used ring {u16 flags, u16 idx,
 * {u32 id, u32 len} ring[size], u16 avail_event}. All indices are free-running u16 values.
 *
 * <p>Every field the driver controls is treated as hostile; anything malformed raises {@link RingException} and
 * the caller stops the queue. A front-end that shrinks an unsealed memory fd under us makes HotSpot turn the SIGBUS
 * into an asynchronous {@link InternalError}; ring accesses convert it to RingException on a best-effort basis
 * (it may surface slightly later), the JVM survives either way. Typical device loop:
 * <pre>
 *   do { ring.disableNotification();
 *        while (ring.pop(chain)) submit(chain);
 *   } while (ring.enableNotification());
 *   // on completion: ring.push(head, len); ...; ring.publish(); if (ring.needsNotify()) call.signal();
 * </pre>
 */
public final class SplitRing {
    public static final int VIRTQ_DESC_F_NEXT = 1;
    public static final int VIRTQ_DESC_F_WRITE = 2;
    public static final int VIRTQ_DESC_F_INDIRECT = 4;
    public static final int VIRTQ_USED_F_NO_NOTIFY = 1;
    public static final int VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
    /** Largest split queue size the spec allows. */
    public static final int MAX_SIZE = 32768;
    /**
     * Largest indirect table accepted, in descriptors. The spec bounds only the total chain length (2^32 bytes);
     * Linux may use indirect tables longer than the queue, so allow the maximum queue size (512 KiB table).
     */
    public static final int MAX_INDIRECT_ENTRIES = 32768;
    /** Spec: a chain must not be longer than 2^32 bytes in total. */
    private static final long MAX_CHAIN_BYTES = 1L << 32;

    private GuestMemory mem;
    private final int size;
    private final int mask;
    private final long descGpa, availGpa, usedGpa;
    private final long availRingGpa, usedEventGpa; // avail->ring, avail->used_event
    private final long usedRingGpa, availEventGpa; // used->ring, used->avail_event
    private final boolean eventIdx;

    private int lastAvail;    // next avail index to take
    private int shadowAvail;  // last avail->idx read
    private int lastUsed;     // next used index to fill
    private int publishedUsed;
    private int signalledUsed;
    private boolean signalledValid;
    private boolean notifyEnabled = true;
    private boolean primed;
    private UsedRingWriteLog usedLog;

    /**
     * Attaches to a ring. Reads used->idx (the device continues from there) but writes nothing to guest memory
     * until the first {@link #hasAvailable}/{@link #pop}/notification call.
     *
     * @param nextAvailIdx the first avail index to take (SET_VRING_BASE), 0..65535
     */
    public SplitRing(GuestMemory mem, int size, long descGpa, long availGpa, long usedGpa, boolean eventIdx, int nextAvailIdx)
            throws RingException {
        if (size < 1 || size > MAX_SIZE || (size & (size - 1)) != 0) {
            throw new RingException("queue size " + size + " is not a power of two in 1.." + MAX_SIZE);
        }
        if ((nextAvailIdx & ~0xffff) != 0) throw new RingException("next avail index " + nextAvailIdx + " is not a u16");
        if ((descGpa & 15) != 0) throw new RingException(String.format("descriptor table 0x%x not 16-byte aligned", descGpa));
        if ((availGpa & 1) != 0) throw new RingException(String.format("avail ring 0x%x not 2-byte aligned", availGpa));
        if ((usedGpa & 3) != 0) throw new RingException(String.format("used ring 0x%x not 4-byte aligned", usedGpa));
        this.size = size;
        this.mask = size - 1;
        this.descGpa = descGpa;
        this.availGpa = availGpa;
        this.usedGpa = usedGpa;
        this.availRingGpa = availGpa + 4;
        this.usedEventGpa = availGpa + 4 + 2L * size;
        this.usedRingGpa = usedGpa + 4;
        this.availEventGpa = usedGpa + 4 + 8L * size;
        this.eventIdx = eventIdx;
        validate(mem);
        this.mem = mem;
        this.lastAvail = nextAvailIdx;
        this.shadowAvail = nextAvailIdx;
        try {
            this.lastUsed = mem.readU16(usedGpa + 2);
        } catch (InvalidGuestAddressException | InternalError e) {
            throw new RingException("cannot read used->idx: " + e.getMessage(), e);
        }
        this.publishedUsed = lastUsed;
    }

    private void validate(GuestMemory m) throws RingException {
        check(m, "descriptor table", descGpa, 16L * size);
        check(m, "avail ring", availGpa, 6 + 2L * size);
        check(m, "used ring", usedGpa, 6 + 8L * size);
    }

    private static void check(GuestMemory m, String what, long gpa, long len) throws RingException {
        if (!m.isMapped(gpa, len)) {
            throw new RingException(String.format("%s [0x%x, +%d) is not mapped", what, gpa, len));
        }
    }

    /** Switches to a new memory table snapshot, after checking the ring areas are still mapped. */
    public void setMemory(GuestMemory m) throws RingException {
        validate(m);
        this.mem = m;
    }

    public GuestMemory memory() {
        return mem;
    }

    /** Reports every used-ring write to {@code l} from now on (null: nobody). For dirty logging (migration). */
    public void setUsedWriteLog(UsedRingWriteLog l) {
        this.usedLog = l;
    }

    /** Offset of used->avail_event from the start of the used ring. */
    public long availEventOffset() {
        return 4 + 8L * size;
    }

    public int size() {
        return size;
    }

    public boolean eventIdx() {
        return eventIdx;
    }

    /** The next avail index the device will take (GET_VRING_BASE). */
    public int lastAvailIdx() {
        return lastAvail;
    }

    /** The next used index the device will fill (may be ahead of what {@link #publish} made visible). */
    public int lastUsedIdx() {
        return lastUsed;
    }

    /** Chains taken from the avail ring and not yet pushed. */
    public int inFlight() {
        return (lastAvail - lastUsed) & 0xffff;
    }

    /** Whether the driver has made chains available that the device has not taken yet. */
    public boolean hasAvailable() throws RingException {
        if (shadowAvail != lastAvail) return true;
        readAvailIdx();
        return shadowAvail != lastAvail;
    }

    /** Reads avail->idx (acquire) into shadowAvail, rejecting an index that runs away from the device. */
    private void readAvailIdx() throws RingException {
        if (!primed) applyNotificationState();
        int idx = readU16Acquire(availGpa + 2, "avail->idx");
        if (((idx - lastAvail) & 0xffff) > size) {
            throw new RingException("driver moved avail->idx from " + lastAvail + " to " + idx + " (queue size " + size + ")");
        }
        // The driver owns at most `size` chains beyond what it got back in the used ring.
        if (((idx - lastUsed) & 0xffff) > size) {
            throw new RingException("avail->idx " + idx + " is more than " + size + " ahead of used index " + lastUsed);
        }
        shadowAvail = idx;
    }

    /**
     * Pops the next available chain into {@code out}, walking NEXT links and one level of INDIRECT. Returns false
     * if none is available. On RingException nothing is consumed (the queue is broken anyway).
     */
    public boolean pop(DescChain out) throws RingException {
        if (shadowAvail == lastAvail) {
            readAvailIdx();
            if (shadowAvail == lastAvail) return false;
        }
        if (inFlight() >= size) throw new RingException("more than " + size + " chains in flight");
        int head = readU16(availRingGpa + 2L * (lastAvail & mask), "avail->ring");
        if (head >= size) throw new RingException("driver says index " + head + " is available (queue size " + size + ")");
        walk(head, out);
        lastAvail = (lastAvail + 1) & 0xffff;
        // With EVENT_IDX, ask to be kicked for the next buffer (as QEMU/libvhost-user do); skipped while disabled.
        if (eventIdx && notifyEnabled) writeUsed16(availEventGpa, lastAvail, "avail_event");
        return true;
    }

    private void walk(int head, DescChain out) throws RingException {
        out.reset(head);
        long table = descGpa;
        int tableLen = size;
        boolean indirect = false;
        int i = head;
        int steps = 0;
        try {
            while (true) {
                if (++steps > tableLen) {
                    throw new RingException("head " + head + ": looped descriptor chain (longer than " + tableLen
                            + (indirect ? " indirect entries)" : " descriptors)"));
                }
                long d = table + 16L * i;
                long addr = mem.readU64(d);
                long len = mem.readU32(d + 8);
                int flags = mem.readU16(d + 12);
                int next = mem.readU16(d + 14);
                if ((flags & VIRTQ_DESC_F_INDIRECT) != 0) {
                    // Spec: zero or more direct descriptors, then at most one indirect one, which must end the chain.
                    if (indirect) throw new RingException("head " + head + ": nested indirect descriptor");
                    if ((flags & VIRTQ_DESC_F_NEXT) != 0) {
                        throw new RingException("head " + head + ": descriptor " + i + " has both INDIRECT and NEXT");
                    }
                    if (len == 0 || len % 16 != 0 || len > 16L * MAX_INDIRECT_ENTRIES) {
                        throw new RingException("head " + head + ": bad indirect table length " + len);
                    }
                    if (!mem.isMapped(addr, len)) {
                        throw new RingException(String.format("head %d: indirect table [0x%x, +%d) is not mapped", head, addr, len));
                    }
                    table = addr; // entries are read piecewise through mem: the table may span adjacent regions
                    tableLen = (int) (len / 16);
                    indirect = true;
                    i = 0;
                    steps = 0;
                    continue;
                }
                if (len == 0) throw new RingException("head " + head + ": zero-length buffer");
                if (len > Integer.MAX_VALUE) throw new RingException("head " + head + ": buffer of " + len + " bytes (max 2^31-1)");
                if (!mem.isMapped(addr, len)) {
                    throw new RingException(String.format("head %d: buffer [0x%x, +%d) is not mapped", head, addr, len));
                }
                out.add(addr, (int) len, (flags & VIRTQ_DESC_F_WRITE) != 0);
                if ((flags & VIRTQ_DESC_F_NEXT) == 0) break;
                if (next >= tableLen) {
                    throw new RingException("head " + head + ": next index " + next + " out of range (" + tableLen
                            + (indirect ? " indirect entries)" : " descriptors)"));
                }
                i = next;
            }
        } catch (InvalidGuestAddressException | InternalError e) {
            throw new RingException("head " + head + ": " + e.getMessage(), e);
        }
        if (out.readableBytes() + out.writableBytes() > MAX_CHAIN_BYTES) {
            throw new RingException("head " + head + ": chain longer than 2^32 bytes");
        }
    }

    /** Writes a used element (not yet visible to the driver: see {@link #publish}). */
    public void push(int head, int len) throws RingException {
        if (head < 0 || head >= size) throw new RingException("push of head " + head + " (queue size " + size + ")");
        if (inFlight() == 0) throw new RingException("push of head " + head + " with no chain in flight");
        long e = usedRingGpa + 8L * (lastUsed & mask);
        try {
            mem.writeU32(e, head);
            mem.writeU32(e + 4, len & 0xffff_ffffL);
        } catch (InvalidGuestAddressException | InternalError ex) {
            throw new RingException("cannot write used element: " + ex.getMessage(), ex);
        }
        UsedRingWriteLog l = usedLog;
        if (l != null) l.usedWritten(e - usedGpa, 8);
        lastUsed = (lastUsed + 1) & 0xffff;
    }

    /** Makes pushed elements visible: used->idx = lastUsedIdx with release semantics. */
    public void publish() throws RingException {
        try {
            mem.writeU16Release(usedGpa + 2, lastUsed);
        } catch (InvalidGuestAddressException | InternalError e) {
            throw new RingException("cannot write used->idx: " + e.getMessage(), e);
        }
        UsedRingWriteLog l = usedLog;
        if (l != null) l.usedWritten(2, 2);
        publishedUsed = lastUsed;
    }

    /**
     * After {@link #publish}: whether the driver wants an interrupt. EVENT_IDX: vring_need_event(used_event, new,
     * old) where old is used->idx at the previous call (true on the first call); otherwise !NO_INTERRUPT.
     */
    public boolean needsNotify() throws RingException {
        // Store (used->idx) → load (used_event / flags): only a full fence orders these.
        VarHandle.fullFence();
        if (!eventIdx) return (readU16(availGpa, "avail->flags") & VIRTQ_AVAIL_F_NO_INTERRUPT) == 0;
        boolean valid = signalledValid;
        int old = signalledUsed;
        int now = publishedUsed;
        signalledValid = true;
        signalledUsed = now;
        if (!valid) return true;
        int event = readU16(usedEventGpa, "used_event");
        return needEvent(event, now, old);
    }

    /** vring_need_event: whether event lies in [old, new) modulo 2^16. */
    static boolean needEvent(int event, int now, int old) {
        return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
    }

    /**
     * Suppresses kicks while the device is busy anyway. Without EVENT_IDX sets used->flags NO_NOTIFY; with
     * EVENT_IDX writes nothing and just stops advancing avail_event, which is then behind the driver, so it does
     * not kick again until the device re-enables (as Linux vhost does).
     */
    public void disableNotification() throws RingException {
        notifyEnabled = false;
        applyNotificationState();
    }

    /**
     * Re-enables kicks (EVENT_IDX: avail_event = lastAvailIdx; else clears NO_NOTIFY), then, after a full fence,
     * re-reads avail->idx. Returns true if buffers became available meanwhile: the device must process them, since
     * the driver may have checked the old state and not kicked.
     */
    public boolean enableNotification() throws RingException {
        notifyEnabled = true;
        applyNotificationState();
        VarHandle.fullFence();
        readAvailIdx();
        return shadowAvail != lastAvail;
    }

    private void applyNotificationState() throws RingException {
        primed = true;
        if (eventIdx) {
            if (notifyEnabled) writeUsed16(availEventGpa, lastAvail, "avail_event");
            return;
        }
        int flags = readU16(usedGpa, "used->flags");
        int want = notifyEnabled ? flags & ~VIRTQ_USED_F_NO_NOTIFY : flags | VIRTQ_USED_F_NO_NOTIFY;
        if (want != flags) writeUsed16(usedGpa, want, "used->flags");
    }

    private int readU16(long gpa, String what) throws RingException {
        try {
            return mem.readU16(gpa);
        } catch (InvalidGuestAddressException | InternalError e) {
            throw new RingException("cannot read " + what + ": " + e.getMessage(), e);
        }
    }

    private int readU16Acquire(long gpa, String what) throws RingException {
        try {
            return mem.readU16Acquire(gpa);
        } catch (InvalidGuestAddressException | InternalError e) {
            throw new RingException("cannot read " + what + ": " + e.getMessage(), e);
        }
    }

    /** A u16 store into the used ring (flags or avail_event), reported to the used-ring write log. */
    private void writeUsed16(long gpa, int v, String what) throws RingException {
        try {
            mem.writeU16(gpa, v);
        } catch (InvalidGuestAddressException | InternalError e) {
            throw new RingException("cannot write " + what + ": " + e.getMessage(), e);
        }
        UsedRingWriteLog l = usedLog;
        if (l != null) l.usedWritten(gpa - usedGpa, 2);
    }

    @Override
    public String toString() {
        return String.format("SplitRing[size=%d desc=0x%x avail=0x%x used=0x%x eventIdx=%b lastAvail=%d lastUsed=%d]", size,
                descGpa, availGpa, usedGpa, eventIdx, lastAvail, lastUsed);
    }
}
