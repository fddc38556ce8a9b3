package io.jvhost.virtqueue;

import static io.jvhost.virtqueue.MemoryRegion.WINDOW_MASK;
import static io.jvhost.virtqueue.MemoryRegion.WINDOW_SHIFT;
import static io.jvhost.virtqueue.MemoryRegion.WINDOW_SIZE;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * An immutable snapshot of the front-end's memory table: the ONE place through which jvhost touches guest memory.
 * The table is replaced as a whole ({@link #with}, {@link #without} return new snapshots), so a queue holding a
 * snapshot is never affected by a concurrent update. Thread-safe.
 *
 * <p>Addresses are unsigned 64-bit values from a hostile guest. Every access is checked against the regions;
 * nothing here computes a host pointer from an unchecked value. Multi-byte values are little-endian (virtio 1.x).
 * Accesses that cross a region or window boundary are legal (adjacent regions) and done piecewise.
 */
public final class GuestMemory {
    private static final int MAX_REGIONS = 509; // libvhost-user and rust-vmm use 509 memory slots
    private static final GuestMemory EMPTY = new GuestMemory(new MemoryRegion[0]);
    private static final VarHandle SHORT_LE = MethodHandles.byteBufferViewVarHandle(short[].class, ByteOrder.LITTLE_ENDIAN);

    /** Sorted by gpa (unsigned); pairwise disjoint in gpa and in uaddr space. */
    private final MemoryRegion[] regs;
    private final long[] starts;
    private final long[] ends; // exclusive; never wraps (checked by MemoryRegion.map)

    private GuestMemory(MemoryRegion[] sorted) {
        regs = sorted;
        starts = new long[sorted.length];
        ends = new long[sorted.length];
        for (int i = 0; i < sorted.length; i++) {
            starts[i] = sorted[i].gpa();
            ends[i] = sorted[i].gpa() + sorted[i].size();
        }
    }

    public static GuestMemory empty() {
        return EMPTY;
    }

    public static int maxRegions() {
        return MAX_REGIONS;
    }

    /** A new snapshot with {@code r} added. Rejects overlap (gpa or uaddr), a closed region and a full table. */
    public GuestMemory with(MemoryRegion r) throws InvalidGuestAddressException {
        Objects.requireNonNull(r);
        if (r.isClosed()) throw new InvalidGuestAddressException("cannot add closed " + r);
        if (regs.length >= MAX_REGIONS) {
            throw new InvalidGuestAddressException("memory table full (" + MAX_REGIONS + " regions), cannot add " + r);
        }
        for (MemoryRegion e : regs) {
            if (overlaps(r.gpa(), r.size(), e.gpa(), e.size())) {
                throw new InvalidGuestAddressException(r + " overlaps " + e + " in guest-physical space");
            }
            if (overlaps(r.uaddr(), r.size(), e.uaddr(), e.size())) {
                throw new InvalidGuestAddressException(r + " overlaps " + e + " in front-end address space");
            }
        }
        MemoryRegion[] n = Arrays.copyOf(regs, regs.length + 1);
        n[regs.length] = r;
        Arrays.sort(n, (a, b) -> Long.compareUnsigned(a.gpa(), b.gpa()));
        return new GuestMemory(n);
    }

    /**
     * A new snapshot without the region matching gpa, size and uaddr (REM_MEM_REG ignores the mmap offset). The
     * removed region is not closed: the caller closes it once no queue uses an older snapshot.
     *
     * @throws IllegalArgumentException if no region matches
     */
    public GuestMemory without(long gpa, long size, long uaddr) {
        for (int i = 0; i < regs.length; i++) {
            MemoryRegion e = regs[i];
            if (e.gpa() == gpa && e.size() == size && e.uaddr() == uaddr) {
                MemoryRegion[] n = new MemoryRegion[regs.length - 1];
                System.arraycopy(regs, 0, n, 0, i);
                System.arraycopy(regs, i + 1, n, i, regs.length - i - 1);
                return new GuestMemory(n);
            }
        }
        throw new IllegalArgumentException(String.format("no region gpa=0x%x size=0x%x uaddr=0x%x", gpa, size, uaddr));
    }

    /** The regions, sorted by guest-physical address. */
    public List<MemoryRegion> regions() {
        return List.of(regs);
    }

    /** Translates a front-end virtual range (vring addresses) that must lie entirely in one region. */
    public long uaddrToGpa(long uaddr, long len) throws InvalidGuestAddressException {
        if (len < 0) throw InvalidGuestAddressException.of("negative length for uaddr", uaddr, len);
        for (MemoryRegion r : regs) {
            long off = uaddr - r.uaddr();
            if (Long.compareUnsigned(off, r.size()) < 0 && len <= r.size() - off) return r.gpa() + off;
        }
        throw InvalidGuestAddressException.of("front-end address range not inside one region", uaddr, len);
    }

    /**
     * Whether the whole of [gpa, gpa+len) is mapped by open regions, possibly several adjacent ones. Empty ranges
     * are.
     */
    public boolean isMapped(long gpa, long len) {
        if (len < 0) return false;
        long cur = gpa, rem = len;
        while (rem > 0) {
            int i = find(cur);
            if (i < 0 || regs[i].isClosed()) return false;
            long avail = ends[i] - cur; // in (0, 2^63): regions are smaller than 2^63
            if (rem <= avail) return true;
            rem -= avail;
            cur = ends[i];
        }
        return true;
    }

    // ---- scalar access --------------------------------------------------------------------------------------

    public int readU8(long gpa) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 1);
        if (r == null) throw InvalidGuestAddressException.of("unmapped guest address", gpa, 1);
        long off = gpa - r.gpa();
        return r.windows[(int) (off >>> WINDOW_SHIFT)].get((int) (off & WINDOW_MASK)) & 0xff;
    }

    public int readU16(long gpa) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 2);
        if (r == null) return (int) readSlow(gpa, 2);
        long off = gpa - r.gpa();
        return r.windows[(int) (off >>> WINDOW_SHIFT)].getShort((int) (off & WINDOW_MASK)) & 0xffff;
    }

    public long readU32(long gpa) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 4);
        if (r == null) return readSlow(gpa, 4);
        long off = gpa - r.gpa();
        return r.windows[(int) (off >>> WINDOW_SHIFT)].getInt((int) (off & WINDOW_MASK)) & 0xffff_ffffL;
    }

    public long readU64(long gpa) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 8);
        if (r == null) return readSlow(gpa, 8);
        long off = gpa - r.gpa();
        return r.windows[(int) (off >>> WINDOW_SHIFT)].getLong((int) (off & WINDOW_MASK));
    }

    public void writeU8(long gpa, int v) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 1);
        if (r == null) throw InvalidGuestAddressException.of("unmapped guest address", gpa, 1);
        long off = gpa - r.gpa();
        r.windows[(int) (off >>> WINDOW_SHIFT)].put((int) (off & WINDOW_MASK), (byte) v);
    }

    public void writeU16(long gpa, int v) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 2);
        if (r == null) {
            writeSlow(gpa, v, 2);
            return;
        }
        long off = gpa - r.gpa();
        r.windows[(int) (off >>> WINDOW_SHIFT)].putShort((int) (off & WINDOW_MASK), (short) v);
    }

    public void writeU32(long gpa, long v) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 4);
        if (r == null) {
            writeSlow(gpa, v, 4);
            return;
        }
        long off = gpa - r.gpa();
        r.windows[(int) (off >>> WINDOW_SHIFT)].putInt((int) (off & WINDOW_MASK), (int) v);
    }

    public void writeU64(long gpa, long v) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 8);
        if (r == null) {
            writeSlow(gpa, v, 8);
            return;
        }
        long off = gpa - r.gpa();
        r.windows[(int) (off >>> WINDOW_SHIFT)].putLong((int) (off & WINDOW_MASK), v);
    }

    /**
     * Reads a u16 with acquire semantics (avail->idx: later loads of ring entries and descriptors see what the
     * driver wrote before publishing idx).
     */
    public int readU16Acquire(long gpa) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 2);
        if (r != null) {
            long off = gpa - r.gpa();
            int w = (int) (off >>> WINDOW_SHIFT);
            int idx = (int) (off & WINDOW_MASK);
            // The VarHandle's atomic modes demand natural alignment of the host address; a hostile mmap offset
            // can break it, so fall back to a plain load plus fence (same ordering guarantee).
            if (((r.windowAddr[w] + idx) & 1) == 0) return (short) SHORT_LE.getAcquire(r.windows[w], idx) & 0xffff;
        }
        int v = readU16(gpa);
        VarHandle.acquireFence();
        return v;
    }

    /** Writes a u16 with release semantics (used->idx: the used elements written before become visible first). */
    public void writeU16Release(long gpa, int v) throws InvalidGuestAddressException {
        MemoryRegion r = fast(gpa, 2);
        if (r != null) {
            long off = gpa - r.gpa();
            int w = (int) (off >>> WINDOW_SHIFT);
            int idx = (int) (off & WINDOW_MASK);
            if (((r.windowAddr[w] + idx) & 1) == 0) {
                SHORT_LE.setRelease(r.windows[w], idx, (short) v);
                return;
            }
        }
        if (!isMapped(gpa, 2)) throw InvalidGuestAddressException.of("unmapped guest range", gpa, 2);
        VarHandle.releaseFence();
        writeU16(gpa, v);
    }

    // ---- bulk access ------------------------------------------------------------------------------------------

    /** Copies guest [gpa, gpa+len) into dst[off..off+len). Checks the whole range before copying anything. */
    public void read(long gpa, byte[] dst, int off, int len) throws InvalidGuestAddressException {
        Objects.checkFromIndexSize(off, len, dst.length);
        if (!isMapped(gpa, len)) throw InvalidGuestAddressException.of("unmapped guest range", gpa, len);
        long cur = gpa;
        while (len > 0) {
            MemoryRegion r = regionFor(cur);
            long o = cur - r.gpa();
            ByteBuffer w = r.windows[(int) (o >>> WINDOW_SHIFT)];
            int idx = (int) (o & WINDOW_MASK);
            int take = Math.min(len, w.capacity() - idx);
            w.get(idx, dst, off, take);
            cur += take;
            off += take;
            len -= take;
        }
    }

    /** Copies src[off..off+len) to guest [gpa, gpa+len). Checks the whole range before writing anything. */
    public void write(long gpa, byte[] src, int off, int len) throws InvalidGuestAddressException {
        Objects.checkFromIndexSize(off, len, src.length);
        if (!isMapped(gpa, len)) throw InvalidGuestAddressException.of("unmapped guest range", gpa, len);
        long cur = gpa;
        while (len > 0) {
            MemoryRegion r = regionFor(cur);
            long o = cur - r.gpa();
            ByteBuffer w = r.windows[(int) (o >>> WINDOW_SHIFT)];
            int idx = (int) (o & WINDOW_MASK);
            int take = Math.min(len, w.capacity() - idx);
            w.put(idx, src, off, take);
            cur += take;
            off += take;
            len -= take;
        }
    }

    /**
     * Appends views of guest [gpa, gpa+len) to {@code out}, split at region/window boundaries (buffers may legally
     * cross adjacent regions). Nothing is appended if any part is unmapped. The views stay valid only while the
     * regions are open: do not keep them past the request.
     *
     * @return number of segments added
     */
    public int slices(long gpa, long len, Consumer<ByteBuffer> out) throws InvalidGuestAddressException {
        return slices(gpa, len, (w, index, length) -> out.accept(w.slice(index, length)));
    }

    /** Receives a part of guest memory as a range of a shared window buffer (see {@link #slices(long, long, WindowSink)}). */
    public interface WindowSink {
        /**
         * {@code [index, index+length)} of {@code window}. The window is shared by every thread: read its position
         * and limit as meaningless, never change them, and do not keep it past the request.
         */
        void accept(ByteBuffer window, int index, int length);
    }

    /**
     * Like {@link #slices(long, long, Consumer)}, but hands out ranges of the shared window buffers instead of new
     * slices, so the hot path can reuse its own views of them (nothing allocated per segment).
     *
     * @return number of segments passed to {@code out}
     */
    public int slices(long gpa, long len, WindowSink out) throws InvalidGuestAddressException {
        if (!isMapped(gpa, len)) throw InvalidGuestAddressException.of("unmapped guest range", gpa, len);
        int n = 0;
        long cur = gpa, rem = len;
        while (rem > 0) {
            MemoryRegion r = regionFor(cur);
            long o = cur - r.gpa();
            ByteBuffer w = r.windows[(int) (o >>> WINDOW_SHIFT)];
            int idx = (int) (o & WINDOW_MASK);
            int take = (int) Math.min(rem, w.capacity() - idx);
            out.accept(w, idx, take);
            n++;
            cur += take;
            rem -= take;
        }
        return n;
    }

    @Override
    public String toString() {
        return "GuestMemory" + Arrays.toString(regs);
    }

    // ---- internals ----------------------------------------------------------------------------------------------

    private static boolean overlaps(long a, long alen, long b, long blen) {
        // Neither range wraps, so unsigned "a < b.end && b < a.end" is exact.
        return Long.compareUnsigned(a, b + blen) < 0 && Long.compareUnsigned(b, a + alen) < 0;
    }

    /** Index of the region containing gpa, or -1. */
    private int find(long gpa) {
        long[] s = starts;
        int lo = 0, hi = s.length - 1, hit = -1;
        while (lo <= hi) { // last region whose start <= gpa (unsigned)
            int mid = (lo + hi) >>> 1;
            if (Long.compareUnsigned(s[mid], gpa) <= 0) {
                hit = mid;
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        return hit >= 0 && Long.compareUnsigned(gpa, ends[hit]) < 0 ? hit : -1;
    }

    /**
     * The open region holding [gpa, gpa+n) inside one window, or null if the range is unmapped or crosses a
     * region/window boundary (callers then take the piecewise path). Throws if the region was closed.
     */
    private MemoryRegion fast(long gpa, int n) throws InvalidGuestAddressException {
        int i = find(gpa);
        if (i < 0) return null;
        MemoryRegion r = regs[i];
        long off = gpa - starts[i];
        if (off > r.size() - n) return null;
        if ((off & WINDOW_MASK) + n > WINDOW_SIZE) return null;
        if (r.isClosed()) throw InvalidGuestAddressException.of("access to closed region " + r + " at", gpa, n);
        return r;
    }

    /** The open region containing gpa; only for addresses already checked with isMapped. */
    private MemoryRegion regionFor(long gpa) throws InvalidGuestAddressException {
        int i = find(gpa);
        if (i < 0) throw InvalidGuestAddressException.of("unmapped guest address", gpa, 1);
        MemoryRegion r = regs[i];
        if (r.isClosed()) throw InvalidGuestAddressException.of("access to closed region " + r + " at", gpa, 1);
        return r;
    }

    /** Little-endian value of n bytes that cross a region or window boundary, read byte by byte. */
    private long readSlow(long gpa, int n) throws InvalidGuestAddressException {
        if (!isMapped(gpa, n)) throw InvalidGuestAddressException.of("unmapped guest range", gpa, n);
        long v = 0;
        for (int k = 0; k < n; k++) v |= (long) readU8(gpa + k) << (8 * k);
        return v;
    }

    private void writeSlow(long gpa, long v, int n) throws InvalidGuestAddressException {
        if (!isMapped(gpa, n)) throw InvalidGuestAddressException.of("unmapped guest range", gpa, n);
        for (int k = 0; k < n; k++) writeU8(gpa + k, (int) (v >>> (8 * k)));
    }
}
