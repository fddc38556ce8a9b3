package io.jvhost.vhostuser;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.jvhost.iothread.AioContext;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeoutException;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.VRING_DESC_F_INDIRECT;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.VRING_DESC_F_NEXT;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.VRING_DESC_F_WRITE;

/**
 * Coverage-guided fuzzing of the virtio-blk request parser ({@link BlkQueue}) through a running queue: the
 * fuzzer builds up to eight descriptor chains per input (direct or indirect, any segment lengths and order, any
 * header: type, sector, discard/write-zeroes ranges and flags) in real guest memory, publishes them at once and
 * kicks. The back-end is a real export on a null-co node (reads zeroes), with logical block size 512 or 4096.
 *
 * <p>Oracles: a chain that breaks the ring rules (empty or unmapped buffer, readable after writable, more
 * segments than the device takes) breaks the ring, signals its err eventfd, and leaves the other queue serving;
 * every request before it, and every request of a well-formed batch, gets a used element within 10 s whose id is
 * its head and whose length is exactly what the device wrote; the status byte is OK exactly when the request is
 * valid (type, header length, block alignment, range, discard/write-zeroes descriptor) and IOERR/UNSUPP
 * otherwise; device-readable buffers are never written; device-writable bytes are written only where the request
 * says (read data, the id, the status); nothing is logged as a bug.
 *
 * <p>Input format ({@link FuzzSupport.In}): u8 export (lbs 512 / 4096), u8 request count, then per request
 * u8 mode (bit 0 indirect, bit 1 free-form segments, bit 2 up to 256 segments), u8 segment count, u8 readable
 * count, u8 type selector (+ u32 raw type), u32 ioprio, u8 sector mode + value, u8 range mode + range fields
 * (discard/write zeroes), then per segment u16 length (+ u8 flags in free-form mode).
 */
class BlkRequestFuzzTest {
    static final long CAPACITY = 64L << 20;
    static final int QSIZE = 256, MAX_REQUESTS = 8, DATA = 1 << 20;
    static final long UNMAPPED = 0x5000_0000_0000L;
    static final byte UNWRITTEN = (byte) 0xee, FILL = 0x5a;
    static final int[] TYPES = {VirtioBlk.T_IN, VirtioBlk.T_OUT, VirtioBlk.T_FLUSH, VirtioBlk.T_GET_ID, VirtioBlk.T_DISCARD,
        VirtioBlk.T_WRITE_ZEROES, VirtioBlk.T_OUT_FUA, 10 /* GET_LIFETIME */, 14 /* SECURE_ERASE */};

    /** One export with its guest and front-end. */
    private static final class Target implements AutoCloseable {
        final FuzzSupport.Export ex;
        final GuestMemory mem;
        final long data; // DATA bytes of guest RAM for buffers and indirect tables, in region 0
        VhostUserFrontend fe;
        FuzzSupport.Watch[] err = new FuzzSupport.Watch[2];

        Target(int lbs) throws Exception {
            ex = new FuzzSupport.Export("fuzz-blk-" + lbs, 2, lbs, CAPACITY);
            mem = GuestMemory.twoRegions(4L << 20);
            data = mem.alloc(DATA, 4096, 0);
            connect();
        }

        /** A fresh front-end (the export serves one at a time), queues started, err eventfds of our own. */
        void connect() throws Exception {
            if (fe != null) fe.close();
            for (FuzzSupport.Watch w : err) if (w != null) w.close();
            fe = VhostUserFrontend.connect(ex.socket, mem);
            fe.handshake(new VhostUserFrontend.Options().numQueues(2).queueSize(QSIZE));
            for (int q = 0; q < 2; q++) {
                err[q] = new FuzzSupport.Watch(watchLoop);
                fe.setVringErr(q, err[q].efd.fd());
            }
        }

        @Override
        public void close() {
            fe.close();
            for (FuzzSupport.Watch w : err) w.close();
            ex.close();
            mem.close();
        }
    }

    private static AioContext watchLoop;
    private static FuzzSupport.LogOracle oracle;
    private static Target[] targets;

    @BeforeAll
    static void start() throws Exception {
        oracle = new FuzzSupport.LogOracle();
        watchLoop = AioContext.newMainLoop("fuzz-blk-watch");
        targets = new Target[] {new Target(512), new Target(4096)};
    }

    @AfterAll
    static void stop() {
        try {
            for (Target t : targets) t.close();
            watchLoop.close();
            oracle.check();
        } finally {
            oracle.close();
        }
    }

    /** One chain as built and what the back-end must do with it. */
    private static final class Req {
        int head = -1;
        long[] addr;
        int[] len;
        boolean[] writable;
        boolean indirect;
        boolean ringValid = true;
        byte[] readable; // the bytes of the readable segments, concatenated
        long writableBytes;
        long statusGpa = -1;
        int[] descs;
    }

    private int breaks; // ring breaks seen by this input (seed check)
    private int completions;

    @FuzzTest(maxDuration = "2m")
    void requests(byte[] input) throws Exception {
        FuzzSupport.In in = new FuzzSupport.In(input);
        Target t = targets[in.u8() % targets.length];
        DriverQueue q = t.fe.queue(0);
        int n = 1 + in.u8() % MAX_REQUESTS;
        List<Req> reqs = new ArrayList<>();
        long cursor = t.data;
        int freeDescs = q.freeDescriptors();
        for (int i = 0; i < n && in.more(); i++) {
            Req r = build(in, t.ex.capacity, cursor, t.data + DATA);
            if (r == null) break;
            int need = r.indirect ? 1 : r.addr.length;
            if (need > freeDescs) break; // the driver cannot place it: stop here
            freeDescs -= need;
            cursor = place(t, q, r, cursor);
            reqs.add(r);
        }
        if (reqs.isEmpty()) return;
        q.setAvailIdx(q.availIdx());
        q.notifyDevice();

        int expect = 0;
        while (expect < reqs.size() && reqs.get(expect).ringValid) expect++;
        List<DriverQueue.UsedElem> used;
        try {
            used = q.awaitUsed(expect, FuzzSupport.T);
        } catch (TimeoutException e) {
            throw new AssertionError("hang: " + e.getMessage());
        }
        if (used.size() != expect) throw new AssertionError(used.size() + " used elements, expected " + expect);
        // Completions come in any order (a refused request completes at once, I/O later): match by head.
        Req[] byHead = new Req[QSIZE];
        for (int i = 0; i < expect; i++) byHead[reqs.get(i).head] = reqs.get(i);
        for (DriverQueue.UsedElem u : used) {
            Req r = u.id() >= 0 && u.id() < QSIZE ? byHead[u.id()] : null;
            if (r == null) throw new AssertionError("used element for head " + u.id() + ", which is not in flight");
            byHead[u.id()] = null; // a second element for the same head fails above
            check(t, r, u);
        }
        completions += expect;
        for (Req r : reqs) if (r.descs != null) q.releaseDescriptors(r.descs);

        if (expect < reqs.size()) {
            // A malformed chain: the queue is broken (err eventfd), the other queue still serves, and a new
            // front-end gets a working device again.
            if (!t.err[0].await(FuzzSupport.T)) throw new AssertionError("ring not marked broken by " + describe(reqs.get(expect)));
            breaks++;
            DriverQueue other = t.fe.queue(1);
            BlkRequest f = other.await(other.submit(BlkRequest.flush()), FuzzSupport.T);
            if (f.status() != VirtioBlk.S_OK) throw new AssertionError("the other queue failed a flush after queue 0 broke");
            t.connect();
        }
        oracle.check();
    }

    /** Reads one request from the input; its segments are laid out from {@code cursor} on. */
    private static Req build(FuzzSupport.In in, long capacity, long cursor, long end) {
        int mode = in.u8();
        Req r = new Req();
        r.indirect = (mode & 1) != 0;
        boolean free = (mode & 2) != 0;
        int nseg = 1 + ((mode & 4) != 0 ? in.u8() : in.u8() % 6);
        int nread = in.u8() % (nseg + 1);
        int typeSel = in.u8();
        int type = typeSel % (TYPES.length + 1) == TYPES.length ? (int) in.u32() : TYPES[typeSel % (TYPES.length + 1)];
        long ioprio = in.u32();
        long sector = sectorOf(in, capacity);
        int rangeMode = in.u8();
        long rangeSector = sectorOf(in, capacity);
        long rangeNum = (rangeMode & 1) != 0 ? in.u32() : in.u16() % 64;
        long rangeFlags = (rangeMode & 2) != 0 ? in.u32() : in.u8() % 2;
        ByteBuffer hdr = ByteBuffer.allocate(32).order(ByteOrder.LITTLE_ENDIAN);
        hdr.putInt(type).putInt((int) ioprio).putLong(sector).putLong(rangeSector).putInt((int) rangeNum).putInt((int) rangeFlags);
        byte[] head32 = hdr.array();

        r.addr = new long[nseg];
        r.len = new int[nseg];
        r.writable = new boolean[nseg];
        long readableLen = 0;
        for (int i = 0; i < nseg; i++) {
            int len = in.u16();
            boolean w = i >= nread;
            boolean unmapped = false;
            if (free) {
                int f = in.u8();
                w = (f & 1) != 0;
                unmapped = (f & 2) != 0;
                if ((f & 4) != 0) len = 0;
            } else {
                len = Math.max(1, len);
            }
            r.len[i] = len;
            r.writable[i] = w;
            r.addr[i] = unmapped ? UNMAPPED : 0; // placed later
            if (!w) readableLen += len;
            else r.writableBytes += len;
        }
        // Ring rules, as SplitRing enforces them.
        boolean sawW = false;
        for (int i = 0; i < nseg; i++) {
            if (r.len[i] == 0 || r.addr[i] == UNMAPPED) r.ringValid = false;
            if (!r.writable[i] && sawW) r.ringValid = false;
            sawW |= r.writable[i];
        }
        if (nseg > BlkQueue.MAX_CHAIN) r.ringValid = false;
        // Readable bytes: the 16-byte header, then a discard/write-zeroes range, then a fill pattern.
        r.readable = new byte[(int) readableLen];
        Arrays.fill(r.readable, FILL);
        System.arraycopy(head32, 0, r.readable, 0, (int) Math.min(32, readableLen));
        long total = readableLen + r.writableBytes + 64L * nseg + (r.indirect ? 16L * nseg + 16 : 0);
        if (cursor + total > end) return null; // no room left in the data area: the input ends here
        return r;
    }

    private static long sectorOf(FuzzSupport.In in, long capacity) {
        int m = in.u8();
        return switch (m % 4) {
            case 0 -> in.u16();
            case 1 -> (capacity >> 9) - in.u16() % 64;      // around the end of the device
            case 2 -> in.u64();                            // anything, overflowing sector << 9 included
            default -> (long) in.u8() << 3;               // 4 KiB aligned
        };
    }

    /** Writes the chain into guest memory and the avail ring (unpublished); returns the next free data address. */
    private static long place(Target t, DriverQueue q, Req r, long cursor) {
        GuestMemory mem = t.mem;
        int readOff = 0;
        for (int i = 0; i < r.addr.length; i++) {
            if (r.addr[i] == UNMAPPED) continue;
            r.addr[i] = cursor;
            if (r.writable[i]) {
                mem.fill(cursor, r.len[i], UNWRITTEN);
            } else {
                mem.write(cursor, r.readable, readOff, r.len[i]);
                readOff += r.len[i];
            }
            cursor += r.len[i] + 64; // a gap: writes past a buffer would show
            cursor = (cursor + 15) & ~15L;
        }
        for (int i = r.addr.length - 1; i >= 0; i--) {
            if (r.writable[i] && r.len[i] > 0 && r.addr[i] != UNMAPPED) {
                r.statusGpa = r.addr[i] + r.len[i] - 1;
                break;
            }
        }
        int n = r.addr.length;
        if (r.indirect) {
            long table = cursor;
            cursor += 16L * n + 16;
            for (int i = 0; i < n; i++) {
                int flags = (r.writable[i] ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0);
                q.writeDescriptorAt(table + 16L * i, r.addr[i], r.len[i], flags, i + 1 < n ? i + 1 : 0);
            }
            r.descs = q.reserveDescriptors(1);
            q.writeDescriptor(r.descs[0], table, 16 * n, VRING_DESC_F_INDIRECT, 0);
        } else {
            r.descs = q.reserveDescriptors(n);
            for (int i = 0; i < n; i++) {
                int flags = (r.writable[i] ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0);
                q.writeDescriptor(r.descs[i], r.addr[i], r.len[i], flags, i + 1 < n ? r.descs[i + 1] : 0);
            }
        }
        r.head = r.descs[0];
        q.pushRawHead(r.head);
        return cursor;
    }

    // ------------------------------------------------------------------------------------------ the model

    /** Checks one completed request against the virtio-blk rules. */
    private static void check(Target t, Req r, DriverQueue.UsedElem u) {
        String what = describe(r);
        GuestMemory mem = t.mem;
        // Device-readable buffers are never written.
        int off = 0;
        for (int i = 0; i < r.addr.length; i++) {
            if (r.writable[i]) continue;
            byte[] now = mem.read(r.addr[i], r.len[i]);
            if (!Arrays.equals(now, 0, now.length, r.readable, off, off + r.len[i])) {
                throw new AssertionError("the device wrote a device-readable buffer: " + what);
            }
            off += r.len[i];
        }
        if (r.writableBytes == 0) { // no status byte: nothing written, length 0
            if (u.len() != 0) throw new AssertionError("used len " + u.len() + " without writable buffers: " + what);
            return;
        }
        int status = mem.getU8(r.statusGpa);
        if (status != VirtioBlk.S_OK && status != VirtioBlk.S_IOERR && status != VirtioBlk.S_UNSUPP) {
            throw new AssertionError("status 0x" + Integer.toHexString(status) + " for " + what);
        }
        Expect e = expect(t.ex, r);
        if ((status == VirtioBlk.S_OK) != e.ok) {
            throw new AssertionError("status " + status + " but the request is " + (e.ok ? "valid" : "invalid") + ": " + what);
        }
        // What the device may have written: read data (zeroes from null-co) or the id, then the status byte.
        byte[] written = status == VirtioBlk.S_OK ? e.data : new byte[0];
        long expectLen = status == VirtioBlk.S_OK ? e.usedLen : 1;
        if (u.len() != expectLen) throw new AssertionError("used len " + u.len() + ", expected " + expectLen + ": " + what);
        long k = 0;
        for (int i = 0; i < r.addr.length; i++) {
            if (!r.writable[i]) continue;
            byte[] now = mem.read(r.addr[i], r.len[i]);
            for (int j = 0; j < now.length; j++, k++) {
                long gpa = r.addr[i] + j;
                if (gpa == r.statusGpa) continue;
                byte want = k < written.length ? written[(int) k] : UNWRITTEN;
                if (now[j] != want) {
                    throw new AssertionError("writable byte " + k + " is 0x" + Integer.toHexString(now[j] & 0xff) + ", expected 0x"
                            + Integer.toHexString(want & 0xff) + ": " + what);
                }
            }
        }
    }

    record Expect(boolean ok, byte[] data, long usedLen) {}

    /** The virtio-blk semantics jvhost implements, independently of BlkQueue's code. */
    static Expect expect(FuzzSupport.Export ex, Req r) {
        long readable = r.readable.length;
        long inData = r.writableBytes - 1;
        if (readable < 16) return new Expect(false, null, 1);
        ByteBuffer h = ByteBuffer.wrap(r.readable).order(ByteOrder.LITTLE_ENDIAN);
        int type = h.getInt(0);
        long sector = h.getLong(8);
        int lbs = ex.lbs;
        switch (type) {
            case VirtioBlk.T_IN:
                return aligned(ex, sector, inData) ? new Expect(true, new byte[(int) inData], inData + 1) : new Expect(false, null, 1);
            case VirtioBlk.T_OUT:
            case VirtioBlk.T_OUT_FUA:
                return new Expect(aligned(ex, sector, readable - 16), new byte[0], 1);
            case VirtioBlk.T_FLUSH:
                return new Expect(true, new byte[0], 1);
            case VirtioBlk.T_GET_ID: {
                int n = (int) Math.min(VirtioBlk.ID_BYTES, inData);
                byte[] id = Arrays.copyOf("fuzz-serial".getBytes(StandardCharsets.UTF_8), n);
                return new Expect(true, id, n + 1);
            }
            case VirtioBlk.T_DISCARD:
            case VirtioBlk.T_WRITE_ZEROES: {
                if (readable - 16 != 16) return new Expect(false, null, 1);
                long s = h.getLong(16), num = Integer.toUnsignedLong(h.getInt(24));
                int flags = h.getInt(28);
                boolean wz = type == VirtioBlk.T_WRITE_ZEROES;
                long max = wz ? VirtioBlk.MAX_WRITE_ZEROES_SECTORS : VirtioBlk.MAX_DISCARD_SECTORS;
                boolean ok = (flags & ~(wz ? VirtioBlk.WZ_FLAG_UNMAP : 0)) == 0 && num <= max && aligned(ex, s, num << 9);
                return new Expect(ok, new byte[0], 1);
            }
            default:
                return new Expect(false, null, 1);
        }
    }

    /** [sector*512, +len) lies within the device and both ends are logical-block aligned (no overflow). */
    private static boolean aligned(FuzzSupport.Export ex, long sector, long len) {
        if (sector < 0 || sector > Long.MAX_VALUE >> 9) return false;
        long off = sector << 9;
        return len >= 0 && off <= ex.capacity && len <= ex.capacity - off && off % ex.lbs == 0 && len % ex.lbs == 0;
    }

    private static String describe(Req r) {
        StringBuilder sb = new StringBuilder(r.indirect ? "indirect chain" : "chain").append(" head ").append(r.head);
        for (int i = 0; i < r.addr.length && i < 12; i++) {
            sb.append(r.writable[i] ? " W" : " R").append(r.len[i]);
            if (r.addr[i] == UNMAPPED) sb.append("(unmapped)");
        }
        if (r.addr.length > 12) sb.append(" ... (").append(r.addr.length).append(" segments)");
        if (r.readable.length >= 16) {
            ByteBuffer h = ByteBuffer.wrap(r.readable).order(ByteOrder.LITTLE_ENDIAN);
            sb.append(String.format(" type=%d sector=0x%x", h.getInt(0), h.getLong(8)));
        }
        return sb.toString();
    }

    /** The committed seeds still reach what they were written for. */
    @Test
    void seedsReachWhatTheyAreFor() throws Exception {
        for (String[] e : new String[][] {{"all-types", "0"}, {"indirect-4k", "0"}, {"bad-chain", "1"}, {"bad-headers", "0"}}) {
            byte[] seed;
            try (InputStream is = getClass().getResourceAsStream("BlkRequestFuzzTestInputs/requests/seed-" + e[0])) {
                if (is == null) throw new AssertionError("missing seed " + e[0]);
                seed = is.readAllBytes();
            }
            breaks = completions = 0;
            requests(seed);
            if (breaks != Integer.parseInt(e[1]) || completions == 0) {
                throw new AssertionError(e[0] + ": " + completions + " completions, " + breaks + " ring breaks");
            }
        }
    }
}
