package io.jvhost.vhostuser.frontend;

import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Simulated guest RAM for the test front-end: memfd-backed regions mapped into this process, each with its own
 * guest-physical base (gpa) and a fake front-end virtual base (uaddr) that differs from the gpa, so a back-end
 * has to translate vring addresses (uaddr) and descriptor addresses (gpa) through the region table it was sent.
 *
 * <p>All regions share one memfd at distinct mmap offsets by default (the back-end must honour mmap_offset), or
 * get a memfd each. A small first-fit allocator hands out guest buffers; ordinary allocations stay inside one
 * region, {@link #allocAt} may deliberately straddle adjacent regions.
 *
 * <p>The allocator is synchronized, so several driver threads (one per {@link DriverQueue}) may share a guest;
 * the accessors touch only the (fixed) region table and the caller's own buffers.
 */
public final class GuestMemory implements AutoCloseable {
    /** Where one region lives: guest-physical base, size, front-end virtual base. */
    public record RegionSpec(long gpa, long size, long uaddr) {}

    /** A mapped region. {@code mmapOffset} is the offset of the region inside {@code fd}. */
    public static final class Region {
        private final int index;
        private final long gpa, size, uaddr, mmapOffset;
        private final int fd;
        private final Pointer ptr;
        private final ByteBuffer buf;

        Region(int index, long gpa, long size, long uaddr, long mmapOffset, int fd, Pointer ptr) {
            this.index = index;
            this.gpa = gpa;
            this.size = size;
            this.uaddr = uaddr;
            this.mmapOffset = mmapOffset;
            this.fd = fd;
            this.ptr = ptr;
            this.buf = ptr.getByteBuffer(0, size).order(ByteOrder.LITTLE_ENDIAN);
        }

        public int index() { return index; }
        public long gpa() { return gpa; }
        public long size() { return size; }
        public long uaddr() { return uaddr; }
        public long mmapOffset() { return mmapOffset; }
        /** The memfd backing this region (owned by the GuestMemory; do not close). */
        public int fd() { return fd; }
        public long gpaEnd() { return gpa + size; }
        public boolean contains(long a) { return a >= gpa && a - gpa < size; }

        @Override
        public String toString() {
            return String.format("Region[%d gpa=0x%x size=0x%x uaddr=0x%x off=0x%x fd=%d]", index, gpa, size, uaddr, mmapOffset, fd);
        }
    }

    public static final long GIB = 1L << 30, MIB = 1L << 20;
    private static final VarHandle U16 = MethodHandles.byteBufferViewVarHandle(short[].class, ByteOrder.LITTLE_ENDIAN);
    private static final VarHandle U32 = MethodHandles.byteBufferViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

    private final List<Region> regions;
    private final List<Integer> fds;
    /** Free guest ranges (gpa -> length); contiguous free ranges are merged, even across region boundaries. */
    private final TreeMap<Long, Long> free = new TreeMap<>();
    private final Map<Long, Long> allocated = new TreeMap<>();
    private int nextRegion;
    private boolean closed;

    private GuestMemory(List<Region> regions, List<Integer> fds) {
        this.regions = Collections.unmodifiableList(regions);
        this.fds = fds;
        for (Region r : regions) release(r.gpa, r.size);
    }

    /**
     * The default test layout: two regions of {@code sizeEach} bytes at gpa 0 and gpa 1 GiB, with front-end
     * virtual bases that are neither equal to the gpa nor in the same order (region 1 has the lower uaddr).
     */
    public static GuestMemory twoRegions(long sizeEach) throws IOException {
        return create(List.of(
                new RegionSpec(0, sizeEach, 0x7f12_0000_0000L),
                new RegionSpec(GIB, sizeEach, 0x7e80_0000_0000L + 0x20_0000L)), false);
    }

    /** {@code n} regions that are contiguous in guest-physical space (so buffers may straddle two of them). */
    public static GuestMemory adjacentRegions(int n, long sizeEach) throws IOException {
        List<RegionSpec> specs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            specs.add(new RegionSpec(i * sizeEach, sizeEach, 0x7f00_0000_0000L - (i * 0x10_0000_0000L) + i * sizeEach * 3));
        }
        return create(specs, false);
    }

    /**
     * Creates and maps the regions. Sizes and gpas must be page multiples (sizes at most 1 GiB so one ByteBuffer
     * covers a region on Java 17); regions must not overlap in gpa or uaddr. {@code fdPerRegion}: one memfd per region instead of one shared memfd.
     */
    public static GuestMemory create(List<RegionSpec> specs, boolean fdPerRegion) throws IOException {
        if (specs.isEmpty()) throw new IllegalArgumentException("no regions");
        for (RegionSpec s : specs) {
            if (s.size <= 0 || s.size > GIB || (s.size & 4095) != 0 || (s.gpa & 4095) != 0) {
                throw new IllegalArgumentException("region size must be a page multiple <= 1 GiB, gpa page aligned: " + s);
            }
        }
        for (int i = 0; i < specs.size(); i++) {
            for (int j = i + 1; j < specs.size(); j++) {
                RegionSpec a = specs.get(i), b = specs.get(j);
                if (a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size) throw new IllegalArgumentException("gpa overlap " + a + " " + b);
                if (a.uaddr < b.uaddr + b.size && b.uaddr < a.uaddr + a.size) throw new IllegalArgumentException("uaddr overlap " + a + " " + b);
            }
        }
        List<Integer> fds = new ArrayList<>();
        List<Region> regions = new ArrayList<>();
        try {
            int shared = -1;
            if (!fdPerRegion) {
                long total = specs.stream().mapToLong(RegionSpec::size).sum();
                shared = memfd("jvhost-guest-ram", total);
                fds.add(shared);
            }
            long off = 0;
            for (int i = 0; i < specs.size(); i++) {
                RegionSpec s = specs.get(i);
                int fd;
                long mmapOffset;
                if (fdPerRegion) {
                    fd = memfd("jvhost-guest-ram-" + i, s.size);
                    fds.add(fd);
                    mmapOffset = 0;
                } else {
                    fd = shared;
                    mmapOffset = off;
                    off += s.size;
                }
                Pointer p = Libc.mmapOrThrow(s.size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, mmapOffset);
                regions.add(new Region(i, s.gpa, s.size, s.uaddr, mmapOffset, fd, p));
            }
        } catch (IOException | RuntimeException e) {
            for (Region r : regions) Libc.munmap(r.ptr, r.size);
            for (int fd : fds) Libc.close(fd);
            throw e;
        }
        return new GuestMemory(regions, fds);
    }

    private static int memfd(String name, long size) throws IOException {
        int fd = Libc.memfd_create(name, Libc.MFD_CLOEXEC);
        if (fd < 0) throw new IOException("memfd_create failed: errno " + Libc.errno());
        if (Libc.ftruncate(fd, size) != 0) {
            int e = Libc.errno();
            Libc.close(fd);
            throw new IOException("ftruncate(" + size + ") failed: errno " + e);
        }
        return fd;
    }

    public List<Region> regions() {
        return regions;
    }

    public Region region(int i) {
        return regions.get(i);
    }

    /** The region holding {@code gpa}, or null when the address is not guest RAM. */
    public Region regionOf(long gpa) {
        // After munmap the cached ByteBuffers point at nothing: refuse instead of crashing the JVM.
        if (closed) throw new IllegalStateException("guest memory is closed");
        for (Region r : regions) if (r.contains(gpa)) return r;
        return null;
    }

    /** Front-end virtual address of {@code gpa} (what SET_VRING_ADDR carries). */
    public long uaddr(long gpa) {
        Region r = regionOf(gpa);
        if (r == null) throw new IllegalArgumentException(String.format("gpa 0x%x is not guest RAM", gpa));
        return r.uaddr + (gpa - r.gpa);
    }

    // ---------------------------------------------------------------------------------------------- allocator

    /** Allocates {@code len} bytes aligned to {@code align}, cycling through the regions to spread buffers. */
    public synchronized long alloc(long len, int align) {
        for (int k = 0; k < regions.size(); k++) {
            int r = (nextRegion + k) % regions.size();
            long a = tryAlloc(len, align, regions.get(r));
            if (a >= 0) {
                nextRegion = (r + 1) % regions.size();
                return a;
            }
        }
        throw new IllegalStateException("guest memory exhausted allocating " + len + " bytes");
    }

    /** Allocates inside region {@code regionIndex}. */
    public synchronized long alloc(long len, int align, int regionIndex) {
        long a = tryAlloc(len, align, regions.get(regionIndex));
        if (a < 0) throw new IllegalStateException("region " + regionIndex + " exhausted allocating " + len + " bytes");
        return a;
    }

    /**
     * Reserves exactly [gpa, gpa+len), which may straddle adjacent regions. Throws if any byte is already
     * allocated or not guest RAM.
     */
    public synchronized long allocAt(long gpa, long len) {
        if (len <= 0) throw new IllegalArgumentException("len " + len);
        Map.Entry<Long, Long> e = free.floorEntry(gpa);
        if (e == null || e.getKey() + e.getValue() < gpa + len) {
            throw new IllegalStateException(String.format("[0x%x, +0x%x) is not free guest RAM", gpa, len));
        }
        carve(e.getKey(), e.getValue(), gpa, len);
        return gpa;
    }

    /** Returns an allocation made by one of the alloc methods. */
    public synchronized void free(long gpa) {
        Long len = allocated.remove(gpa);
        if (len == null) throw new IllegalStateException(String.format("0x%x was not allocated", gpa));
        release(gpa, len);
    }

    /** Bytes currently allocated (tests use it to prove requests give their buffers back). */
    public synchronized long allocatedBytes() {
        long n = 0;
        for (long l : allocated.values()) n += l;
        return n;
    }

    private long tryAlloc(long len, int align, Region r) {
        if (len <= 0 || align <= 0 || Integer.bitCount(align) != 1) throw new IllegalArgumentException("len " + len + " align " + align);
        Long k = free.floorKey(r.gpa);
        if (k == null || k + free.get(k) <= r.gpa) k = free.ceilingKey(r.gpa);
        for (; k != null && k < r.gpaEnd(); k = free.higherKey(k)) {
            long blockLen = free.get(k);
            long lo = Math.max(k, r.gpa), hi = Math.min(k + blockLen, r.gpaEnd());
            long start = (lo + align - 1) & -(long) align;
            if (start + len <= hi) {
                carve(k, blockLen, start, len);
                return start;
            }
        }
        return -1;
    }

    private void carve(long blockStart, long blockLen, long start, long len) {
        free.remove(blockStart);
        if (start > blockStart) free.put(blockStart, start - blockStart);
        long end = start + len, blockEnd = blockStart + blockLen;
        if (end < blockEnd) free.put(end, blockEnd - end);
        allocated.put(start, len);
    }

    private void release(long gpa, long len) {
        long start = gpa, end = gpa + len;
        Map.Entry<Long, Long> prev = free.floorEntry(start);
        if (prev != null && prev.getKey() + prev.getValue() == start) {
            start = prev.getKey();
            free.remove(prev.getKey());
        }
        Long nextLen = free.get(end);
        if (nextLen != null) {
            free.remove(end);
            end += nextLen;
        }
        free.put(start, end - start);
    }

    // ------------------------------------------------------------------------------------------------ access

    /** Region containing all of [gpa, gpa+len), or null if the range straddles regions or leaves RAM. */
    private Region single(long gpa, long len) {
        Region r = regionOf(gpa);
        return r != null && gpa - r.gpa + len <= r.size ? r : null;
    }

    private Region need(long gpa, long len) {
        Region r = single(gpa, len);
        if (r == null) throw new IllegalArgumentException(String.format("[0x%x, +%d) is not inside one guest RAM region", gpa, len));
        return r;
    }

    /** Copies guest bytes out; the range may straddle adjacent regions. */
    public void read(long gpa, byte[] dst, int off, int len) {
        while (len > 0) {
            Region r = regionOf(gpa);
            if (r == null) throw new IllegalArgumentException(String.format("gpa 0x%x is not guest RAM", gpa));
            int n = (int) Math.min(len, r.gpaEnd() - gpa);
            r.buf.get((int) (gpa - r.gpa), dst, off, n);
            gpa += n;
            off += n;
            len -= n;
        }
    }

    public byte[] read(long gpa, int len) {
        byte[] b = new byte[len];
        read(gpa, b, 0, len);
        return b;
    }

    /** Copies bytes into guest RAM; the range may straddle adjacent regions. */
    public void write(long gpa, byte[] src, int off, int len) {
        while (len > 0) {
            Region r = regionOf(gpa);
            if (r == null) throw new IllegalArgumentException(String.format("gpa 0x%x is not guest RAM", gpa));
            int n = (int) Math.min(len, r.gpaEnd() - gpa);
            r.buf.put((int) (gpa - r.gpa), src, off, n);
            gpa += n;
            off += n;
            len -= n;
        }
    }

    public void write(long gpa, byte[] src) {
        write(gpa, src, 0, src.length);
    }

    public void fill(long gpa, long len, byte value) {
        byte[] chunk = new byte[(int) Math.min(len, 65536)];
        java.util.Arrays.fill(chunk, value);
        while (len > 0) {
            int n = (int) Math.min(len, chunk.length);
            write(gpa, chunk, 0, n);
            gpa += n;
            len -= n;
        }
    }

    public int getU8(long gpa) {
        Region r = need(gpa, 1);
        return r.buf.get((int) (gpa - r.gpa)) & 0xff;
    }

    public void putU8(long gpa, int v) {
        Region r = need(gpa, 1);
        r.buf.put((int) (gpa - r.gpa), (byte) v);
    }

    public int getU16(long gpa) {
        Region r = single(gpa, 2);
        if (r == null) return (int) getPiecewise(gpa, 2);
        return r.buf.getShort((int) (gpa - r.gpa)) & 0xffff;
    }

    public void putU16(long gpa, int v) {
        Region r = single(gpa, 2);
        if (r == null) putPiecewise(gpa, 2, v);
        else r.buf.putShort((int) (gpa - r.gpa), (short) v);
    }

    public long getU32(long gpa) {
        Region r = single(gpa, 4);
        if (r == null) return getPiecewise(gpa, 4);
        return r.buf.getInt((int) (gpa - r.gpa)) & 0xffffffffL;
    }

    public void putU32(long gpa, long v) {
        Region r = single(gpa, 4);
        if (r == null) putPiecewise(gpa, 4, v);
        else r.buf.putInt((int) (gpa - r.gpa), (int) v);
    }

    public long getU64(long gpa) {
        Region r = single(gpa, 8);
        if (r == null) return getPiecewise(gpa, 8);
        return r.buf.getLong((int) (gpa - r.gpa));
    }

    public void putU64(long gpa, long v) {
        Region r = single(gpa, 8);
        if (r == null) putPiecewise(gpa, 8, v);
        else r.buf.putLong((int) (gpa - r.gpa), v);
    }

    /** Load-acquire of a naturally aligned u16 (used->idx written by the back-end's thread). */
    public int getU16Acquire(long gpa) {
        Region r = need(gpa, 2);
        return (short) U16.getAcquire(r.buf, (int) (gpa - r.gpa)) & 0xffff;
    }

    /** Store-release of a naturally aligned u16 (avail->idx: the ring entries must be visible first). */
    public void putU16Release(long gpa, int v) {
        Region r = need(gpa, 2);
        U16.setRelease(r.buf, (int) (gpa - r.gpa), (short) v);
    }

    /** Load-acquire of an aligned u32 (status words the back-end may be writing concurrently). */
    public long getU32Acquire(long gpa) {
        Region r = need(gpa, 4);
        return (int) U32.getAcquire(r.buf, (int) (gpa - r.gpa)) & 0xffffffffL;
    }

    private long getPiecewise(long gpa, int n) {
        byte[] b = read(gpa, n);
        long v = 0;
        for (int i = n - 1; i >= 0; i--) v = (v << 8) | (b[i] & 0xff);
        return v;
    }

    private void putPiecewise(long gpa, int n, long v) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte) (v >>> (8 * i));
        write(gpa, b, 0, n);
    }

    /** A direct view of [gpa, gpa+len) (must lie inside one region); writes go straight to guest RAM. */
    public ByteBuffer slice(long gpa, int len) {
        Region r = need(gpa, len);
        return r.buf.slice((int) (gpa - r.gpa), len).order(ByteOrder.LITTLE_ENDIAN);
    }

    public boolean isClosed() {
        return closed;
    }

    /** Unmaps all regions and closes the memfds. Back-ends keep their own mappings, which stay valid. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        for (Region r : regions) Libc.munmap(r.ptr, r.size);
        for (int fd : fds) Libc.close(fd);
    }

    @Override
    public String toString() {
        return "GuestMemory" + regions;
    }
}
