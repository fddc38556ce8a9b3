package io.jvhost.block;

import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.AioUring;
import io.netty.channel.IoEvent;
import io.netty.channel.IoRegistration;
import io.netty.channel.uring.IoUringIoEvent;
import io.netty.channel.uring.IoUringIoHandle;
import io.netty.channel.uring.IoUringIoOps;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.logging.Logger;

/**
 * The file driver's aio=io_uring engine for one (node, iothread) pair: reads, writes and flushes of requests
 * submitted on that iothread become raw SQEs on the iothread's own ring ({@link AioContext#uring}), reading and
 * writing the request's buffers (mapped guest RAM) directly; the CQEs come back on the same thread. Everything
 * here runs on that thread, so nothing is locked.
 *
 * <p>Each request takes one of {@link #SLOTS} preallocated slots (more wait in a FIFO until one frees); the slot
 * index is the SQE's userData, small enough for netty's allocation-free fast path. A slot owns a native iovec
 * array of {@link #SEGS} entries; a request with more segments, or one the kernel completed short, continues
 * with the next READV/WRITEV from where it stopped. A read that hits EOF zero-fills the rest (as QEMU's
 * file-posix does); a FUA write is followed by an fdatasync on the same slot. Submitting only queues the SQE in
 * netty's submission ring: netty enters the kernel once per loop pass, so all requests of one pass (one batch of
 * kicks) go in together — QEMU's plug/unplug without any code.
 *
 * <p>netty's {@link IoUringIoOps} is an immutable object, so each SQE costs one small allocation (see
 * docs/ARCHITECTURE.md for what escape analysis makes of it).
 */
final class UringFile implements IoUringIoHandle {
    private static final Logger LOG = Logger.getLogger(UringFile.class.getName());

    // From io_uring.h (netty keeps its copies package-private).
    static final byte IORING_OP_READV = 1, IORING_OP_WRITEV = 2, IORING_OP_FSYNC = 3;
    static final int IORING_FSYNC_DATASYNC = 1;
    /** In-flight requests per (node, iothread); more wait in {@link #waitHead}. At most 32767 (netty fast path). */
    static final int SLOTS = 128;
    /** iovec entries per slot; virtio-blk requests have at most 126 segments (plus splits at 1 GiB windows). */
    static final int SEGS = 128;
    private static final int IOVEC_SIZE = 16;
    private static final int EINTR = 4, EAGAIN = 11;

    private final FileDriver drv;
    private final AioContext ctx;
    private final int fd;
    /** The fd is O_DIRECT: a short read can only be EOF (a retry at the unaligned rest would be refused). */
    private final boolean direct;
    private final IoRegistration reg;
    /** SLOTS * SEGS iovecs in native memory (struct iovec: base, len; little-endian on x86-64). */
    private final ByteBuffer iovecs;
    private final long iovecAddr;
    private final Slot[] slots = new Slot[SLOTS];
    private final int[] free = new int[SLOTS];
    private int freeTop;
    private int inFlight;
    private BlockRequest waitHead, waitTail;
    private boolean closed;

    private static final class Slot {
        final short index;
        BlockRequest req;
        /** Segment and offset inside it where the next transfer starts; bytes done so far. */
        int seg;
        int segOff;
        long done;
        /** Bytes of the SQE in flight (0 for fsync). */
        long submitted;
        boolean syncing;

        Slot(int index) {
            this.index = (short) index;
        }
    }

    private UringFile(FileDriver drv, AioUring uring, int fd, boolean direct) {
        this.drv = drv;
        this.ctx = uring.context();
        this.fd = fd;
        this.direct = direct;
        this.iovecs = ByteBuffer.allocateDirect(SLOTS * SEGS * IOVEC_SIZE).order(ByteOrder.nativeOrder());
        this.iovecAddr = AioUring.address(iovecs);
        for (int i = 0; i < SLOTS; i++) {
            slots[i] = new Slot(i);
            free[i] = SLOTS - 1 - i;
        }
        freeTop = SLOTS;
        this.reg = uring.register(this); // on the context's own thread: registers at once
    }

    /** Creates and registers the engine; context thread only. */
    static UringFile create(FileDriver drv, AioUring uring, int fd, boolean direct) {
        uring.context().assertInContextThread("UringFile.create");
        return new UringFile(drv, uring, fd, direct);
    }

    AioContext context() {
        return ctx;
    }

    /**
     * Can this engine take the request? Reads and writes need every segment in direct (native) memory; the
     * caller has checked the O_DIRECT alignment rules.
     */
    static boolean accepts(BlockRequest r) {
        if (r.op == BlockRequest.FLUSH) return true;
        if (r.op != BlockRequest.READ && r.op != BlockRequest.WRITE) return false;
        IoVec iov = r.iov;
        for (int i = 0; i < iov.count(); i++) {
            if (!iov.get(i).isDirect()) return false;
        }
        return true;
    }

    /** Starts (or queues) a request; the context's thread only. */
    void submit(BlockRequest r) {
        if (freeTop == 0) {
            r.next = null;
            if (waitTail == null) waitHead = r; else waitTail.next = r;
            waitTail = r;
            return;
        }
        start(slots[free[--freeTop]], r);
    }

    private void start(Slot s, BlockRequest r) {
        inFlight++;
        s.req = r;
        s.seg = 0;
        s.segOff = 0;
        s.done = 0;
        s.syncing = false;
        if (r.op == BlockRequest.FLUSH) {
            submitSync(s);
        } else {
            submitRw(s);
        }
    }

    private void submitSync(Slot s) {
        s.syncing = true;
        s.submitted = 0;
        if (reg.submit(new IoUringIoOps(IORING_OP_FSYNC, (byte) 0, (short) 0, fd, 0L, 0L, 0, IORING_FSYNC_DATASYNC,
                s.index, (short) 0, (short) 0, 0, 0L)) == 0) {
            complete(s, -Errno.EIO); // registration gone: the loop is shutting down
        }
    }

    /** Fills the slot's iovec array from its cursor and submits one READV/WRITEV. */
    private void submitRw(Slot s) {
        BlockRequest r = s.req;
        IoVec iov = r.iov;
        long base = (long) s.index * SEGS * IOVEC_SIZE;
        int n = 0;
        long bytes = 0;
        int off = s.segOff;
        for (int i = s.seg; i < iov.count() && n < SEGS; i++) {
            int len = iov.length(i) - off;
            if (len > 0) {
                long addr = AioUring.address(iov.get(i)) + iov.start(i) + off;
                int at = (int) (base + (long) n * IOVEC_SIZE);
                iovecs.putLong(at, addr);
                iovecs.putLong(at + 8, len);
                n++;
                bytes += len;
            }
            off = 0;
        }
        if (n == 0) { // nothing left (an empty request)
            complete(s, 0);
            return;
        }
        s.submitted = bytes;
        byte op = r.op == BlockRequest.READ ? IORING_OP_READV : IORING_OP_WRITEV;
        if (reg.submit(new IoUringIoOps(op, (byte) 0, (short) 0, fd, r.offset + s.done, iovecAddr + base, n, 0,
                s.index, (short) 0, (short) 0, 0, 0L)) == 0) {
            complete(s, -Errno.EIO);
        }
    }

    @Override
    public void handle(IoRegistration registration, IoEvent e) {
        // netty reuses the event object for every CQE of this registration: read it before anything else.
        IoUringIoEvent ev = (IoUringIoEvent) e;
        int res = ev.res();
        long ud = ev.userData();
        if (ud < 0 || ud >= SLOTS || slots[(int) ud].req == null) {
            LOG.warning(ctx.name() + ": io_uring completion for an unknown slot " + ud + " (res " + res + ")");
            return;
        }
        Slot s = slots[(int) ud];
        if (res == -EINTR || res == -EAGAIN) { // transient: submit the same piece again
            if (s.syncing) submitSync(s); else submitRw(s);
            return;
        }
        if (res < 0) {
            complete(s, Errno.ofErrno(-res));
            return;
        }
        if (s.syncing) {
            complete(s, 0);
            return;
        }
        BlockRequest r = s.req;
        boolean read = r.op == BlockRequest.READ;
        if (res == 0 && !read) { // no progress writing: as the thread engine, an I/O error
            complete(s, -Errno.EIO);
            return;
        }
        advance(s, res);
        long total = r.iov.size();
        if (s.done < total) {
            if (read && (res == 0 || (direct && res < s.submitted))) {
                zeroRest(s); // EOF (with O_DIRECT any short read is EOF)
                complete(s, 0);
            } else {
                submitRw(s); // short transfer, or more segments than one SQE carries
            }
            return;
        }
        if (!read && (r.flags & BlockBackend.FUA) != 0) {
            submitSync(s);
            return;
        }
        complete(s, 0);
    }

    /** Moves the slot's cursor forward by n bytes. */
    private static void advance(Slot s, long n) {
        IoVec iov = s.req.iov;
        s.done += n;
        while (n > 0 && s.seg < iov.count()) {
            long left = iov.length(s.seg) - s.segOff;
            if (n < left) {
                s.segOff += (int) n;
                return;
            }
            n -= left;
            s.seg++;
            s.segOff = 0;
        }
    }

    /** Zeros everything from the cursor to the end of the request (a read past EOF). */
    private static void zeroRest(Slot s) {
        IoVec iov = s.req.iov;
        int off = s.segOff;
        for (int i = s.seg; i < iov.count(); i++) {
            int len = iov.length(i) - off;
            if (len > 0) Buffers.zero(iov.get(i), iov.start(i) + off, len);
            off = 0;
        }
    }

    private void complete(Slot s, int ret) {
        BlockRequest r = s.req;
        s.req = null;
        free[freeTop++] = s.index;
        inFlight--;
        r.done(ret);
        BlockRequest w = waitHead;
        if (w != null) {
            waitHead = w.next;
            if (waitHead == null) waitTail = null;
            w.next = null;
            start(slots[free[--freeTop]], w);
        }
    }

    /**
     * Cancels the registration (the node closes); context thread only. Returns the requests still in flight
     * (normally none: the node drained first); their CQEs still arrive here and complete them.
     */
    int cancel() {
        closed = true;
        reg.cancel();
        return inFlight + (waitHead != null ? 1 : 0);
    }

    boolean isClosed() {
        return closed;
    }

    /** The loop is shutting down (the iothread goes away): forget this engine. */
    @Override
    public void close() {
        closed = true;
        drv.forget(this);
    }
}
