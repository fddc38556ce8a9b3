package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class FileDriverTest {
    static final int O_ACCMODE = 3, O_RDONLY = 0, O_RDWR = 2, O_DIRECT = 040000;

    @TempDir
    Path dir;
    BlockNodes nodes;

    @BeforeEach
    void setUp() {
        nodes = new BlockNodes();
    }

    @AfterEach
    void tearDown() {
        nodes.close();
    }

    BlockBackend open(Path p, boolean writable, String... extra) throws BlockException {
        return new BlockBackend(nodes.add(fileOpts("n" + nodes.all().size(), p, extra)), writable);
    }

    @Test
    void roundTripDirectBuffersAcrossSegments() throws Exception {
        Path p = patternFile(dir, "disk.img", 1 << 20);
        BlockBackend blk = open(p, true);
        assertEquals(1 << 20, blk.getLength());
        assertEquals("file", blk.root().driverName());

        // Three odd-sized segments, one of them a slice in the middle of a bigger buffer.
        ByteBuffer a = ByteBuffer.allocateDirect(4096);
        ByteBuffer big = ByteBuffer.allocateDirect(8192);
        big.position(100).limit(100 + 1536);
        ByteBuffer c = ByteBuffer.allocateDirect(8192);
        for (ByteBuffer b : List.of(a, c)) while (b.hasRemaining()) b.put((byte) 0x5a);
        a.clear();
        c.clear();
        for (int i = 100; i < 1636; i++) big.put(i, (byte) 0x6b);
        IoVec w = iov(a, big, c);
        assertEquals(4096 + 1536 + 8192, w.size());
        assertEquals(0, await(cb -> blk.pwritev(65536 + 512, w, 0, cb)));
        // The caller's positions and limits are as they were.
        assertEquals(100, big.position());
        assertEquals(1636, big.limit());
        assertEquals(0, a.position());

        byte[] file = Files.readAllBytes(p);
        for (int i = 0; i < file.length; i++) {
            long rel = i - (65536 + 512);
            byte want = rel < 0 || rel >= w.size() ? pat(i) : rel < 4096 ? (byte) 0x5a : rel < 4096 + 1536 ? (byte) 0x6b : (byte) 0x5a;
            if (file[i] != want) fail("byte " + i + " is " + file[i] + ", expected " + want);
        }

        // Read back something else entirely into fresh segments.
        ByteBuffer r1 = ByteBuffer.allocateDirect(777);
        ByteBuffer r2 = ByteBuffer.allocateDirect(4096);
        r2.position(3);
        ByteBuffer r3 = ByteBuffer.allocate(1000); // heap buffers work too (the JDK copies)
        IoVec r = iov(r1, r2, r3);
        long off = 300_001;
        assertEquals(0, await(cb -> blk.preadv(off, r, cb)));
        assertEquals(3, r2.position());
        byte[] got = new byte[(int) r.size()];
        ByteBuffer all = ByteBuffer.wrap(got);
        all.put(bytes(r1)).put(bytes(r2)).put(bytes(r3));
        for (int i = 0; i < got.length; i++) assertEquals(pat(off + i), got[i], "read byte " + i);
    }

    @Test
    void readPastEofOfShrunkFileGivesZeros() throws Exception {
        Path p = patternFile(dir, "shrink.img", 16384);
        BlockBackend blk = open(p, false, "read-only", "on");
        try (var ch = java.nio.channels.FileChannel.open(p, java.nio.file.StandardOpenOption.WRITE)) {
            ch.truncate(10000); // behind the node's back; the node keeps its length
        }
        ByteBuffer b = ByteBuffer.allocateDirect(8192);
        while (b.hasRemaining()) b.put((byte) 0x77);
        b.clear();
        assertEquals(0, await(cb -> blk.preadv(8192, iov(b), cb)));
        for (int i = 0; i < 8192; i++) assertEquals(i < 10000 - 8192 ? pat(8192 + i) : 0, b.get(i), "byte " + i);
    }

    @Test
    void outOfRangeAndNegativeAreRefusedWithoutTouchingAnything() throws Exception {
        Path p = patternFile(dir, "r.img", 8192);
        BlockBackend blk = open(p, true);
        ByteBuffer b = ByteBuffer.allocateDirect(1024);
        while (b.hasRemaining()) b.put((byte) 0x11);
        b.clear();
        assertEquals(-Errno.EIO, await(cb -> blk.preadv(8192 - 512, iov(b), cb)));
        assertEquals(-Errno.EIO, await(cb -> blk.preadv(Long.MAX_VALUE, iov(b), cb)));
        assertEquals(-Errno.EINVAL, await(cb -> blk.preadv(-512, iov(b), cb)));
        assertEquals(-Errno.EIO, await(cb -> blk.pwritev(8192 - 512, iov(b), 0, cb)));
        assertEquals(-Errno.EIO, await(cb -> blk.pwritev(Long.MAX_VALUE - 100, iov(b), 0, cb)));
        assertEquals(-Errno.EINVAL, await(cb -> blk.pwritev(-1, iov(b), 0, cb)));
        assertEquals(-Errno.EINVAL, await(cb -> blk.pwritev(0, iov(b), 0x80, cb)), "unknown flag");
        assertEquals(-Errno.EIO, await(cb -> blk.pdiscard(4096, 4097, cb)));
        assertEquals(-Errno.EINVAL, await(cb -> blk.pdiscard(0, -1, cb)));
        assertEquals(-Errno.EIO, await(cb -> blk.pwriteZeroes(1, Long.MAX_VALUE, 0, cb)));
        assertEquals(-Errno.EINVAL, await(cb -> blk.pwriteZeroes(-4096, 4096, 0, cb)));
        assertEquals(-Errno.EINVAL, await(cb -> blk.preadv(0, iov(ByteBuffer.allocate(16).asReadOnlyBuffer()), cb)),
                "read into a read-only buffer");
        for (int i = 0; i < 1024; i++) assertEquals(0x11, b.get(i));
        byte[] file = Files.readAllBytes(p);
        assertEquals(8192, file.length);
        for (int i = 0; i < file.length; i++) assertEquals(pat(i), file[i]);
        // Exactly at the end is fine (zero length), and the last byte is reachable.
        ByteBuffer one = ByteBuffer.allocate(1);
        assertEquals(0, await(cb -> blk.preadv(8191, iov(one), cb)));
        assertEquals(pat(8191), one.get(0));
        assertEquals(0, await(cb -> blk.preadv(8192, new IoVec(0), cb)));
        blk.root().awaitIdle(TIMEOUT_S, TimeUnit.SECONDS); // the callback completed the future; the count drops just after
        assertEquals(0, blk.root().inFlight());
    }

    @Test
    void readOnlyNodeIsOpenedReadOnlyAndRefusesWrites() throws Exception {
        Path p = patternFile(dir, "ro.img", 8192);
        Files.setPosixFilePermissions(p, PosixFilePermissions.fromString("r--r--r--"));
        BlockDriverState bs = nodes.add(fileOpts("ro", p, "read-only", "on"));
        assertTrue(bs.isReadOnly());
        List<Integer> flags = openFlags(p);
        assertFalse(flags.isEmpty(), "node holds no fd on the image");
        for (int f : flags) assertEquals(O_RDONLY, f & O_ACCMODE, "fd flags 0" + Integer.toOctalString(f));

        assertThrows(IllegalArgumentException.class, () -> new BlockBackend(bs, true));
        BlockBackend blk = new BlockBackend(bs, false);
        assertFalse(blk.isWritable());
        ByteBuffer b = ByteBuffer.allocateDirect(512);
        assertEquals(-Errno.EPERM, await(cb -> blk.pwritev(0, iov(b), 0, cb)));
        assertEquals(-Errno.EPERM, await(cb -> blk.pdiscard(0, 512, cb)));
        assertEquals(-Errno.EPERM, await(cb -> blk.pwriteZeroes(0, 512, BlockBackend.MAY_UNMAP, cb)));
        // The node itself refuses too (a writable backend cannot exist on it, but jobs will talk to nodes).
        assertEquals(-Errno.EPERM, await(cb -> bs.pwritev(0, iov(b), 0, cb)));
        assertEquals(0, await(cb -> blk.preadv(512, iov(b), cb)));
        for (int i = 0; i < 512; i++) assertEquals(pat(512 + i), b.get(i));
        assertEquals(0, await(blk::flush));
        for (int i = 0; i < 8192; i++) assertEquals(pat(i), Files.readAllBytes(p)[i]);

        if (!Files.isWritable(p)) {
            // Non-root: a writable node on a 0444 file must fail to open instead of silently degrading.
            BlockException e = assertThrows(BlockException.class, () -> nodes.add(fileOpts("rw", p)));
            assertTrue(e.getMessage().contains(p.toString()), e.getMessage());
        }
    }

    @Test
    void writableNodeOnReadOnlyBackendRefusesWrites() throws Exception {
        Path p = patternFile(dir, "rwro.img", 4096);
        BlockBackend blk = open(p, false);
        assertFalse(blk.root().isReadOnly());
        List<Integer> flags = openFlags(p);
        assertTrue(flags.stream().anyMatch(f -> (f & O_ACCMODE) == O_RDWR), flags.toString());
        assertEquals(-Errno.EPERM, await(cb -> blk.pwritev(0, iov(ByteBuffer.allocate(512)), 0, cb)));
        assertEquals(pat(0), Files.readAllBytes(p)[0]);
    }

    @Test
    void discardPunchesAHole() throws Exception {
        int len = 4 << 20;
        Path p = patternFile(dir, "discard.img", len);
        BlockBackend blk = open(p, true);
        assertEquals(0, await(blk::flush));
        long before = allocatedBlocks(p);
        assertTrue(before >= len / 512, "file not allocated: " + before);

        assertEquals(0, await(cb -> blk.pdiscard(1 << 20, 2 << 20, cb)));
        assertEquals(0, await(blk::flush));
        long after = allocatedBlocks(p);
        assertTrue(after <= before - (2 << 20) / 512, "blocks " + before + " -> " + after);
        assertEquals(len, Files.size(p), "KEEP_SIZE");

        byte[] file = Files.readAllBytes(p);
        for (int i = 0; i < len; i++) {
            byte want = i >= (1 << 20) && i < (3 << 20) ? 0 : pat(i);
            if (file[i] != want) fail("byte " + i);
        }
        assertEquals(0, await(cb -> blk.pdiscard(0, 0, cb)), "empty discard");
    }

    @Test
    void writeZeroesZeroesWithAndWithoutUnmap() throws Exception {
        int len = 1 << 20;
        Path p = patternFile(dir, "zero.img", len);
        BlockBackend blk = open(p, true);
        assertEquals(0, await(cb -> blk.pwriteZeroes(1000, 5000, 0, cb)));                         // ZERO_RANGE
        assertEquals(0, await(cb -> blk.pwriteZeroes(65536, 131072, BlockBackend.MAY_UNMAP, cb)));  // hole
        assertEquals(0, await(cb -> blk.pwriteZeroes(300_000, 4096, BlockBackend.FUA, cb)));
        byte[] file = Files.readAllBytes(p);
        assertEquals(len, file.length);
        for (int i = 0; i < len; i++) {
            boolean zero = (i >= 1000 && i < 6000) || (i >= 65536 && i < 65536 + 131072) || (i >= 300_000 && i < 304_096);
            if (file[i] != (zero ? 0 : pat(i))) fail("byte " + i);
        }
    }

    @Test
    void directIoUnalignedRequestsGoThroughTheBounceBuffer() throws Exception {
        int len = 1 << 20;
        Path p = patternFile(dir, "direct.img", len);
        BlockBackend blk = open(p, true, "cache.direct", "on");
        List<Integer> flags = openFlags(p);
        assertTrue(flags.stream().anyMatch(f -> (f & O_DIRECT) != 0), "no O_DIRECT fd: " + flags);

        // 512 bytes at offset 512 into a buffer that is not 4096-aligned.
        ByteBuffer base = alignedDirect(8192);
        ByteBuffer unaligned = base.position(512).limit(1024).slice();
        assertEquals(0, await(cb -> blk.preadv(512, iov(unaligned), cb)));
        for (int i = 0; i < 512; i++) assertEquals(pat(512 + i), unaligned.get(i), "byte " + i);

        // Unaligned write of 512 bytes at 1536: read-modify-write must keep its neighbours.
        ByteBuffer w = ByteBuffer.allocate(512);
        Arrays.fill(w.array(), (byte) 0xee);
        assertEquals(0, await(cb -> blk.pwritev(1536, iov(w), 0, cb)));

        // A long unaligned multi-segment write crossing bounce chunks, and its read-back.
        ByteBuffer s1 = ByteBuffer.allocateDirect(1000), s2 = ByteBuffer.allocate(200_000), s3 = ByteBuffer.allocateDirect(99_999);
        IoVec big = iov(s1, s2, s3);
        ThreadLocalRandom rnd = ThreadLocalRandom.current();
        byte[] data = new byte[(int) big.size()];
        rnd.nextBytes(data);
        Buffers.copyToIov(big, 0, ByteBuffer.wrap(data), 0, data.length);
        long bigOff = 200_000 + 3;
        assertEquals(0, await(cb -> blk.pwritev(bigOff, big, BlockBackend.FUA, cb)));

        // Aligned request, aligned buffer: the direct fast path.
        ByteBuffer al = alignedDirect(8192);
        for (int i = 0; i < 8192; i++) al.put(i, (byte) 0x3c);
        assertEquals(0, await(cb -> blk.pwritev(40960, iov(al), 0, cb)));

        // Unaligned write-zeroes on O_DIRECT (fallocate or the bounce fallback).
        assertEquals(0, await(cb -> blk.pwriteZeroes(700_001, 3000, 0, cb)));

        byte[] file = Files.readAllBytes(p);
        assertEquals(len, file.length, "RMW must not change the size");
        for (int i = 0; i < len; i++) {
            byte want = pat(i);
            if (i >= 1536 && i < 2048) want = (byte) 0xee;
            if (i >= 40960 && i < 40960 + 8192) want = 0x3c;
            if (i >= bigOff && i < bigOff + data.length) want = data[(int) (i - bigOff)];
            if (i >= 700_001 && i < 703_001) want = 0;
            if (file[i] != want) fail("byte " + i + " is " + file[i] + ", expected " + want);
        }

        ByteBuffer r1 = ByteBuffer.allocateDirect(12_345), r2 = alignedDirect(200_000).position(1).slice();
        IoVec back = iov(r1, r2);
        assertEquals(0, await(cb -> blk.preadv(bigOff - 5, back, cb)));
        byte[] got = new byte[(int) back.size()];
        Buffers.copyFromIov(back, 0, ByteBuffer.wrap(got), 0, got.length);
        for (int i = 0; i < got.length; i++) assertEquals(file[(int) (bigOff - 5 + i)], got[i], "read-back " + i);
    }

    @Test
    void directIoConcurrentSubBlockWritesLoseNoUpdate() throws Exception {
        Path p = patternFile(dir, "rmw.img", 64 * 1024);
        BlockBackend blk = open(p, true, "cache.direct", "on");
        // 128 sectors of 512 bytes: 8 per 4 KiB block, all written at once so RMWs of one block would collide.
        int n = 128;
        AtomicInteger errors = new AtomicInteger();
        CompletableFuture<Void> all = new CompletableFuture<>();
        AtomicInteger left = new AtomicInteger(n);
        for (int s = 0; s < n; s++) {
            ByteBuffer b = ByteBuffer.allocateDirect(512);
            for (int i = 0; i < 512; i++) b.put(i, (byte) (s + 1));
            blk.pwritev(s * 512L, iov(b), 0, ret -> {
                if (ret != 0) errors.incrementAndGet();
                if (left.decrementAndGet() == 0) all.complete(null);
            });
        }
        all.get(TIMEOUT_S, TimeUnit.SECONDS);
        assertEquals(0, errors.get());
        byte[] file = Files.readAllBytes(p);
        for (int i = 0; i < n * 512; i++) assertEquals((byte) (i / 512 + 1), file[i], "byte " + i);
        blk.root().awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
    }

    @Test
    void directIoOnReadOnlyUnalignedSizeFile() throws Exception {
        Path p = patternFile(dir, "odd.img", 10_000);
        BlockBackend blk = open(p, false, "read-only", "on", "cache.direct", "on");
        ByteBuffer b = ByteBuffer.allocateDirect(10_000 - 8191);
        assertEquals(0, await(cb -> blk.preadv(8191, iov(b), cb)));
        for (int i = 0; i < b.capacity(); i++) assertEquals(pat(8191 + i), b.get(i));
        // Writable O_DIRECT on a size that is not a block multiple is refused at open (JDK can't write the tail).
        BlockException e = assertThrows(BlockException.class,
                () -> nodes.add(fileOpts("oddrw", p, "cache.direct", "on")));
        assertTrue(e.getMessage().contains("cache.direct"), e.getMessage());
    }

    @Test
    void zeroWritingFallbackWorksBufferedAndDirect() throws Exception {
        int len = 1 << 20;
        for (String direct : new String[] {"off", "on"}) {
            Path p = patternFile(dir, "zf-" + direct + ".img", len);
            BlockBackend blk = open(p, true, "cache.direct", direct);
            FileDriver drv = (FileDriver) blk.root().driver();
            // Unaligned, longer than the bounce and zero buffers; then an aligned one.
            assertEquals(0, drv.writeZeroBytes(1001, 300_000));
            assertEquals(0, drv.writeZeroBytes(512 * 1024, 8192));
            byte[] file = Files.readAllBytes(p);
            assertEquals(len, file.length);
            for (int i = 0; i < len; i++) {
                boolean zero = (i >= 1001 && i < 301_001) || (i >= 512 * 1024 && i < 512 * 1024 + 8192);
                if (file[i] != (zero ? 0 : pat(i))) fail("cache.direct=" + direct + ": byte " + i);
            }
        }
    }

    @Test
    void writethroughModeStillWritesAndFlushes() throws Exception {
        Path p = patternFile(dir, "wt.img", 65536);
        BlockBackend blk = open(p, true);
        assertTrue(blk.isWriteCacheEnabled());
        blk.setWriteCacheEnabled(false);
        assertFalse(blk.isWriteCacheEnabled());
        ByteBuffer b = ByteBuffer.allocateDirect(4096);
        for (int i = 0; i < 4096; i++) b.put(i, (byte) 9);
        assertEquals(0, await(cb -> blk.pwritev(4096, iov(b), 0, cb)));
        assertEquals(0, await(cb -> blk.pwriteZeroes(0, 4096, 0, cb)));
        byte[] file = Files.readAllBytes(p);
        for (int i = 0; i < 8192; i++) assertEquals(i < 4096 ? 0 : 9, file[i]);
    }

    @Test
    void closedBackendAndNodeFailRequests() throws Exception {
        Path p = patternFile(dir, "c.img", 4096);
        BlockBackend blk = open(p, true);
        blk.close();
        assertEquals(-Errno.ENOMEDIUM, await(cb -> blk.preadv(0, iov(ByteBuffer.allocate(1)), cb)));
        assertEquals(-Errno.ENOMEDIUM, await(cb -> blk.pwritev(0, iov(ByteBuffer.allocate(1)), 0, cb)));
        BlockBackend blk2 = new BlockBackend(blk.root(), true);
        blk2.root().close();
        assertEquals(-Errno.ENOMEDIUM, await(cb -> blk2.preadv(0, iov(ByteBuffer.allocate(1)), cb)));
        assertEquals(-Errno.ENOMEDIUM, await(blk2::flush));
        assertTrue(openFlags(p).isEmpty(), "fds left open after close");
        blk2.root().awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
        assertEquals(0, blk2.root().inFlight());
    }

    @Test
    void blockNodesCloseClosesFiles() throws Exception {
        Path p = patternFile(dir, "nc.img", 4096);
        nodes.add(fileOpts("a", p));
        nodes.add(fileOpts("b", p, "read-only", "on", "force-share", "on")); // coexists with writer a
        assertEquals(2, nodes.all().size());
        assertFalse(openFlags(p).isEmpty());
        nodes.close();
        assertTrue(openFlags(p).isEmpty());
        assertTrue(nodes.all().isEmpty());
        assertNull(nodes.get("a"));
    }
}
