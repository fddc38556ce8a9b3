package io.jvhost.vhostuser;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.jvhost.iothread.sys.Libc;
import io.jvhost.virtqueue.GuestMemory;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.newsclub.net.unix.FileDescriptorCast;

import java.io.FileDescriptor;
import java.io.IOException;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * Model-based fuzzing of memory-table handling through the vhost-user socket of a real export: SET_MEM_TABLE,
 * ADD_MEM_REG and REM_MEM_REG with fuzzed region geometry (gpa, size, uaddr and mmap offset near 0, near 2^64,
 * adjacent to or overlapping existing regions, or raw), fd counts that do or do not match, and fds of several
 * kinds (memfds of 2 MiB, 64 KiB, 0 bytes and a sparse 1 GiB + 64 KiB one, a regular file, an eventfd), while
 * vring 0 is configured, started, kicked and stopped in between, so tables change under a running queue.
 *
 * <p>Every message asks for a REPLY_ACK. Oracles: a message the model says is invalid (bad geometry, an fd that is
 * not guest RAM or is too short, overlap, slot limit, wrong fd count, unknown region) is refused and changes
 * nothing; a valid one is acknowledged (unless a started ring's addresses stop translating, which may fail the
 * restart and thus the ack) and applied; at the end of the session the back-end maps exactly the model's regions
 * (each fd from offset 0 to mmap offset + size), and after the session nothing; no hang, no logged bug, and the
 * next front-end is served.
 *
 * <p>Input format ({@link FuzzSupport.In}): ops of u8 opcode (see {@link #step}) and their fields.
 */
class MemoryTableFuzzTest {
    static final int MAX_OPS = 32;
    static final String MARK = MemoryTableTest.MEMFD + "-mt";
    static final long[] SIZES = {2 << 20, 64 << 10, 0, (1L << 30) + 0x10000, 1 << 20, 0}; // memfds, file, eventfd
    static final int FILE = 4, EVENTFD = 5, KINDS = 6;
    static final long UADDR = 0x7f00_0000_0000L;

    private static FuzzSupport.Export ex;
    private static FuzzSupport.LogOracle oracle;
    private static FuzzSupport.Wire next;
    private static RandomAccessFile file;
    private static String filePath;
    private static long baselineFds;

    @BeforeAll
    static void startExport() throws Exception {
        ex = new FuzzSupport.Export("fuzz-mt", 1, 512, 1L << 30);
        oracle = new FuzzSupport.LogOracle();
        filePath = ex.dir.resolve("ram.img").toString();
        file = new RandomAccessFile(filePath, "rw");
        next = new FuzzSupport.Wire(ex.socket);
        next.getFeatures();
        baselineFds = FuzzSupport.openFds();
    }

    @AfterAll
    static void stopExport() throws Exception {
        try {
            next.close();
            file.close();
            ex.close();
            oracle.check();
        } finally {
            oracle.close();
        }
    }

    /** A region as the model knows it. */
    record Reg(long gpa, long size, long uaddr, long off, int kind) {
        long mapLen() {
            return (off + size + 4095) & ~4095L;
        }
    }

    private final List<Reg> model = new ArrayList<>();
    private final FileDescriptor[] fds = new FileDescriptor[KINDS];
    private final List<Integer> own = new ArrayList<>();
    private FuzzSupport.Wire w;
    private boolean ringConfigured;
    private int acks, nacks; // for the seed check

    @FuzzTest(maxDuration = "2m")
    void memoryTable(byte[] data) throws Exception {
        FuzzSupport.In in = new FuzzSupport.In(data);
        w = next;
        next = null;
        model.clear();
        ringConfigured = false;
        acks = nacks = 0;
        try {
            openFds();
            negotiate();
            try {
                for (int op = 0; op < MAX_OPS && in.more(); op++) step(in);
            } catch (IOException e) {
                throw new AssertionError("the back-end dropped a front-end that only sent acked messages: " + e.getMessage());
            }
            long expect = 0;
            for (Reg r : model) expect += r.mapLen();
            long mapped = FuzzSupport.mappedBytes(MARK, filePath);
            if (mapped != expect) throw new AssertionError("the back-end maps " + mapped + " bytes, the table has " + model);
            w.finish();
        } finally {
            w.close();
            for (int fd : own) Libc.close(fd);
            own.clear();
        }
        next = new FuzzSupport.Wire(ex.socket);
        next.getFeatures();
        oracle.check();
        long mapped = FuzzSupport.mappedBytes(MARK, filePath);
        if (mapped != 0) throw new AssertionError(mapped + " bytes of guest memory still mapped after the session ended");
        long open = FuzzSupport.openFds();
        if (open > baselineFds + 24) {
            throw new AssertionError("open fds grew from " + baselineFds + " to " + open + ": " + FuzzSupport.fdHistogram());
        }
    }

    private void openFds() throws IOException {
        fds[0] = memfd(SIZES[0]);
        fds[1] = memfd(SIZES[1]);
        fds[2] = memfd(SIZES[2]);
        fds[3] = memfd(SIZES[3]);
        file.setLength(0);
        file.setLength(SIZES[FILE]);
        fds[FILE] = file.getFD();
        int e = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        own.add(e);
        fds[EVENTFD] = FileDescriptorCast.unsafeUsing(e).getFileDescriptor();
    }

    private FileDescriptor memfd(long size) throws IOException {
        int fd = Libc.memfd_create(MARK, Libc.MFD_CLOEXEC);
        if (fd < 0) throw new IOException("memfd_create: errno " + Libc.errno());
        own.add(fd);
        if (Libc.ftruncate(fd, size) != 0) throw new IOException("ftruncate: errno " + Libc.errno());
        return FileDescriptorCast.unsafeUsing(fd).getFileDescriptor();
    }

    private void negotiate() throws IOException {
        w.replies.clear();
        long pf = Proto.PF_REPLY_ACK | Proto.PF_CONFIGURE_MEM_SLOTS | Proto.PF_MQ;
        expectAck("SET_PROTOCOL_FEATURES", w.request(Proto.SET_PROTOCOL_FEATURES, Proto.FLAG_NEED_REPLY, FuzzSupport.le(8).putLong(pf).array()), true);
        expectAck("SET_OWNER", w.request(Proto.SET_OWNER, Proto.FLAG_NEED_REPLY, new byte[0]), true);
        long f = Proto.F_VERSION_1 | Proto.F_PROTOCOL_FEATURES | Proto.F_EVENT_IDX;
        expectAck("SET_FEATURES", w.request(Proto.SET_FEATURES, Proto.FLAG_NEED_REPLY, FuzzSupport.le(8).putLong(f).array()), true);
    }

    private long send(int req, byte[] payload, FileDescriptor... f) throws IOException {
        return w.request(req, Proto.FLAG_NEED_REPLY, payload, f);
    }

    /** valid: the model's verdict. A valid change may still be nacked once a ring was configured (see class doc). */
    private void expectAck(String what, long ack, boolean valid) {
        note(ack);
        if (!valid && ack == 0) throw new AssertionError(what + " was accepted, the model says it is invalid; table " + model);
        if (valid && ack != 0 && !ringConfigured) throw new AssertionError(what + " was refused, the model says it is valid; table " + model);
    }

    private void step(FuzzSupport.In in) throws IOException {
        switch (in.u8() % 7) {
            case 0 -> setMemTable(in);
            case 1 -> addMemReg(in);
            case 2 -> remMemReg(in);
            case 3 -> ring(in);
            case 4 -> { // stop the ring (QEMU's GET_VRING_BASE); it restarts with the next SET_VRING_KICK
                w.request(Proto.GET_VRING_BASE, 0, FuzzSupport.le(8).putInt(0).putInt(0).array());
            }
            case 5 -> { // a kick for a running ring (its memory is zeroes: nothing is available)
                int k = own.get(own.size() - 1);
                Libc.eventfd_write(k, 1);
            }
            default -> {
                long slots = w.request(Proto.GET_MAX_MEM_SLOTS, 0, new byte[0]);
                if (slots != GuestMemory.maxRegions()) throw new AssertionError("GET_MAX_MEM_SLOTS " + slots);
            }
        }
    }

    /** A region from the input: its fd kind and geometry (see {@link #region}). */
    private Reg region(FuzzSupport.In in) {
        int kind = in.u8() % KINDS;
        int m = in.u8();
        long gpa = switch (m % 4) {
            case 0 -> (long) in.u16() << 12;
            case 1 -> -((long) in.u16() << 12);
            case 2 -> model.isEmpty() ? in.u64() : end(model.get(in.u8() % model.size()));
            default -> in.u64();
        };
        long off = (m >> 2) % 2 == 0 ? (long) in.u8() << 12 : in.u32();
        long size = switch ((m >> 3) % 4) {
            case 0 -> SIZES[kind] - off - ((long) in.u8() << 12);
            case 1 -> (long) in.u16() << 12;
            case 2 -> in.u32();
            default -> in.u64();
        };
        long uaddr = switch ((m >> 5) % 4) {
            case 0 -> UADDR + ((long) in.u16() << 24);
            case 1 -> model.isEmpty() ? UADDR : model.get(in.u8() % model.size()).uaddr();
            case 2 -> -((long) in.u16() << 12);
            default -> in.u64();
        };
        return new Reg(gpa, size, uaddr, off, kind);
    }

    private static long end(Reg r) {
        return r.gpa() + r.size();
    }

    /** MemoryRegion.map's rules: guest RAM fd long enough, non-empty, no 64-bit wrap (end 2^64 included). */
    private static boolean valid(Reg r) {
        return r.kind() != EVENTFD && r.size() > 0 && Long.compareUnsigned(r.gpa() + r.size(), r.gpa()) > 0
                && Long.compareUnsigned(r.uaddr() + r.size(), r.uaddr()) > 0 && r.off() >= 0 && r.off() + r.size() >= 0
                && r.off() + r.size() <= SIZES[r.kind()];
    }

    private static boolean overlap(Reg a, Reg b) {
        return ovl(a.gpa(), a.size(), b.gpa(), b.size()) || ovl(a.uaddr(), a.size(), b.uaddr(), b.size());
    }

    private static boolean ovl(long a, long alen, long b, long blen) {
        return Long.compareUnsigned(a, b + blen) < 0 && Long.compareUnsigned(b, a + alen) < 0;
    }

    private static byte[] geometry(ByteBuffer b, Reg r) {
        b.putLong(r.gpa()).putLong(r.size()).putLong(r.uaddr()).putLong(r.off());
        return b.array();
    }

    /** fds for the regions, with u8-chosen mismatch: one missing, as many as regions, or one extra. */
    private FileDescriptor[] fdsFor(List<Reg> rs, int delta) {
        int n = Math.max(0, rs.size() + delta);
        FileDescriptor[] f = new FileDescriptor[n];
        for (int i = 0; i < n; i++) f[i] = fds[i < rs.size() ? rs.get(i).kind() : EVENTFD];
        return f;
    }

    private void setMemTable(FuzzSupport.In in) throws IOException {
        int n = in.u8() % 10;
        int delta = in.u8() % 3 - 1;
        List<Reg> rs = new ArrayList<>();
        for (int i = 0; i < n; i++) rs.add(region(in));
        ByteBuffer b = FuzzSupport.le(8 + 32 * n).putInt(n).putInt(0);
        for (Reg r : rs) geometry(b, r);
        FileDescriptor[] f = fdsFor(rs, delta);
        boolean ok = n >= 1 && n <= 8 && f.length == n && f.length <= Proto.MAX_FDS;
        for (int i = 0; i < rs.size() && ok; i++) {
            ok = valid(rs.get(i));
            for (int j = 0; j < i && ok; j++) ok = !overlap(rs.get(i), rs.get(j));
        }
        expectAck("SET_MEM_TABLE " + rs, send(Proto.SET_MEM_TABLE, b.array(), f), ok);
        if (ok) {
            model.clear();
            model.addAll(rs);
        }
    }

    private void addMemReg(FuzzSupport.In in) throws IOException {
        int delta = in.u8() % 3 - 1;
        Reg r = region(in);
        FileDescriptor[] f = fdsFor(List.of(r), delta);
        boolean ok = f.length == 1 && valid(r) && model.size() < GuestMemory.maxRegions();
        for (Reg e : model) ok &= !overlap(r, e);
        expectAck("ADD_MEM_REG " + r, send(Proto.ADD_MEM_REG, geometry(FuzzSupport.le(40).putLong(0), r), f), ok);
        if (ok) model.add(r);
    }

    private void remMemReg(FuzzSupport.In in) throws IOException {
        Reg r;
        if (!model.isEmpty() && in.u8() % 4 != 0) {
            Reg e = model.get(in.u8() % model.size());
            r = new Reg(e.gpa(), e.size(), e.uaddr(), in.u32(), e.kind()); // the offset is not compared
        } else {
            r = region(in);
        }
        Reg hit = null;
        for (Reg e : model) if (e.gpa() == r.gpa() && e.size() == r.size() && e.uaddr() == r.uaddr()) hit = e;
        // QEMU sends the region's fd along; it is not needed and must just be closed.
        expectAck("REM_MEM_REG " + r, send(Proto.REM_MEM_REG, geometry(FuzzSupport.le(40).putLong(0), r), fds[r.kind()]), hit != null);
        if (hit != null) model.remove(hit);
    }

    /** Configures vring 0 (64 entries) inside a region of the table (or anywhere) and starts it. */
    private void ring(FuzzSupport.In in) throws IOException {
        long desc;
        if (!model.isEmpty() && in.u8() % 4 != 0) {
            Reg r = model.get(in.u8() % model.size());
            desc = r.uaddr() + ((long) in.u16() << 4);
        } else {
            desc = in.u64() & ~15L;
        }
        ringConfigured = true;
        int kick = own.get(own.size() - 1);
        FileDescriptor k = FileDescriptorCast.unsafeUsing(kick).getFileDescriptor();
        // Not judged (the start may fail on addresses outside the table), only counted for the seed check.
        note(send(Proto.SET_VRING_NUM, FuzzSupport.le(8).putInt(0).putInt(64).array()));
        note(send(Proto.SET_VRING_BASE, FuzzSupport.le(8).putInt(0).putInt(0).array()));
        // desc 1 KiB, avail 134 B, used 518 B: packed one after the other at 16/2/4-byte alignment.
        note(send(Proto.SET_VRING_ADDR, FuzzSupport.le(40).putInt(0).putInt(0).putLong(desc).putLong(desc + 1024 + 256)
                .putLong(desc + 1024).putLong(0).array()));
        note(send(Proto.SET_VRING_CALL, FuzzSupport.le(8).putLong(0).array(), k));
        note(send(Proto.SET_VRING_KICK, FuzzSupport.le(8).putLong(0).array(), k));
        note(send(Proto.SET_VRING_ENABLE, FuzzSupport.le(8).putInt(0).putInt(1).array()));
    }

    private void note(long ack) {
        if (ack == 0) acks++;
        else nacks++;
    }

    /** The committed seeds still do what they were written for. */
    @Test
    void seedsReachWhatTheyAreFor() throws Exception {
        for (String[] e : new String[][] {{"tables-under-a-running-ring", "11", "0"}, {"refusals", "0", "11"}}) {
            byte[] seed;
            try (InputStream is = getClass().getResourceAsStream("MemoryTableFuzzTestInputs/memoryTable/seed-" + e[0])) {
                if (is == null) throw new AssertionError("missing seed " + e[0]);
                seed = is.readAllBytes();
            }
            memoryTable(seed);
            // Counts exclude the three negotiation acks.
            if (acks - 3 != Integer.parseInt(e[1]) || nacks != Integer.parseInt(e[2])) {
                throw new AssertionError(e[0] + ": " + (acks - 3) + " acks, " + nacks + " refusals");
            }
        }
    }
}
