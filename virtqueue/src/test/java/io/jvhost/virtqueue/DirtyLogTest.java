package io.jvhost.virtqueue;

import static org.junit.jupiter.api.Assertions.*;

import com.sun.jna.Pointer;
import io.jvhost.iothread.sys.Libc;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Future;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The dirty log as the front-end sees it: bits land at {@code log[page / 8] bit page % 8} of the fd, at any log
 * offset, atomically (concurrent markers never lose a bit), never outside the log; hostile geometries are refused.
 * The front-end side reads the memfd through its own mapping, not through DirtyLog.
 */
@Timeout(60)
class DirtyLogTest {

    /** A memfd of {@code len} bytes filled with {@code fill}, plus our own ("front-end") mapping of it. */
    private static final class Fe implements AutoCloseable {
        final int fd;
        final long len;
        final Pointer p;
        final ByteBuffer buf;

        Fe(long len, byte fill) throws IOException {
            this.fd = TestGuest.memfd("jvhost-test-dirty-log", len);
            this.len = len;
            this.p = Libc.mmapOrThrow(len, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
            this.buf = p.getByteBuffer(0, len);
            for (int i = 0; i < len; i++) buf.put(i, fill);
        }

        @Override
        public void close() {
            Libc.munmap(p, len);
            Libc.close(fd);
        }
    }

    @ParameterizedTest(name = "offset {0}")
    @ValueSource(longs = {0, 3, 8, 4096 + 5})
    void bitsLandAtPageDiv8BitPageMod8AndNothingElseChanges(long offset) throws Exception {
        long size = 64;
        try (Fe fe = new Fe(offset + size + 16, (byte) 0x00); DirtyLog log = DirtyLog.map(fe.fd, size, offset)) {
            // Bytes around the log hold a pattern that must survive (the aligned words overlap them).
            for (int i = 0; i < fe.len; i++) if (i < offset || i >= offset + size) fe.buf.put(i, (byte) 0x5a);
            assertEquals(size * 8, log.pages());
            long[] pages = {0, 1, 7, 8, 9, 63, 64, 100, 255, 256, size * 8 - 1};
            for (long p : pages) assertTrue(log.markPage(p), "page " + p);
            byte[] want = new byte[(int) size];
            for (long p : pages) want[(int) (p / 8)] |= (byte) (1 << (p % 8));
            for (int i = 0; i < size; i++) assertEquals(want[i], fe.buf.get((int) offset + i), "log byte " + i);
            for (int i = 0; i < fe.len; i++) {
                if (i < offset || i >= offset + size) assertEquals((byte) 0x5a, fe.buf.get(i), "byte " + i + " outside the log");
            }
            for (long p : pages) assertTrue(log.isMarked(p));
            assertFalse(log.isMarked(2));
            // Outside the log: nothing written, false returned.
            assertFalse(log.markPage(size * 8));
            assertFalse(log.markPage(-1));
            assertFalse(log.markPage(Long.MAX_VALUE));
            for (int i = 0; i < fe.len; i++) {
                if (i < offset || i >= offset + size) assertEquals((byte) 0x5a, fe.buf.get(i), "byte " + i + " after out-of-range marks");
            }
            // Marking again is idempotent; a bit the front-end cleared is set again.
            fe.buf.put((int) offset, (byte) 0);
            assertTrue(log.markPage(1));
            assertEquals(2, fe.buf.get((int) offset));
        }
    }

    @Test
    void concurrentMarkersNeverLoseABitWhileTheFrontEndClears() throws Exception {
        // 4 threads set interleaved bits of the same words (page i goes to thread i % 4), while a "front-end" thread
        // keeps exchanging words with 0 (as QEMU's log sync does) and collects what it took: no bit may be lost.
        long size = 4096;
        int threads = 4;
        try (Fe fe = new Fe(size, (byte) 0); DirtyLog log = DirtyLog.map(fe.fd, size, 0)) {
            java.lang.invoke.VarHandle w = java.lang.invoke.MethodHandles.byteBufferViewVarHandle(long[].class, java.nio.ByteOrder.LITTLE_ENDIAN);
            long[] seen = new long[(int) (size / 8)];
            ExecutorService pool = Executors.newFixedThreadPool(threads + 1);
            try {
                CountDownLatch go = new CountDownLatch(1);
                java.util.concurrent.atomic.AtomicBoolean done = new java.util.concurrent.atomic.AtomicBoolean();
                Future<?> clearer = pool.submit(() -> {
                    go.await();
                    while (!done.get()) {
                        for (int i = 0; i < seen.length; i++) seen[i] |= (long) w.getAndSet(fe.buf, i * 8, 0L);
                    }
                    return null;
                });
                List<Future<?>> markers = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    int id = t;
                    markers.add(pool.submit(() -> {
                        go.await();
                        for (long p = id; p < size * 8; p += threads) assertTrue(log.markPage(p));
                        return null;
                    }));
                }
                go.countDown();
                for (Future<?> f : markers) f.get(30, TimeUnit.SECONDS);
                done.set(true);
                clearer.get(30, TimeUnit.SECONDS);
            } finally {
                pool.shutdownNow();
            }
            for (int i = 0; i < seen.length; i++) seen[i] |= (long) w.getAndSet(fe.buf, i * 8, 0L);
            for (int i = 0; i < seen.length; i++) assertEquals(-1L, seen[i], "word " + i + " lost a bit");
        }
    }

    @Test
    void hostileGeometriesAreRefused() throws Exception {
        try (Fe fe = new Fe(8192, (byte) 0)) {
            assertRefused("size 0", () -> DirtyLog.map(fe.fd, 0, 0));
            assertRefused("negative size", () -> DirtyLog.map(fe.fd, -8, 0));
            assertRefused("huge size", () -> DirtyLog.map(fe.fd, 1L << 40, 0));
            assertRefused("size above the cap", () -> DirtyLog.map(fe.fd, DirtyLog.MAX_SIZE + 8, 0));
            assertRefused("negative offset", () -> DirtyLog.map(fe.fd, 64, -64));
            assertRefused("offset + size overflows", () -> DirtyLog.map(fe.fd, 64, Long.MAX_VALUE - 10));
            assertRefused("offset past the end of the fd", () -> DirtyLog.map(fe.fd, 64, 8192));
            assertRefused("log past the end of the fd", () -> DirtyLog.map(fe.fd, 8192, 8));
            assertRefused("no fd", () -> DirtyLog.map(-1, 64, 0));
            DirtyLog.map(fe.fd, 8192, 0).close(); // the whole file is fine
            DirtyLog.map(fe.fd, 8191, 1).close(); // unaligned, last word still inside
        }
        try (Fe odd = new Fe(8191, (byte) 0)) {
            // The log ends inside the file but its last 8-byte word does not: touching it could SIGBUS.
            assertRefused("last word past the end of the fd", () -> DirtyLog.map(odd.fd, 8191, 0));
            DirtyLog.map(odd.fd, 8184, 0).close();
        }
        int efd = Libc.eventfd(0, Libc.EFD_CLOEXEC);
        try {
            assertRefused("an eventfd", () -> DirtyLog.map(efd, 64, 0));
        } finally {
            Libc.close(efd);
        }
    }

    @Test
    void aTmpfsFileIsAcceptedAndCloseUnmaps() throws Exception {
        Path shm = Files.createTempFile(Path.of("/dev/shm"), "jvhost-dirty-log", ".log");
        try (RandomAccessFile f = new RandomAccessFile(shm.toFile(), "rw")) {
            f.setLength(4096);
            int fd = Libc.open(shm.toString(), Libc.O_RDWR | Libc.O_CLOEXEC, 0);
            DirtyLog log;
            try {
                log = DirtyLog.map(fd, 4096, 0);
            } finally {
                Libc.close(fd); // the mapping outlives the fd
            }
            assertTrue(log.markPage(9));
            byte[] b = new byte[2];
            f.seek(1);
            f.readFully(b, 0, 1);
            assertEquals(2, b[0]);
            log.close();
            log.close();
            assertTrue(log.isClosed());
            assertFalse(log.markPage(9), "a closed log is never touched");
            assertFalse(Files.readAllLines(Path.of("/proc/self/maps")).stream().anyMatch(l -> l.contains(shm.getFileName().toString())),
                    "unmapped");
        } finally {
            Files.delete(shm);
        }
    }

    @Test
    void pageSetCountsDistinctPagesAcrossThreads() throws Exception {
        DirtyPageSet s = new DirtyPageSet();
        assertFalse(s.contains(5));
        assertTrue(s.add(5));
        assertFalse(s.add(5));
        assertTrue(s.contains(5));
        assertTrue(s.add(1L << 35), "a page far away (128 TiB) gets its own chunk");
        assertFalse(s.add(1L << 36), "beyond 256 TiB: not recorded");
        assertFalse(s.add(-1));
        assertEquals(2, s.count());

        DirtyPageSet c = new DirtyPageSet();
        int threads = 4, pages = 200_000;
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            CountDownLatch go = new CountDownLatch(1);
            List<Future<Integer>> fs = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                fs.add(pool.submit(() -> {
                    go.await();
                    int won = 0;
                    for (long p = 0; p < pages; p++) if (c.add(p * 7)) won++; // all threads add the same pages
                    return won;
                }));
            }
            go.countDown();
            int total = 0;
            for (Future<Integer> f : fs) total += f.get(30, TimeUnit.SECONDS);
            assertEquals(pages, total, "each page's 0 -> 1 transition is won by exactly one thread");
            assertEquals(pages, c.count());
        } finally {
            pool.shutdownNow();
        }
    }

    private interface Mapping {
        DirtyLog map() throws IOException;
    }

    private static void assertRefused(String what, Mapping m) {
        IOException e = assertThrows(IOException.class, () -> m.map().close(), what);
        assertNotNull(e.getMessage(), what);
    }
}
