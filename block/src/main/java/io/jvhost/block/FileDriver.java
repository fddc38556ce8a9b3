package io.jvhost.block;

import com.sun.nio.file.ExtendedOpenOption;
import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.AioUring;
import io.jvhost.iothread.sys.Libc;
import io.netty.channel.uring.IoUring;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * QEMU's {@code file} protocol driver with aio=threads: blocking positional FileChannel calls on the shared
 * worker pool, straight into the caller's buffers (zero-copy for direct ByteBuffers). A second raw fd, opened
 * with libc (the JDK exposes no fd of a FileChannel), serves fallocate (discard, write-zeroes) and carries the
 * node's QEMU-style image locks ({@link ImageLock}); it is opened for read-only nodes too and stays open for the
 * node's whole life, because the locks belong to that open file description and go away with it.
 *
 * <p>With cache.direct=on the JDK insists on buffer address, file position and length all being multiples of
 * the filesystem block size (f_frsize, 4096 on ext4). Requests that are not go through a per-thread aligned
 * bounce buffer; unaligned writes become read-modify-write of the edge blocks, and those are serialised
 * against every other modification of the file (an exclusive lock) so two RMWs of one block cannot lose an
 * update. Aligned requests and reads share the lock and run in parallel.
 *
 * <p>Plugging ({@link Plug}): a plugged thread's submissions to the worker pool are batched and handed over when
 * its section ends, or at once when drain disables plugging (phase 2).
 *
 * <p>aio=io_uring: reads, writes and flushes submitted on an io_uring-backed iothread go to that iothread's ring
 * ({@link UringFile}, one per (node, iothread), created there on first use); everything else — requests from the
 * main loop, job threads or plain threads, discard and write-zeroes, buffers in heap memory, and with
 * cache.direct=on requests the kernel would refuse unaligned — takes the thread-pool path above. Ring requests
 * need no plugging: netty submits a loop pass's SQEs together.
 */
final class FileDriver implements BlockDriver, BlockRequest.Work {
    private static final Logger LOG = Logger.getLogger(FileDriver.class.getName());
    private static final UringFile[] NO_ENGINES = new UringFile[0];
    private static final int BOUNCE_SIZE = 128 * 1024;
    private static final ThreadLocal<ByteBuffer> BOUNCE = new ThreadLocal<>();
    /** Source of zeros for the write-zeroes fallback; only ever read, through duplicates. */
    private static final ByteBuffer ZERO_BUF = ByteBuffer.allocateDirect(BOUNCE_SIZE);

    private final String filename;
    private final FileChannel fc;
    private final int rawFd;
    private final boolean direct;
    private final int align;
    private volatile long length;
    private final Lock shared;
    private final Lock exclusive;

    // ---- aio=io_uring ----
    private final boolean uring;
    /** Logged once: an iothread without a ring submitted to this aio=io_uring node. */
    private volatile boolean warnedEpoll;
    private final boolean readOnly;
    /** The fd ring SQEs use: rawFd, or with cache.direct=on a third descriptor opened O_DIRECT. */
    private final int ringFd;
    /** One engine per iothread that submitted here; copy-on-write under engineLock, scanned lock-free. */
    private volatile UringFile[] engines = NO_ENGINES;
    private final Object engineLock = new Object();
    private boolean enginesClosed; // guarded by engineLock

    // ---- plugging ----
    /** Threads whose plugged section batches here (diagnostics). */
    private final AtomicInteger plugged = new AtomicInteger();
    private final AtomicInteger plugDisabled = new AtomicInteger();
    private final Object batchLock = new Object();
    private BlockRequest batchHead, batchTail; // guarded by batchLock, linked through BlockRequest.next

    private FileDriver(String filename, FileChannel fc, int rawFd, boolean direct, int align, long length,
                       boolean uring, boolean readOnly, int ringFd) {
        this.filename = filename;
        this.uring = uring;
        this.readOnly = readOnly;
        this.ringFd = ringFd;
        this.fc = fc;
        this.rawFd = rawFd;
        this.direct = direct;
        this.align = align;
        this.length = length;
        ReentrantReadWriteLock rw = new ReentrantReadWriteLock();
        this.shared = rw.readLock();
        this.exclusive = rw.writeLock();
    }

    /**
     * Opens an existing file or block device; never creates or truncates it. Unless locking is off (or auto on a
     * kernel without OFD locks) it then takes the image locks of a reader or writer sharing everything but write
     * (everything with forceShare), failing if another opener's locks conflict.
     */
    static FileDriver open(String filename, boolean readOnly, boolean direct, ImageLock.Mode locking, boolean forceShare)
            throws BlockException {
        return open(filename, readOnly, direct, locking, forceShare, false);
    }

    /** As above; {@code uring} selects aio=io_uring (an error where the kernel or JVM cannot do io_uring). */
    static FileDriver open(String filename, boolean readOnly, boolean direct, ImageLock.Mode locking, boolean forceShare,
                           boolean uring) throws BlockException {
        if (uring && !IoUring.isAvailable()) {
            Throwable why = IoUring.unavailabilityCause();
            throw new BlockException("blockdev: Unable to use io_uring: " + (why == null ? "unavailable" : why.getMessage()), why);
        }
        Path p;
        try {
            p = Path.of(filename);
        } catch (InvalidPathException e) {
            throw new BlockException("blockdev: invalid filename '" + filename + "'", e);
        }
        if (!Files.exists(p)) throw new BlockException("blockdev: file '" + filename + "' does not exist");
        if (Files.isDirectory(p)) throw new BlockException("blockdev: file '" + filename + "' is a directory");

        Set<OpenOption> opts = new HashSet<>();
        opts.add(StandardOpenOption.READ); // no CREATE, no TRUNCATE_EXISTING: an image is never made or cut here
        if (!readOnly) opts.add(StandardOpenOption.WRITE);
        if (direct) opts.add(ExtendedOpenOption.DIRECT);
        FileChannel fc;
        try {
            fc = FileChannel.open(p, opts);
        } catch (UnsupportedOperationException e) {
            throw new BlockException("blockdev: cache.direct=on is not supported for '" + filename + "'", e);
        } catch (IOException e) {
            throw new BlockException("blockdev: could not open '" + filename + "'"
                    + (direct ? " with cache.direct=on" : "") + ": " + e.getMessage(), e);
        }
        int rawFd = -1, ringFd = -1;
        try {
            long length = fc.size();
            int align = 1;
            if (direct) {
                // The JDK derives its O_DIRECT alignment from statvfs f_frsize, which is what this reports.
                long bs = Files.getFileStore(p).getBlockSize();
                if (bs <= 0 || bs > (1 << 20) || Long.bitCount(bs) != 1) {
                    throw new BlockException("blockdev: cache.direct=on: unsupported block size " + bs + " for '" + filename + "'");
                }
                align = (int) bs;
                if (!readOnly && length % align != 0) {
                    // The JDK cannot write the partial last block with O_DIRECT without growing the file.
                    throw new BlockException("blockdev: cache.direct=on needs the size of '" + filename
                            + "' (" + length + ") to be a multiple of " + align);
                }
            }
            // O_CLOEXEC also matters for the locks: a child process inheriting the description would keep them.
            rawFd = Libc.open(p.toAbsolutePath().toString(), (readOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC, 0);
            if (rawFd < 0) {
                throw new BlockException("blockdev: could not open '" + filename + "': errno " + Libc.errno());
            }
            boolean lock = locking != ImageLock.Mode.OFF;
            if (lock && !ImageLock.ofdSupported(rawFd)) {
                if (locking == ImageLock.Mode.ON) {
                    throw new BlockException("blockdev: locking=on: this kernel has no open file description locks"
                            + " (F_OFD_SETLK, Linux 3.15); use locking=off");
                }
                lock = false; // auto: QEMU's qemu_has_ofd_lock() said no
            }
            if (lock) {
                ImageLock.acquire(rawFd, filename, ImageLock.permFor(readOnly), ImageLock.sharedFor(forceShare));
            }
            ringFd = rawFd;
            if (uring && direct) {
                // The raw fd is buffered (fallocate, locks); ring I/O must bypass the page cache like the channel.
                ringFd = Libc.open(p.toAbsolutePath().toString(),
                        (readOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC | Libc.O_DIRECT, 0);
                if (ringFd < 0) {
                    throw new BlockException("blockdev: could not open '" + filename + "' with O_DIRECT: errno " + Libc.errno());
                }
            }
            return new FileDriver(filename, fc, rawFd, direct, align, length, uring, readOnly, ringFd);
        } catch (IOException | BlockException | RuntimeException e) {
            try {
                fc.close();
            } catch (IOException ignored) {
                // already failing
            }
            if (ringFd >= 0 && ringFd != rawFd) Libc.close(ringFd);
            if (rawFd >= 0) Libc.close(rawFd);
            if (e instanceof BlockException) throw (BlockException) e;
            throw new BlockException("blockdev: could not open '" + filename + "': " + e.getMessage(), e);
        }
    }

    @Override
    public String name() {
        return "file";
    }

    @Override
    public long getLength() {
        return length;
    }

    /** ftruncate on our own descriptor (not through the channel: FileChannel.truncate cannot grow). */
    @Override
    public void truncate(long newLength) throws BlockException {
        if (direct && newLength % align != 0) {
            throw new BlockException("cache.direct=on needs the new size (" + newLength + ") to be a multiple of " + align);
        }
        if (Libc.ftruncate(rawFd, newLength) != 0) {
            throw new BlockException("Could not resize file '" + filename + "': errno " + Libc.errno());
        }
        length = newLength;
    }

    int alignment() {
        return align;
    }

    @Override
    public void read(long offset, IoVec iov, BlockRequest r) {
        submit(r);
    }

    @Override
    public void write(long offset, IoVec iov, int flags, BlockRequest r) {
        submit(r);
    }

    @Override
    public void flush(BlockRequest r) {
        submit(r);
    }

    @Override
    public void discard(long offset, long bytes, BlockRequest r) {
        submit(r);
    }

    @Override
    public void writeZeroes(long offset, long bytes, int flags, BlockRequest r) {
        submit(r);
    }

    private void submit(BlockRequest r) {
        if (uring) {
            UringFile u = engineFor(r);
            if (u != null) {
                u.submit(r);
                return;
            }
        }
        r.setWork(this);
        if (plugDisabled.get() == 0 && Plug.enlist(this)) {
            synchronized (batchLock) {
                if (batchTail == null) batchHead = r; else batchTail.next = r;
                batchTail = r;
            }
            // Re-check after publishing: a drain may have flushed and disabled batching just before the append.
            if (plugDisabled.get() > 0) flushBatch();
            return;
        }
        r.executeWork();
    }

    /** A thread's plugged section started batching here. */
    @Override
    public void plug() {
        plugged.incrementAndGet();
    }

    /** That section ended: hand over the batch (other sections' requests too; they are only earlier). */
    @Override
    public void unplug() {
        plugged.decrementAndGet();
        flushBatch();
    }

    @Override
    public void ioUnpluggedBegin() {
        plugDisabled.incrementAndGet();
        flushBatch();
    }

    @Override
    public void ioUnpluggedEnd() {
        plugDisabled.decrementAndGet();
    }

    /** Requests batched right now (tests). */
    int batched() {
        synchronized (batchLock) {
            int n = 0;
            for (BlockRequest r = batchHead; r != null; r = r.next) n++;
            return n;
        }
    }

    private void flushBatch() {
        BlockRequest h;
        synchronized (batchLock) {
            h = batchHead;
            batchHead = batchTail = null;
        }
        while (h != null) {
            BlockRequest next = h.next;
            h.next = null;
            h.executeWork();
            h = next;
        }
    }

    // ------------------------------------------------------------------------------------------- io_uring

    /** The calling iothread's ring engine if this request may use it, else null (thread-pool path). */
    private UringFile engineFor(BlockRequest r) {
        if (r.op == BlockRequest.WRITE && readOnly) return null; // never reaches the ring (the node refuses it anyway)
        AioContext c = AioContext.current();
        if (c == null) return null;
        AioUring ring = c.uring();
        if (ring == null) {
            if (c.isIoThread() && !warnedEpoll) {
                warnedEpoll = true; // racy by design: at worst a second line
                LOG.warning("file(" + filename + "): aio=io_uring, but iothread " + c.name() + " runs on epoll (it was"
                        + " created before any aio=io_uring node, or -Djvhost.fdmon=epoll): its requests use the thread pool");
            }
            return null;
        }
        if (!UringFile.accepts(r)) return null;
        if (direct && r.op != BlockRequest.FLUSH && !directOk(r.offset, r.iov)) return null; // needs the bounce path
        UringFile[] es = engines;
        for (UringFile e : es) {
            if (e.context() == c) return e.isClosed() ? null : e;
        }
        synchronized (engineLock) {
            if (enginesClosed) return null;
            UringFile e;
            try {
                e = UringFile.create(this, ring, ringFd, direct);
            } catch (RuntimeException ex) {
                LOG.log(Level.WARNING, "file(" + filename + "): cannot register with " + c.name() + "'s io_uring", ex);
                return null;
            }
            UringFile[] n = java.util.Arrays.copyOf(engines, engines.length + 1);
            n[n.length - 1] = e;
            engines = n;
            return e;
        }
    }

    /** An engine whose loop shut down. */
    void forget(UringFile e) {
        synchronized (engineLock) {
            UringFile[] es = engines;
            for (int i = 0; i < es.length; i++) {
                if (es[i] == e) {
                    UringFile[] n = new UringFile[es.length - 1];
                    System.arraycopy(es, 0, n, 0, i);
                    System.arraycopy(es, i + 1, n, i, es.length - i - 1);
                    engines = n;
                    return;
                }
            }
        }
    }

    /** The descriptor ring SQEs use (tests). */
    int ringFd() {
        return ringFd;
    }

    /** Ring engines with this node (tests). */
    int uringEngines() {
        return engines.length;
    }

    /**
     * Cancels every engine's registration on its own thread. Returns false if some still had requests in flight
     * (the node's drain timed out): then the fds stay open rather than risk a reused number under those SQEs.
     */
    private boolean closeEngines() {
        UringFile[] es;
        synchronized (engineLock) {
            enginesClosed = true;
            es = engines;
            engines = NO_ENGINES;
        }
        boolean idle = true;
        for (UringFile e : es) {
            try {
                int busy = e.context().call(e::cancel, 10, TimeUnit.SECONDS);
                if (busy > 0) {
                    LOG.warning("file(" + filename + "): " + busy + " io_uring requests still in flight on "
                            + e.context().name() + " at close; leaving the file descriptors open");
                    idle = false;
                }
            } catch (java.util.concurrent.RejectedExecutionException ex) {
                // the iothread is gone, and its ring with it
            } catch (Exception ex) {
                LOG.log(Level.WARNING, "file(" + filename + "): cannot cancel io_uring on " + e.context().name(), ex);
                idle = false;
            }
        }
        return idle;
    }

    @Override
    public void close() {
        if (uring && !closeEngines()) {
            try {
                fc.close();
            } catch (IOException ignored) {
                // nothing left to report to
            }
            return;
        }
        if (ringFd >= 0 && ringFd != rawFd) Libc.close(ringFd);
        try {
            fc.close();
        } catch (IOException ignored) {
            // nothing left to report to
        }
        if (rawFd >= 0) Libc.close(rawFd);
    }

    // ---------------------------------------------------------------------------------- worker thread side

    @Override
    public int work(BlockRequest r) {
        try {
            switch (r.op) {
                case BlockRequest.READ:
                    return direct ? readDirect(r.offset, r.iov) : readv(r.offset, r.iov, false);
                case BlockRequest.WRITE: {
                    int ret = direct ? writeDirect(r.offset, r.iov) : writev(r.offset, r.iov);
                    if (ret == 0 && (r.flags & BlockBackend.FUA) != 0) fc.force(false);
                    return ret;
                }
                case BlockRequest.FLUSH:
                    fc.force(false); // fdatasync
                    return 0;
                case BlockRequest.DISCARD:
                    return discard(r.offset, r.bytes);
                case BlockRequest.WRITE_ZEROES: {
                    int ret = writeZeroes(r.offset, r.bytes, r.flags);
                    if (ret == 0 && (r.flags & BlockBackend.FUA) != 0) fc.force(false);
                    return ret;
                }
                default:
                    return -Errno.EINVAL;
            }
        } catch (IOException e) {
            return Errno.of(e);
        }
    }

    /**
     * Reads segment by segment into the caller's buffers. Past EOF (a file shorter than the node, e.g.
     * truncated behind our back) the rest reads as zeros. With O_DIRECT a short read can only be EOF (and a
     * retry at the unaligned position would be refused anyway).
     */
    private int readv(long offset, IoVec iov, boolean directIo) throws IOException {
        long pos = offset;
        boolean eof = false;
        for (int i = 0; i < iov.count(); i++) {
            ByteBuffer b = iov.prepare(i);
            try {
                while (!eof && b.hasRemaining()) {
                    int want = b.remaining();
                    int n = fc.read(b, pos);
                    if (n <= 0) {
                        eof = true;
                    } else {
                        pos += n;
                        if (directIo && n < want) eof = true;
                    }
                }
                if (b.hasRemaining()) Buffers.zero(b, b.position(), b.remaining());
            } finally {
                iov.restore(i);
            }
        }
        return 0;
    }

    private int writev(long offset, IoVec iov) throws IOException {
        long pos = offset;
        for (int i = 0; i < iov.count(); i++) {
            ByteBuffer b = iov.prepare(i);
            try {
                while (b.hasRemaining()) {
                    int n = fc.write(b, pos);
                    if (n <= 0) return -Errno.EIO;
                    pos += n;
                }
            } finally {
                iov.restore(i);
            }
        }
        return 0;
    }

    // ---------------------------------------------------------------------------------------- O_DIRECT

    private boolean isAligned(long v) {
        return (v & (align - 1)) == 0;
    }

    /** Can the JDK do this request with O_DIRECT as is? (Every segment direct, aligned in memory and length.) */
    private boolean directOk(long offset, IoVec iov) {
        if (!isAligned(offset)) return false;
        for (int i = 0; i < iov.count(); i++) {
            ByteBuffer b = iov.get(i);
            if (!b.isDirect() || !isAligned(iov.length(i)) || b.alignmentOffset(iov.start(i), align) != 0) {
                return false;
            }
        }
        return true;
    }

    private int readDirect(long offset, IoVec iov) throws IOException {
        if (directOk(offset, iov)) return readv(offset, iov, true);
        long len = iov.size();
        long start = offset & -align;
        long end = alignUp(offset + len);
        ByteBuffer bb = bounce();
        int chunk = bb.capacity();
        boolean eof = false;
        for (long c = start; c < end; ) {
            int n = (int) Math.min(chunk, end - c);
            int got = eof ? 0 : readBlocks(bb, 0, n, c);
            if (got < n) {
                eof = true;
                Buffers.zero(bb, got, n - got);
            }
            long from = Math.max(c, offset);
            long to = Math.min(c + n, offset + len);
            bb.clear();
            Buffers.copyToIov(iov, from - offset, bb, (int) (from - c), (int) (to - from));
            c += n;
        }
        return 0;
    }

    private int writeDirect(long offset, IoVec iov) throws IOException {
        long len = iov.size();
        boolean rmw = !isAligned(offset) || !isAligned(len);
        Lock l = rmw ? exclusive : shared;
        l.lock();
        try {
            if (directOk(offset, iov)) return writev(offset, iov);
            return writeBounce(offset, len, iov);
        } finally {
            l.unlock();
        }
    }

    /**
     * Writes [offset, offset + len) from iov (or zeros when iov is null) through the bounce buffer, reading the
     * partially covered edge blocks first. The caller holds the exclusive lock if the range is unaligned.
     */
    private int writeBounce(long offset, long len, IoVec iov) throws IOException {
        long start = offset & -align;
        long end = alignUp(offset + len);
        ByteBuffer bb = bounce();
        int chunk = bb.capacity();
        for (long c = start; c < end; ) {
            int n = (int) Math.min(chunk, end - c);
            long from = Math.max(c, offset);
            long to = Math.min(c + n, offset + len);
            if (from > c) fillBlock(bb, 0, c);
            if (to < c + n) fillBlock(bb, n - align, c + n - align);
            bb.clear(); // absolute copies below are checked against the limit
            if (iov != null) {
                Buffers.copyFromIov(iov, from - offset, bb, (int) (from - c), (int) (to - from));
            } else {
                Buffers.zero(bb, (int) (from - c), (int) (to - from));
            }
            bb.clear().limit(n);
            while (bb.hasRemaining()) {
                if (fc.write(bb, c + bb.position()) <= 0) return -Errno.EIO;
            }
            c += n;
        }
        return 0;
    }

    /** Reads one block at file position pos into bb[at, at + align), zeros past EOF. */
    private void fillBlock(ByteBuffer bb, int at, long pos) throws IOException {
        int got = readBlocks(bb, at, align, pos);
        if (got < align) Buffers.zero(bb, at + got, align - got);
    }

    /** Reads up to n bytes (aligned) into bb[at, ...) at aligned pos; returns the count, short only at EOF. */
    private int readBlocks(ByteBuffer bb, int at, int n, long pos) throws IOException {
        bb.clear().position(at).limit(at + n);
        while (bb.hasRemaining()) {
            int k = fc.read(bb, pos + (bb.position() - at));
            if (k <= 0 || (bb.hasRemaining() && !isAligned(bb.position()))) break;
        }
        return bb.position() - at;
    }

    private long alignUp(long v) {
        return (v + align - 1) & -align;
    }

    private ByteBuffer bounce() {
        ByteBuffer b = BOUNCE.get();
        if (b == null || b.alignmentOffset(0, align) != 0 || b.capacity() < align) {
            int size = Math.max(BOUNCE_SIZE, align);
            b = ByteBuffer.allocateDirect(size + align).alignedSlice(align);
            b = b.limit(size - size % align).slice();
            BOUNCE.set(b);
        }
        b.clear();
        return b;
    }

    // ----------------------------------------------------------------------------- discard, write zeroes

    /** Discard is advisory: a filesystem that cannot punch holes just keeps the data. */
    private int discard(long offset, long bytes) {
        if (bytes == 0) return 0;
        int ret = fallocate(Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, bytes);
        return ret == -Errno.EOPNOTSUPP ? 0 : ret;
    }

    private int writeZeroes(long offset, long bytes, int flags) throws IOException {
        if (bytes == 0) return 0;
        int ret = -Errno.EOPNOTSUPP;
        if ((flags & BlockBackend.MAY_UNMAP) != 0) {
            // A punched hole reads back as zeros, so it satisfies write-zeroes and frees the space.
            ret = fallocate(Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, bytes);
        }
        if (ret != 0) ret = fallocate(Libc.FALLOC_FL_ZERO_RANGE | Libc.FALLOC_FL_KEEP_SIZE, offset, bytes);
        // Unsupported by the filesystem, or (block devices) not sector-aligned: write the zeros ourselves.
        if (ret == -Errno.EOPNOTSUPP || ret == -Errno.EINVAL) ret = writeZeroBytes(offset, bytes);
        return ret;
    }

    /** The write-zeroes fallback when fallocate cannot zero: writes zeros (package-private for tests). */
    int writeZeroBytes(long offset, long bytes) throws IOException {
        if (direct) {
            boolean rmw = !isAligned(offset) || !isAligned(bytes);
            Lock l = rmw ? exclusive : shared;
            l.lock();
            try {
                return writeBounce(offset, bytes, null);
            } finally {
                l.unlock();
            }
        }
        ByteBuffer z = ZERO_BUF.duplicate();
        long pos = offset;
        long end = offset + bytes;
        while (pos < end) {
            z.clear().limit((int) Math.min(z.capacity(), end - pos));
            while (z.hasRemaining()) {
                int n = fc.write(z, pos);
                if (n <= 0) return -Errno.EIO;
                pos += n;
            }
        }
        return 0;
    }

    /** fallocate on the raw fd, retried on EINTR, under the shared lock so it cannot race an O_DIRECT RMW. */
    private int fallocate(int mode, long offset, long bytes) {
        if (rawFd < 0) return -Errno.EBADF;
        if (direct) shared.lock();
        try {
            while (true) {
                if (Libc.fallocate(rawFd, mode, offset, bytes) == 0) return 0;
                int e = Libc.errno();
                if (e != Errno.EINTR) return -e;
            }
        } finally {
            if (direct) shared.unlock();
        }
    }

    @Override
    public String toString() {
        return "file(" + filename + (direct ? ", O_DIRECT align " + align : "") + (uring ? ", aio=io_uring" : "") + ")";
    }
}
