package io.jvhost.vhostuser.frontend;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;

/**
 * One virtio-blk request as a driver builds it: 16-byte out header, optional data (device-readable for writes,
 * DISCARD/WRITE_ZEROES ranges; device-writable for reads and GET_ID), one status byte. Layout knobs (how many
 * data descriptors, indirect table, region placement, status merged into the last data buffer) let tests
 * exercise a back-end's descriptor walking. Single use: create, submit once, read the results.
 */
public final class BlkRequest {
    /** Status prefilled into the status byte so "never written" is visible (not a legal virtio-blk status). */
    public static final int STATUS_UNWRITTEN = 0xff;
    /** Prefill of device-writable data buffers, so short writes by the device are visible. */
    public static final byte IN_FILL = (byte) 0xcc;

    private final int type;
    private final long sector;
    private final byte[] outData;   // device-readable payload after the header (may be empty)
    private final int inLen;        // device-writable payload before the status byte
    private int ioprio;
    private int[] segmentSizes;     // how the data payload is cut into descriptors (null: one)
    private boolean indirect;
    private long indirectTableGpa;
    private int region = -1;
    private long dataGpa;           // explicit contiguous data placement (0: allocator)
    private boolean statusInLastData;
    private boolean headerWithData;

    // state
    private final List<Long> allocations = new ArrayList<>();
    private final List<DriverQueue.Segment> dataSegs = new ArrayList<>();
    private long statusGpa;
    private DriverQueue queue;
    private int head = -1;
    private boolean done;
    private int status = -1;
    private long usedLen = -1;
    private byte[] inData;

    private BlkRequest(int type, long sector, byte[] outData, int inLen) {
        if (inLen < 0) throw new IllegalArgumentException("inLen " + inLen);
        this.type = type;
        this.sector = sector;
        this.outData = outData == null ? new byte[0] : outData.clone();
        this.inLen = inLen;
    }

    // --------------------------------------------------------------------------------------- factories

    public static BlkRequest read(long sector, int bytes) { return new BlkRequest(BLK_T_IN, sector, null, bytes); }
    public static BlkRequest write(long sector, byte[] data) { return new BlkRequest(BLK_T_OUT, sector, data, 0); }
    /** VIRTIO_BLK_T_OUT_FUA (27, proposed spec extension): a write that must be durable on completion. */
    public static BlkRequest writeFua(long sector, byte[] data) { return new BlkRequest(BLK_T_OUT_FUA, sector, data, 0); }
    public static BlkRequest flush() { return new BlkRequest(BLK_T_FLUSH, 0, null, 0); }
    public static BlkRequest getId() { return new BlkRequest(BLK_T_GET_ID, 0, null, BLK_ID_BYTES); }

    public static BlkRequest discard(long sector, int numSectors) { return ranges(BLK_T_DISCARD, new long[] {sector, numSectors, 0}); }
    public static BlkRequest discard(long sector, int numSectors, int flags) { return ranges(BLK_T_DISCARD, new long[] {sector, numSectors, flags}); }

    public static BlkRequest writeZeroes(long sector, int numSectors, boolean unmap) {
        return ranges(BLK_T_WRITE_ZEROES, new long[] {sector, numSectors, unmap ? BLK_WRITE_ZEROES_FLAG_UNMAP : 0});
    }

    /** DISCARD / WRITE_ZEROES / SECURE_ERASE with any number of {sector, num_sectors, flags} segments. */
    public static BlkRequest ranges(int type, long[]... segs) {
        ByteBuffer b = ByteBuffer.allocate(16 * segs.length).order(ByteOrder.LITTLE_ENDIAN);
        for (long[] s : segs) b.putLong(s[0]).putInt((int) s[1]).putInt((int) s[2]);
        return new BlkRequest(type, 0, b.array(), 0);
    }

    /** Any type, any sector, any device-readable payload and device-writable length (e.g. unknown types). */
    public static BlkRequest custom(int type, long sector, byte[] outData, int inLen) {
        return new BlkRequest(type, sector, outData, inLen);
    }

    // ----------------------------------------------------------------------------------------- layout

    public BlkRequest ioprio(int p) { this.ioprio = p; return this; }

    /** Cuts the data payload into {@code n} descriptors of (nearly) equal size, each allocated separately. */
    public BlkRequest segments(int n) {
        int total = dataLen();
        if (n < 1 || n > Math.max(total, 1)) throw new IllegalArgumentException(n + " segments for " + total + " bytes");
        int[] s = new int[n];
        for (int i = 0; i < n; i++) s[i] = total / n + (i < total % n ? 1 : 0);
        this.segmentSizes = s;
        return this;
    }

    /** Cuts the data payload into descriptors of exactly these sizes (must sum to the payload length). */
    public BlkRequest segmentSizes(int... sizes) {
        if (Arrays.stream(sizes).asLongStream().sum() != dataLen()) throw new IllegalArgumentException("sizes do not sum to " + dataLen());
        this.segmentSizes = sizes.clone();
        return this;
    }

    /** Puts the whole chain in an indirect table (one ring descriptor with VRING_DESC_F_INDIRECT). */
    public BlkRequest indirect(boolean on) { this.indirect = on; return this; }

    /** Places the indirect table at this guest address (e.g. straddling two regions). Implies indirect. */
    public BlkRequest indirectTableAt(long gpa) { this.indirect = true; this.indirectTableGpa = gpa; return this; }

    /** Allocates all buffers of this request in one region. */
    public BlkRequest region(int r) { this.region = r; return this; }

    /** Places the data payload contiguously at {@code gpa} (may straddle adjacent regions). */
    public BlkRequest dataAt(long gpa) { this.dataGpa = gpa; return this; }

    /** Makes the status byte the last byte of the last data descriptor instead of its own descriptor. */
    public BlkRequest statusInLastData(boolean on) { this.statusInLastData = on; return this; }

    /** Puts the header and a device-readable payload into one descriptor (virtio 1.x any-layout). */
    public BlkRequest headerWithData(boolean on) { this.headerWithData = on; return this; }

    // ----------------------------------------------------------------------------------- accessors

    public int type() { return type; }
    public long sector() { return sector; }
    public boolean isIndirect() { return indirect; }
    long indirectTableGpa() { return indirectTableGpa; }
    public boolean isDone() { return done; }
    /** Head descriptor index in the ring (-1 before submission). */
    public int head() { return head; }
    public DriverQueue queue() { return queue; }

    /** Status byte written by the device; {@link #STATUS_UNWRITTEN} if it never wrote one. */
    public int status() {
        checkDone();
        return status;
    }

    /** used.len reported by the device. */
    public long usedLen() {
        checkDone();
        return usedLen;
    }

    /** Device-writable payload as found at completion (reads, GET_ID). */
    public byte[] data() {
        checkDone();
        return inData.clone();
    }

    /** GET_ID result: the bytes up to the first NUL (the spec does not require one when the id is 20 bytes). */
    public String idString() {
        byte[] d = data();
        int n = 0;
        while (n < d.length && d[n] != 0) n++;
        return new String(d, 0, n, StandardCharsets.US_ASCII);
    }

    /** Guest segments of the data payload (valid after submission, until completion). */
    public List<DriverQueue.Segment> dataSegments() { return dataSegs; }
    public long statusGpa() { return statusGpa; }

    private void checkDone() {
        if (!done) throw new IllegalStateException("request not completed: " + this);
    }

    private boolean dataWritable() { return inLen > 0; }

    private int dataLen() { return dataWritable() ? inLen : outData.length; }

    // --------------------------------------------------------------------------------- queue interplay

    /** Allocates and fills guest buffers; returns the chain's segments in order. */
    List<DriverQueue.Segment> prepare(GuestMemory mem) {
        if (queue != null) throw new IllegalStateException("request already submitted: " + this);
        if (inLen > 0 && outData.length > 0) throw new IllegalStateException("request with both out and in payload");
        try {
            return layout(mem);
        } catch (RuntimeException e) {
            abandon(mem);
            throw e;
        }
    }

    private long alloc(GuestMemory mem, long len, int align) {
        long a = region >= 0 ? mem.alloc(len, align, region) : mem.alloc(len, align);
        allocations.add(a);
        return a;
    }

    private List<DriverQueue.Segment> layout(GuestMemory mem) {
        List<DriverQueue.Segment> segs = new ArrayList<>();
        byte[] hdr = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putInt(type).putInt(ioprio).putLong(sector).array();
        int total = dataLen();
        int[] sizes = segmentSizes != null ? segmentSizes : (total > 0 ? new int[] {total} : new int[0]);
        boolean writable = dataWritable();
        boolean merge = statusInLastData && writable && sizes.length > 0;

        // Data pieces: one contiguous block if placed explicitly, else one allocation per piece.
        long contiguous = 0;
        if (dataGpa != 0 && total > 0) {
            contiguous = mem.allocAt(dataGpa, total + (merge ? 1 : 0));
            allocations.add(contiguous);
        }
        long off = 0;
        for (int i = 0; i < sizes.length; i++) {
            boolean last = i == sizes.length - 1;
            int len = sizes[i] + (merge && last ? 1 : 0);
            long g = contiguous != 0 ? contiguous + off : alloc(mem, len, 8);
            off += sizes[i];
            dataSegs.add(new DriverQueue.Segment(g, len, writable));
        }

        // Header (optionally sharing a buffer with a device-readable payload).
        if (headerWithData && !writable && total > 0 && contiguous == 0) {
            long g = alloc(mem, 16L + total, 8);
            mem.write(g, hdr);
            mem.write(g + 16, outData);
            segs.add(new DriverQueue.Segment(g, 16 + total, false));
            dataSegs.clear();
            dataSegs.add(new DriverQueue.Segment(g + 16, total, false));
        } else {
            long g = alloc(mem, 16, 8);
            mem.write(g, hdr);
            segs.add(new DriverQueue.Segment(g, 16, false));
            long o = 0;
            for (DriverQueue.Segment s : dataSegs) {
                if (writable) {
                    mem.fill(s.gpa(), s.len(), IN_FILL);
                } else {
                    mem.write(s.gpa(), outData, (int) o, s.len());
                }
                o += s.len();
                segs.add(s);
            }
        }

        if (merge) {
            DriverQueue.Segment lastSeg = dataSegs.get(dataSegs.size() - 1);
            statusGpa = lastSeg.gpa() + lastSeg.len() - 1;
        } else {
            statusGpa = alloc(mem, 1, 1);
            segs.add(new DriverQueue.Segment(statusGpa, 1, true));
        }
        mem.putU8(statusGpa, STATUS_UNWRITTEN);
        return segs;
    }

    void submitted(DriverQueue q, int head) {
        this.queue = q;
        this.head = head;
    }

    /** Reads status and device-written data, then gives the buffers back. */
    void complete(GuestMemory mem, long len) {
        this.usedLen = len;
        this.status = mem.getU8(statusGpa);
        if (dataWritable()) {
            byte[] d = new byte[inLen];
            int o = 0;
            for (DriverQueue.Segment s : dataSegs) {
                int n = Math.min(s.len(), inLen - o);
                mem.read(s.gpa(), d, o, n);
                o += n;
            }
            this.inData = d;
        } else {
            this.inData = new byte[0];
        }
        freeAll(mem);
        this.done = true;
    }

    /** Frees buffers of a request that will never complete (queue reset, submission failure). */
    void abandon(GuestMemory mem) {
        if (!mem.isClosed()) freeAll(mem);
        allocations.clear();
    }

    private void freeAll(GuestMemory mem) {
        for (long a : allocations) mem.free(a);
        allocations.clear();
    }

    @Override
    public String toString() {
        return "BlkRequest[type=" + type + " sector=" + sector + " out=" + outData.length + " in=" + inLen
                + (indirect ? " indirect" : "") + (head >= 0 ? " head=" + head : "") + (done ? " status=" + status + " len=" + usedLen : "") + "]";
    }
}
