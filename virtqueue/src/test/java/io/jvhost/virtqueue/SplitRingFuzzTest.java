package io.jvhost.virtqueue;

import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_INDIRECT;
import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_NEXT;
import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_WRITE;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.io.InputStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Coverage-guided fuzzing of the descriptor-chain walker and the rest of the device side of a split ring
 * ({@link SplitRing#pop} and push/publish/notification handling) over real guest memory: three memfd regions
 * mapped by {@link MemoryRegion}, A and B adjacent in guest-physical space, C large enough (sparse) to have two
 * ByteBuffer windows. The fuzz input places the ring, then runs a sequence of driver writes (descriptors, indirect
 * tables, avail entries and index, raw bytes anywhere) interleaved with device operations.
 *
 * <p>Oracles: only {@link RingException} may escape (anything else is a finding); a failed pop consumes nothing;
 * every popped chain satisfies the DescChain contract (head and segment count in range, lengths &gt; 0, every
 * buffer mapped in the ring's current memory snapshot, readable before writable, ≤ 2^32 bytes) and equals what an
 * independent reference walker reads from the driver's own mapping; the device writes nothing outside the used
 * ring (compared against a shadow copy of everything the driver wrote).
 *
 * <p>Input format ({@link FuzzInput}): u8 log2(size), u8 mode, ring addresses (u32 arena offsets, or u64 raw with
 * mode bit 1), u16 first avail index, u16 initial used->idx, u8 chain capacity - 1, then ops (u8 opcode + operands,
 * see {@link #run}).
 */
class SplitRingFuzzTest {
    static final long MIB = 1L << 20;
    static final long A_GPA = 0, A_SIZE = 512 * 1024, A_UADDR = 0x7f00_0000_0000L, A_OFF = 0x1000;
    static final long B_GPA = A_GPA + A_SIZE, B_SIZE = 512 * 1024, B_UADDR = 0x7e00_0000_0000L, B_OFF = 0;
    static final long C_GPA = 0x1_0000_0000L, C_SIZE = (1L << 30) + 0x10000, C_UADDR = 0x7d00_0000_0000L, C_OFF = 0x2000;
    /** The driver-visible arena: [0, 1 MiB) (A then B) and 128 KiB of C straddling its window border up to its end. */
    static final long LOW = A_SIZE + B_SIZE;
    static final long CWIN = C_GPA + (1L << 30) - 0x10000, CWIN_SIZE = 0x20000;
    static final int MAX_OPS = 512;

    private static final List<AutoCloseable> cleanup = new ArrayList<>();
    private static MemoryRegion a, b, c;
    /** Memory-table snapshots a ring can be switched to (the full one first). */
    private static GuestMemory[] tables;
    /** Driver views: low = A∪B (two buffers), win = the C window. */
    private static ByteBuffer viewA, viewB, viewC;
    private static final byte[] shadowLow = new byte[(int) LOW], shadowWin = new byte[(int) CWIN_SIZE];
    private static final byte[] zeroes = new byte[(int) LOW];

    @BeforeAll
    static void mapGuest() throws Exception {
        a = region("A", A_GPA, A_SIZE, A_UADDR, A_OFF, A_OFF, A_SIZE);
        viewA = lastView;
        b = region("B", B_GPA, B_SIZE, B_UADDR, B_OFF, B_OFF, B_SIZE);
        viewB = lastView;
        c = region("C", C_GPA, C_SIZE, C_UADDR, C_OFF, C_OFF + (CWIN - C_GPA), CWIN_SIZE);
        viewC = lastView;
        GuestMemory full = GuestMemory.empty().with(a).with(b).with(c);
        tables = new GuestMemory[] {full, GuestMemory.empty().with(a).with(b), GuestMemory.empty().with(b).with(c),
            GuestMemory.empty().with(a)};
    }

    private static ByteBuffer lastView;

    /** Maps the region for the device (MemoryRegion) and [viewOff, +viewLen) of the same memfd for the driver. */
    private static MemoryRegion region(String name, long gpa, long size, long uaddr, long off, long viewOff, long viewLen)
            throws Exception {
        int fd = TestGuest.memfd("jvhost-fuzz-" + name, off + size);
        try {
            Pointer p = Libc.mmapOrThrow(viewLen, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, viewOff);
            cleanup.add(() -> Libc.munmap(p, viewLen));
            lastView = p.getByteBuffer(0, viewLen).order(ByteOrder.LITTLE_ENDIAN);
            MemoryRegion r = MemoryRegion.map(fd, gpa, size, uaddr, off);
            cleanup.add(r);
            return r;
        } finally {
            Libc.close(fd);
        }
    }

    @AfterAll
    static void unmapGuest() throws Exception {
        for (int i = cleanup.size() - 1; i >= 0; i--) cleanup.get(i).close();
        cleanup.clear();
    }

    // ------------------------------------------------------------------------------------------ driver side

    /** Arena address for a fuzzed 32-bit value: the top bit selects the C window, the rest is an offset. */
    static long arena(long v) {
        return (v & 0x8000_0000L) != 0 ? CWIN + (v % CWIN_SIZE) : v % LOW;
    }

    private long dirtyLo = Long.MAX_VALUE, dirtyHi, dirtyWinLo = Long.MAX_VALUE, dirtyWinHi;

    /** Driver store of bytes; parts outside the arena are dropped (the driver only owns the arena). Bulk copies. */
    void put(long gpa, byte[] data) {
        // [gpa, gpa+len) may wrap 2^64; clip it to each arena part in unsigned arithmetic.
        for (int k = 0; k < data.length; ) {
            long g = gpa + k;
            if (Long.compareUnsigned(g, LOW) < 0) {
                int n = (int) Math.min(data.length - k, (g < A_SIZE ? A_SIZE : LOW) - g);
                if (g < A_SIZE) viewA.put((int) g, data, k, n);
                else viewB.put((int) (g - A_SIZE), data, k, n);
                System.arraycopy(data, k, shadowLow, (int) g, n);
                dirtyLo = Math.min(dirtyLo, g);
                dirtyHi = Math.max(dirtyHi, g + n);
                k += n;
            } else if (Long.compareUnsigned(g - CWIN, CWIN_SIZE) < 0) {
                int o = (int) (g - CWIN);
                int n = Math.min(data.length - k, (int) CWIN_SIZE - o);
                viewC.put(o, data, k, n);
                System.arraycopy(data, k, shadowWin, o, n);
                dirtyWinLo = Math.min(dirtyWinLo, o);
                dirtyWinHi = Math.max(dirtyWinHi, o + n);
                k += n;
            } else { // outside the arena: jump to where the next part starts, if the data reaches it
                long d = Long.compareUnsigned(-g, CWIN - g) < 0 ? -g : CWIN - g;
                if (Long.compareUnsigned(d, data.length - k) >= 0) break;
                k += (int) d;
            }
        }
    }

    void putLe(long gpa, long v, int n) {
        byte[] d = new byte[n];
        for (int k = 0; k < n; k++) d[k] = (byte) (v >>> (8 * k));
        put(gpa, d);
    }

    /** Driver load (reference walker): -1 if any byte is outside the arena. */
    static long getLe(long gpa, int n) {
        long v = 0;
        for (int k = 0; k < n; k++) {
            long g = gpa + k;
            int x;
            if (Long.compareUnsigned(g, LOW) < 0) {
                x = (g < A_SIZE ? viewA : viewB).get((int) (g < A_SIZE ? g : g - A_SIZE)) & 0xff;
            } else if (Long.compareUnsigned(g - CWIN, CWIN_SIZE) < 0) {
                x = viewC.get((int) (g - CWIN)) & 0xff;
            } else {
                return -1;
            }
            v |= (long) x << (8 * k);
        }
        return v;
    }

    static boolean inArena(long gpa, long len) {
        return Long.compareUnsigned(gpa, LOW) < 0 && Long.compareUnsigned(len, LOW - gpa) <= 0
                || Long.compareUnsigned(gpa - CWIN, CWIN_SIZE) < 0 && Long.compareUnsigned(len, CWIN_SIZE - (gpa - CWIN)) <= 0;
    }

    // ------------------------------------------------------------------------------------------ the target

    @FuzzTest(maxDuration = "2m")
    void popChains(byte[] data) throws Exception {
        try {
            run(new FuzzInput(data));
        } finally {
            restoreArena();
        }
    }

    /** What the last input did (for {@link #seedsReachWhatTheyAreFor}). */
    private int pops;
    /** Whether used->idx (as the driver left it) and the base were at most the queue size apart at the start. */
    private boolean consistent;
    private String ringError;

    /** The committed seeds still do what they were written for (a ring change could silently make them moot). */
    @Test
    void seedsReachWhatTheyAreFor() throws Exception {
        String[][] expect = {{"direct-chain", "pop"}, {"indirect-event-idx", "pop"}, {"cross-region-and-window", "pop"},
            {"queue-32768", "pop"}, {"loop", "looped"}, {"nested-indirect", "nested indirect"},
            {"avail-runaway", "moved avail->idx"}, {"head-out-of-range", "is available"}, {"raw-geometry", "not mapped"},
            {"misaligned", "aligned"}, {"crash-used-idx-ahead-of-base", "no finding"}};
        for (String[] e : expect) {
            byte[] seed;
            try (InputStream is = getClass().getResourceAsStream("SplitRingFuzzTestInputs/popChains/"
                    + (e[0].startsWith("crash-") ? "" : "seed-") + e[0])) {
                check(is != null, "missing seed " + e[0]);
                seed = is.readAllBytes();
            }
            pops = 0;
            ringError = null;
            popChains(seed);
            if (e[1].equals("no finding")) continue; // a fixed finding: replaying it without an error is the test
            if (e[1].equals("pop")) {
                check(pops > 0 && ringError == null, e[0] + ": pops " + pops + ", error " + ringError);
            } else {
                check(ringError != null && ringError.contains(e[1]), e[0] + ": error " + ringError);
            }
        }
    }

    private void run(FuzzInput in) throws Exception {
        int size = 1 << (in.u8() % 16);
        int mode = in.u8();
        boolean eventIdx = (mode & 1) != 0;
        long desc, avail, used;
        if ((mode & 2) != 0) { // raw 64-bit geometry: the constructor must refuse what is not mapped or aligned
            desc = in.u64();
            avail = in.u64();
            used = in.u64();
        } else {
            boolean misalign = (mode & 4) != 0;
            desc = arena(in.u32()) & (misalign ? ~0L : ~15L);
            avail = arena(in.u32()) & (misalign ? ~0L : ~1L);
            used = arena(in.u32()) & (misalign ? ~0L : ~3L);
        }
        int nextAvail = in.u16();
        putLe(avail + 2, nextAvail, 2); // as after a migration: the driver's avail->idx matches the base
        putLe(used + 2, in.u16(), 2);
        DescChain chain = new DescChain(1 + in.u8());
        GuestMemory mem = tables[0];
        SplitRing ring;
        try {
            ring = new SplitRing(mem, size, desc, avail, used, eventIdx, nextAvail);
        } catch (RingException e) {
            ringError = e.getMessage();
            return;
        }
        usedLo = used;
        usedLen = 6 + 8L * size;
        int availIdx = nextAvail;
        consistent = ring.inFlight() <= size;
        ArrayDeque<Integer> inFlight = new ArrayDeque<>();
        try {
            for (int op = 0; op < MAX_OPS && in.more(); op++) {
                switch (in.u8() % 14) {
                    case 0 -> put(arena(in.u32()), in.bytes(in.u8())); // raw bytes anywhere in the arena
                    case 1 -> putDesc(desc + 16L * (in.u16() % size), in);
                    case 2 -> putDesc(arena(in.u32()) & ~15L, in); // an indirect-table entry
                    case 3 -> { // offer a head and publish
                        putLe(avail + 4 + 2L * (availIdx % size), in.u16(), 2);
                        availIdx = (availIdx + 1) & 0xffff;
                        putLe(avail + 2, availIdx, 2);
                    }
                    case 4 -> putLe(avail + 2, availIdx = in.u16(), 2);
                    case 5 -> pop(ring, chain, mem, size, desc, inFlight);
                    case 6 -> { // completion of a chain in flight, or of any index (the device layer decides that)
                        int sel = in.u8();
                        long len = in.u32();
                        int head = (sel & 1) != 0 && !inFlight.isEmpty() ? inFlight.poll() : in.u16();
                        ring.push(head, (int) len);
                    }
                    case 7 -> ring.publish();
                    case 8 -> ring.needsNotify();
                    case 9 -> ring.disableNotification();
                    case 10 -> ring.enableNotification();
                    case 11 -> ring.hasAvailable();
                    case 12 -> {
                        GuestMemory next = tables[in.u8() % tables.length];
                        ring.setMemory(next);
                        mem = next;
                    }
                    default -> putLe(in.u8() % 2 == 0 ? avail : avail + 4 + 2L * size, in.u16(), 2); // flags / used_event
                }
                // A used->idx the driver wrote before the start may make the count meaningless; such a ring must
                // then never hand out a chain (checked in pop).
                check(!consistent || ring.inFlight() <= size, "more chains in flight than the queue size: " + ring);
            }
        } catch (RingException e) {
            // A malformed ring: the device stops using the queue. Expected outcome for hostile input.
            ringError = e.getMessage();
        }
        checkOnlyUsedRingWritten();
    }

    private void putDesc(long at, FuzzInput in) {
        int m = in.u8();
        long addr = (m & 1) != 0 ? in.u64() : arena(in.u32());
        long len = (m & 2) != 0 ? in.u32() : in.u16();
        int flags = (m & 4) != 0 ? in.u16() : in.u8() & 7;
        int next = in.u16();
        putLe(at, addr, 8);
        putLe(at + 8, len, 4);
        putLe(at + 12, flags, 2);
        putLe(at + 14, next, 2);
    }

    private void pop(SplitRing ring, DescChain chain, GuestMemory mem, int size, long desc, ArrayDeque<Integer> inFlight)
            throws RingException {
        int before = ring.lastAvailIdx();
        boolean got;
        try {
            got = ring.pop(chain);
        } catch (RingException e) {
            check(ring.lastAvailIdx() == before, "a failed pop consumed an avail entry");
            throw e;
        }
        if (!got) {
            check(ring.lastAvailIdx() == before, "an empty pop moved the avail index");
            return;
        }
        check(ring.lastAvailIdx() == ((before + 1) & 0xffff), "pop did not take exactly one entry");
        check(consistent, "pop handed out a chain although used->idx and the base were more than the queue size apart");
        checkChain(chain, mem, size);
        List<long[]> ref = referenceWalk(chain.head(), desc, size, mem, chain.capacity(), usedLo, usedLen);
        if (ref != null) {
            check(ref.size() == chain.count(), () -> "reference walker found " + ref.size() + " segments, pop " + chain);
            for (int i = 0; i < ref.size(); i++) {
                long[] s = ref.get(i);
                int k = i;
                check(s[0] == chain.addr(i) && s[1] == chain.len(i) && (s[2] != 0) == chain.writable(i),
                        () -> "segment " + k + " differs from the reference walk: " + chain);
            }
        }
        inFlight.add(chain.head());
        pops++;
    }

    /** The DescChain contract, checked against the memory snapshot the ring uses. */
    static void checkChain(DescChain c, GuestMemory mem, int size) {
        check(c.head() >= 0 && c.head() < size, () -> "head out of range: " + c);
        check(c.count() >= 1 && c.count() <= c.capacity(), () -> "segment count: " + c);
        check(c.readableCount() + c.writableCount() == c.count(), () -> "counts: " + c);
        long r = 0, w = 0;
        for (int i = 0; i < c.count(); i++) {
            int k = i;
            check(c.len(i) > 0, () -> "empty segment " + k + ": " + c);
            check(mem.isMapped(c.addr(i), c.len(i)), () -> "segment " + k + " not mapped in " + mem + ": " + c);
            check(c.writable(i) == (i >= c.readableCount()), () -> "readable after writable: " + c);
            if (c.writable(i)) w += c.len(i);
            else r += c.len(i);
        }
        check(r == c.readableBytes() && w == c.writableBytes(), () -> "byte counts: " + c);
        check(r + w <= 1L << 32, () -> "chain longer than 2^32 bytes: " + c);
    }

    /**
     * An independent walk of the chain from the driver's mapping, per the virtio 1.x rules as jvhost applies them
     * (one level of INDIRECT, which ends the chain; no loops; no empty or unmapped buffers; readable before
     * writable). Returns {addr, len, writable} per segment, or null when the reference cannot tell: a descriptor
     * lies outside the driver's arena, or inside the used ring (pop writes avail_event there after its walk).
     * Only called for chains pop accepted: a reference failure is a finding.
     */
    static List<long[]> referenceWalk(int head, long desc, int size, GuestMemory mem, int capacity, long usedLo, long usedLen) {
        List<long[]> out = new ArrayList<>();
        long table = desc;
        long n = size;
        boolean indirect = false, sawWritable = false;
        long i = head, steps = 0, total = 0;
        while (true) {
            check(++steps <= n, "reference: pop accepted a looping chain");
            long d = table + 16 * i;
            if (!inArena(d, 16)) return null;
            if (Long.compareUnsigned(d - usedLo, usedLen) < 0 || Long.compareUnsigned(usedLo - d, 16) < 0) return null;
            long addr = getLe(d, 8), len = getLe(d + 8, 4);
            int flags = (int) getLe(d + 12, 2), next = (int) getLe(d + 14, 2);
            if ((flags & VIRTQ_DESC_F_INDIRECT) != 0) {
                check(!indirect && (flags & VIRTQ_DESC_F_NEXT) == 0, "reference: pop accepted a bad INDIRECT descriptor");
                check(len > 0 && len % 16 == 0 && len <= 16L * SplitRing.MAX_INDIRECT_ENTRIES && mem.isMapped(addr, len),
                        "reference: pop accepted a bad indirect table");
                table = addr;
                n = len / 16;
                indirect = true;
                i = 0;
                steps = 0;
                continue;
            }
            boolean w = (flags & VIRTQ_DESC_F_WRITE) != 0;
            check(len > 0 && len <= Integer.MAX_VALUE && mem.isMapped(addr, len), "reference: pop accepted a bad buffer");
            check(w || !sawWritable, "reference: pop accepted readable after writable");
            sawWritable |= w;
            total += len;
            out.add(new long[] {addr, len, w ? 1 : 0});
            check(out.size() <= capacity, "reference: pop accepted more segments than the chain holds");
            if ((flags & VIRTQ_DESC_F_NEXT) == 0) break;
            check(next < n, "reference: pop accepted a next index out of range");
            i = next;
        }
        check(total <= 1L << 32, "reference: pop accepted a chain longer than 2^32 bytes");
        return out;
    }

    // ------------------------------------------------------------------------------------------ memory oracle

    private long usedLo, usedLen;

    private boolean isUsedRing(long gpa) {
        return usedLen > 0 && Long.compareUnsigned(gpa - usedLo, usedLen) < 0;
    }

    /** Everything in the arena equals what the driver wrote, except the used ring (the device's to write). */
    private void checkOnlyUsedRingWritten() {
        compare(viewA, 0, shadowLow, 0, (int) A_SIZE, A_GPA);
        compare(viewB, 0, shadowLow, (int) A_SIZE, (int) B_SIZE, B_GPA);
        compare(viewC, 0, shadowWin, 0, (int) CWIN_SIZE, CWIN);
    }

    private void compare(ByteBuffer actual, int aOff, byte[] shadow, int sOff, int len, long gpa) {
        int from = 0;
        while (from < len) {
            int m = actual.slice(aOff + from, len - from).mismatch(ByteBuffer.wrap(shadow, sOff + from, len - from));
            if (m < 0) return;
            long g = gpa + from + m;
            check(isUsedRing(g), () -> String.format("device wrote guest byte 0x%x outside the used ring [0x%x, +%d)", g, usedLo, usedLen));
            from += m + 1;
        }
    }

    /** Zeroes what this input touched (driver writes and the used ring), in guest memory and the shadow. */
    private void restoreArena() {
        if (usedLen > 0) { // the device may have written anywhere in the used ring: widen the spans to cover it
            long lo = usedLo, hi = usedLo + usedLen; // a ring that was built is mapped, so this does not wrap
            if (Long.compareUnsigned(lo, LOW) < 0) {
                dirtyLo = Math.min(dirtyLo, lo);
                dirtyHi = Math.max(dirtyHi, Long.compareUnsigned(hi, LOW) < 0 ? hi : LOW);
            }
            if (Long.compareUnsigned(lo, CWIN + CWIN_SIZE) < 0 && Long.compareUnsigned(hi, CWIN) > 0) {
                dirtyWinLo = Math.min(dirtyWinLo, Long.compareUnsigned(lo, CWIN) > 0 ? lo - CWIN : 0);
                dirtyWinHi = Math.max(dirtyWinHi, Long.compareUnsigned(hi, CWIN + CWIN_SIZE) < 0 ? hi - CWIN : CWIN_SIZE);
            }
        }
        if (dirtyHi > dirtyLo) {
            zero(dirtyLo, dirtyHi);
            Arrays.fill(shadowLow, (int) dirtyLo, (int) dirtyHi, (byte) 0);
        }
        if (dirtyWinHi > dirtyWinLo) {
            viewC.put((int) dirtyWinLo, zeroes, 0, (int) (dirtyWinHi - dirtyWinLo));
            Arrays.fill(shadowWin, (int) dirtyWinLo, (int) dirtyWinHi, (byte) 0);
        }
        dirtyLo = dirtyWinLo = Long.MAX_VALUE;
        dirtyHi = dirtyWinHi = 0;
        usedLen = 0;
    }

    private static void zero(long lo, long hi) {
        if (lo < A_SIZE) viewA.put((int) lo, zeroes, 0, (int) (Math.min(hi, A_SIZE) - lo));
        if (hi > A_SIZE) {
            long from = Math.max(lo, A_SIZE) - A_SIZE;
            viewB.put((int) from, zeroes, 0, (int) (hi - A_SIZE - from));
        }
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static void check(boolean ok, java.util.function.Supplier<String> what) {
        if (!ok) throw new AssertionError(what.get());
    }
}
