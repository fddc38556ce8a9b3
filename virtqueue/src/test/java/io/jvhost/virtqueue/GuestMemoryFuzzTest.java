package io.jvhost.virtqueue;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Model-based fuzzing of the memory table: {@link MemoryRegion#map} with fuzzed geometry over real memfds (one of
 * them sparse and larger than a ByteBuffer window), {@link GuestMemory#with}/{@link GuestMemory#without}, and every
 * accessor (bulk, scalar, acquire/release, slices, isMapped, uaddrToGpa) at fuzzed addresses, including accesses
 * through an older snapshot whose regions have been unmapped since.
 *
 * <p>The model is a plain list of {gpa, size, uaddr, offset, memfd}; expected bytes are read through the test's
 * own mapping of each memfd. Oracles: map and with accept exactly the geometry the model accepts; every access
 * succeeds exactly when the model says the range is mapped, and then reads/writes exactly the model's bytes; no
 * exception other than the documented ones escapes.
 */
class GuestMemoryFuzzTest {
    static final long[] FD_SIZES = {64 * 1024, 1 << 20, (1L << 30) + 0x20000, 0};
    static final int MAX_OPS = 64, MAX_REGIONS = 509;
    private static final int[] fds = new int[FD_SIZES.length];
    private static final ByteBuffer[] views = new ByteBuffer[FD_SIZES.length];
    private static final Pointer[] ptrs = new Pointer[FD_SIZES.length];

    @BeforeAll
    static void createMemfds() throws IOException {
        for (int i = 0; i < fds.length; i++) {
            fds[i] = TestGuest.memfd("jvhost-fuzz-mem" + i, FD_SIZES[i]);
            if (FD_SIZES[i] > 0) {
                ptrs[i] = Libc.mmapOrThrow(FD_SIZES[i], Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fds[i], 0);
                views[i] = ptrs[i].getByteBuffer(0, Math.min(FD_SIZES[i], Integer.MAX_VALUE)).order(ByteOrder.LITTLE_ENDIAN);
            }
        }
    }

    @AfterAll
    static void closeMemfds() {
        for (int i = 0; i < fds.length; i++) {
            if (ptrs[i] != null) Libc.munmap(ptrs[i], FD_SIZES[i]);
            Libc.close(fds[i]);
        }
    }

    record Reg(long gpa, long size, long uaddr, long off, int fd, MemoryRegion r) {
        boolean hasGpa(long g) {
            return Long.compareUnsigned(g - gpa, size) < 0;
        }

        int byteAt(long g) {
            return views[fd].get((int) (off + (g - gpa))) & 0xff;
        }

        void putByte(long g, int v) {
            views[fd].put((int) (off + (g - gpa)), (byte) v);
        }
    }

    private final List<Reg> model = new ArrayList<>();
    private final List<MemoryRegion> toClose = new ArrayList<>();
    private GuestMemory mem = GuestMemory.empty();
    /** An older snapshot, kept across removals: its closed regions must fail cleanly. */
    private GuestMemory old = GuestMemory.empty();
    private List<Reg> oldModel = List.of();

    /** What the last input did (for {@link #seedsReachWhatTheyAreFor}). */
    private int regionsAdded, refusals, accesses;

    /** The committed seeds still do what they were written for. */
    @Test
    void seedsReachWhatTheyAreFor() throws Exception {
        run("two-regions");
        check(regionsAdded == 2 && accesses == 6 && refusals == 1, "two-regions: %d regions, %d accesses, %d refusals", regionsAdded, accesses, refusals);
        run("refusals");
        check(regionsAdded == 1 && refusals == 6, "refusals: %d regions, %d refusals", regionsAdded, refusals);
    }

    private void run(String seed) throws Exception {
        try (java.io.InputStream is = getClass().getResourceAsStream("GuestMemoryFuzzTestInputs/memoryTable/seed-" + seed)) {
            check(is != null, "missing seed %s", seed);
            regionsAdded = refusals = accesses = 0;
            memoryTable(is.readAllBytes());
        }
    }

    @FuzzTest(maxDuration = "2m")
    void memoryTable(byte[] data) throws Exception {
        try {
            FuzzInput in = new FuzzInput(data);
            for (int op = 0; op < MAX_OPS && in.more(); op++) step(in);
        } finally {
            for (MemoryRegion r : toClose) r.close();
            toClose.clear();
            model.clear();
            mem = old = GuestMemory.empty();
            oldModel = List.of();
        }
    }

    private void step(FuzzInput in) throws Exception {
        switch (in.u8() % 9) {
            case 0 -> map(in);
            case 1 -> remove(in);
            case 2 -> bulk(in, false);
            case 3 -> bulk(in, true);
            case 4 -> scalar(in);
            case 5 -> slices(in);
            case 6 -> uaddr(in);
            case 7 -> {
                long g = addr(in);
                long len = in.u16();
                check(mem.isMapped(g, len) == mapped(model, g, len), "isMapped(0x%x, %d)", g, len);
            }
            default -> { // read through the older snapshot: closed regions must fail, never crash
                long g = addr(in);
                int len = in.u8() + 1;
                boolean open = mapped(oldModel, g, len) && oldModel.stream().noneMatch(r -> r.r().isClosed() && overlaps(r, g, len));
                try {
                    old.read(g, new byte[len], 0, len);
                    check(open, "read through an old snapshot at 0x%x succeeded on a closed/unmapped range", g);
                } catch (InvalidGuestAddressException e) {
                    refusals++;
                    check(!open, "read through an old snapshot at 0x%x failed on open memory: %s", g, e.getMessage());
                }
            }
        }
    }

    private static boolean overlaps(Reg r, long g, long len) {
        return Long.compareUnsigned(g, r.gpa() + r.size()) < 0 && Long.compareUnsigned(r.gpa(), g + len) < 0;
    }

    /** A fuzzed guest address: near a region's start or end, near 2^64, or raw. */
    private long addr(FuzzInput in) {
        int m = in.u8();
        if (!model.isEmpty() && m % 4 != 3) {
            Reg r = model.get(in.u8() % model.size());
            long delta = (short) in.u16();
            return (m % 4 == 0 ? r.gpa() : r.gpa() + r.size()) + delta;
        }
        return m % 4 == 3 && (m & 4) != 0 ? -(long) in.u16() : in.u64();
    }

    private long geometry(FuzzInput in, int m) {
        return switch (m % 4) {
            case 0 -> (long) in.u16() << 12;
            case 1 -> -((long) in.u16() << 12);
            case 2 -> in.u32();
            default -> in.u64();
        };
    }

    private void map(FuzzInput in) throws Exception {
        int fd = in.u8() % fds.length;
        int m = in.u8();
        long gpa;
        if ((m & 0x40) != 0 && !model.isEmpty()) {
            Reg r = model.get(in.u8() % model.size());
            gpa = r.gpa() + r.size(); // adjacent to an existing region
        } else {
            gpa = geometry(in, m);
        }
        long off = (m & 0x80) != 0 ? in.u32() : ((long) in.u8() << 12);
        long size = (m & 0x20) != 0 ? geometry(in, m >> 2) : FD_SIZES[fd] - off - ((long) in.u8() << 12);
        long uaddr = geometry(in, m >> 4);
        boolean valid = size > 0 && Long.compareUnsigned(gpa + size, gpa) > 0 && Long.compareUnsigned(uaddr + size, uaddr) > 0
                && off >= 0 && off + size >= 0 && off + size <= FD_SIZES[fd];
        MemoryRegion r;
        try {
            r = MemoryRegion.map(fds[fd], gpa, size, uaddr, off);
        } catch (IOException e) {
            refusals++;
            check(!valid, "map refused valid geometry gpa=0x%x size=0x%x uaddr=0x%x off=0x%x: %s", gpa, size, uaddr, off, e.getMessage());
            return;
        }
        toClose.add(r);
        check(valid, "map accepted gpa=0x%x size=0x%x uaddr=0x%x off=0x%x of a %d-byte fd", gpa, size, uaddr, off, FD_SIZES[fd]);
        boolean fits = model.size() < MAX_REGIONS;
        for (Reg e : model) {
            if (ovl(gpa, size, e.gpa(), e.size()) || ovl(uaddr, size, e.uaddr(), e.size())) fits = false;
        }
        try {
            mem = mem.with(r);
            check(fits, "with() accepted an overlapping region gpa=0x%x size=0x%x uaddr=0x%x", gpa, size, uaddr);
            model.add(new Reg(gpa, size, uaddr, off, fd, r));
            regionsAdded++;
        } catch (InvalidGuestAddressException e) {
            refusals++;
            check(!fits, "with() refused gpa=0x%x size=0x%x uaddr=0x%x: %s", gpa, size, uaddr, e.getMessage());
            r.close();
        }
    }

    private static boolean ovl(long a, long alen, long b, long blen) {
        return Long.compareUnsigned(a, b + blen) < 0 && Long.compareUnsigned(b, a + alen) < 0;
    }

    private void remove(FuzzInput in) {
        old = mem;
        oldModel = List.copyOf(model);
        if (!model.isEmpty() && in.u8() % 4 != 0) {
            Reg r = model.remove(in.u8() % model.size());
            mem = mem.without(r.gpa(), r.size(), r.uaddr());
            r.r().close(); // `old` still lists it: its accessors must now refuse it
            return;
        }
        long gpa = in.u64(), size = in.u64(), uaddr = in.u64();
        boolean present = model.stream().anyMatch(r -> r.gpa() == gpa && r.size() == size && r.uaddr() == uaddr);
        try {
            mem = mem.without(gpa, size, uaddr);
            check(present, "without() removed a region that is not in the table");
            model.removeIf(r -> r.gpa() == gpa && r.size() == size && r.uaddr() == uaddr);
        } catch (IllegalArgumentException e) {
            refusals++;
            check(!present, "without() did not find a region of the table");
        }
    }

    private static boolean mapped(List<Reg> m, long g, long len) {
        if (len < 0) return false;
        long cur = g, rem = len;
        while (rem > 0) {
            Reg hit = null;
            for (Reg r : m) if (r.hasGpa(cur)) hit = r;
            if (hit == null) return false;
            long avail = hit.gpa() + hit.size() - cur;
            if (Long.compareUnsigned(rem, avail) <= 0) return true;
            rem -= avail;
            cur += avail;
        }
        return true;
    }

    private Reg regionOf(long g) {
        for (Reg r : model) if (r.hasGpa(g)) return r;
        throw new AssertionError("model: 0x" + Long.toHexString(g) + " unmapped");
    }

    private void bulk(FuzzInput in, boolean write) {
        long g = addr(in);
        int len = in.u16() % 8193;
        boolean ok = mapped(model, g, len);
        byte[] buf = write ? in.bytes(len) : new byte[len];
        if (write) buf = java.util.Arrays.copyOf(buf, len);
        try {
            if (write) mem.write(g, buf, 0, len);
            else mem.read(g, buf, 0, len);
        } catch (InvalidGuestAddressException e) {
            check(!ok, "%s of %d bytes at 0x%x refused on mapped memory: %s", write ? "write" : "read", len, g, e.getMessage());
            return;
        }
        accesses++;
        check(ok, "%s of %d bytes at 0x%x succeeded on unmapped memory", write ? "write" : "read", len, g);
        byte[] expect = write ? afterWrite(g, buf) : buf;
        for (int k = 0; k < len; k++) {
            long a = g + k;
            int kk = k;
            check(regionOf(a).byteAt(a) == (expect[k] & 0xff), "byte %d of the %s at 0x%x differs from the memfd", kk, write ? "write" : "read", g);
        }
    }

    /**
     * What each written guest byte holds after a write of {@code buf} at g: regions may alias (two gpa ranges
     * backed by the same bytes of one memfd, as a front-end may legally map them), and then the later byte of the
     * write wins.
     */
    private byte[] afterWrite(long g, byte[] buf) {
        java.util.Map<Long, Integer> last = new java.util.HashMap<>();
        for (int k = 0; k < buf.length; k++) last.put(backing(g + k), k);
        byte[] out = new byte[buf.length];
        for (int k = 0; k < buf.length; k++) out[k] = buf[last.get(backing(g + k))];
        return out;
    }

    /** The memfd byte behind guest address a: fd index and offset in one key. */
    private long backing(long a) {
        Reg r = regionOf(a);
        return (long) r.fd() << 40 | (r.off() + (a - r.gpa()));
    }

    private void scalar(FuzzInput in) {
        int m = in.u8();
        int n = 1 << (m % 4);
        long g = addr(in);
        long v = in.u64();
        boolean ok = mapped(model, g, n);
        long got = 0;
        boolean write = (m & 4) != 0;
        try {
            if (write) {
                switch (n) {
                    case 1 -> mem.writeU8(g, (int) v);
                    case 2 -> {
                        if ((m & 8) != 0) mem.writeU16Release(g, (int) v);
                        else mem.writeU16(g, (int) v);
                    }
                    case 4 -> mem.writeU32(g, v);
                    default -> mem.writeU64(g, v);
                }
            } else {
                got = switch (n) {
                    case 1 -> mem.readU8(g);
                    case 2 -> (m & 8) != 0 ? mem.readU16Acquire(g) : mem.readU16(g);
                    case 4 -> mem.readU32(g);
                    default -> mem.readU64(g);
                };
            }
        } catch (InvalidGuestAddressException e) {
            check(!ok, "%d-byte access at 0x%x refused on mapped memory: %s", n, g, e.getMessage());
            return;
        }
        accesses++;
        check(ok, "%d-byte access at 0x%x succeeded on unmapped memory", n, g);
        long expect = 0;
        for (int k = 0; k < n; k++) expect |= (long) regionOf(g + k).byteAt(g + k) << (8 * k);
        long mask = n == 8 ? -1L : (1L << (8 * n)) - 1;
        byte[] le = new byte[n];
        for (int k = 0; k < n; k++) le[k] = (byte) (v >>> (8 * k));
        long wrote = 0;
        byte[] after = write ? afterWrite(g, le) : le;
        for (int k = 0; k < n; k++) wrote |= (after[k] & 0xffL) << (8 * k);
        if (write) check(expect == wrote, "%d-byte write at 0x%x: memfd holds 0x%x, wrote 0x%x", n, g, expect, v & mask);
        else check(expect == got, "%d-byte read at 0x%x: got 0x%x, memfd holds 0x%x", n, g, got, expect);
    }

    private void slices(FuzzInput in) {
        long g = addr(in);
        long len = in.u8() % 2 == 0 ? in.u16() : in.u32();
        boolean ok = mapped(model, g, len);
        List<ByteBuffer> out = new ArrayList<>();
        try {
            mem.slices(g, len, out::add);
        } catch (InvalidGuestAddressException e) {
            check(!ok, "slices(0x%x, %d) refused on mapped memory", g, len);
            check(out.isEmpty(), "slices(0x%x, %d) appended views before failing", g, len);
            return;
        }
        accesses++;
        check(ok, "slices(0x%x, %d) succeeded on unmapped memory", g, len);
        long total = 0, a = g;
        for (ByteBuffer b : out) {
            check(b.remaining() > 0, "empty slice");
            // Spot-check the first and last byte of each view against the memfd (a full compare of up to 4 GiB
            // would dominate the run).
            check((b.get(b.position()) & 0xff) == regionOf(a).byteAt(a), "slice at 0x%x starts with the wrong byte", a);
            long last = a + b.remaining() - 1;
            check((b.get(b.limit() - 1) & 0xff) == regionOf(last).byteAt(last), "slice at 0x%x ends with the wrong byte", a);
            total += b.remaining();
            a += b.remaining();
        }
        check(total == len, "slices cover %d of %d bytes", total, len);
    }

    private void uaddr(FuzzInput in) {
        long u;
        if (!model.isEmpty() && in.u8() % 2 == 0) {
            Reg r = model.get(in.u8() % model.size());
            u = r.uaddr() + (short) in.u16() + (in.u8() % 2 == 0 ? 0 : r.size());
        } else {
            u = in.u64();
        }
        long len = in.u8() % 2 == 0 ? in.u16() : in.u64();
        Long expect = null;
        if (len >= 0) {
            for (Reg r : model) {
                long o = u - r.uaddr();
                if (Long.compareUnsigned(o, r.size()) < 0 && len <= r.size() - o) expect = r.gpa() + o;
            }
        }
        try {
            long got = mem.uaddrToGpa(u, len);
            check(expect != null && expect == got, "uaddrToGpa(0x%x, %d) = 0x%x, model %s", u, len, got, expect);
        } catch (InvalidGuestAddressException e) {
            check(expect == null, "uaddrToGpa(0x%x, %d) refused, model 0x%x", u, len, expect);
        }
    }

    static void check(boolean ok, String fmt, Object... args) {
        if (!ok) throw new AssertionError(String.format(fmt, args));
    }
}
