package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import io.jvhost.iothread.AioContext;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class NullCoTest {
    final BlockNodes nodes = new BlockNodes();

    @AfterEach
    void tearDown() {
        nodes.close();
    }

    @Test
    void readsLeaveBuffersUntouchedByDefaultAndZeroWithReadZeroes() throws Exception {
        BlockBackend plain = new BlockBackend(nodes.add(Map.of("driver", "null-co", "node-name", "a", "size", "1G")), true);
        BlockBackend zeroes = new BlockBackend(nodes.add(Map.of("driver", "null-co", "node-name", "b", "size", "1073741824",
                "read-zeroes", "on")), true);
        assertEquals(1L << 30, plain.getLength());
        assertEquals(1L << 30, zeroes.getLength());
        assertEquals("null-co", plain.root().driverName());

        ByteBuffer x = ByteBuffer.allocateDirect(100_000);
        ByteBuffer y = ByteBuffer.allocate(1000);
        for (ByteBuffer b : new ByteBuffer[] {x, y}) for (int i = 0; i < b.capacity(); i++) b.put(i, (byte) 0xa5);
        y.position(10).limit(990);

        assertEquals(0, await(cb -> plain.preadv(512, iov(x, y), cb)));
        for (int i = 0; i < x.capacity(); i++) assertEquals((byte) 0xa5, x.get(i));
        assertEquals(0, await(cb -> zeroes.preadv(512, iov(x, y), cb)));
        for (int i = 0; i < x.capacity(); i++) assertEquals(0, x.get(i));
        ByteBuffer whole = y.duplicate().clear();
        for (int i = 0; i < y.capacity(); i++) assertEquals(i >= 10 && i < 990 ? 0 : (byte) 0xa5, whole.get(i), "y " + i);
        assertEquals(10, y.position());
        assertEquals(990, y.limit());

        // Writes are discarded and succeed; ranges are still checked.
        assertEquals(0, await(cb -> zeroes.pwritev(0, iov(x), BlockBackend.FUA, cb)));
        assertEquals(0, await(cb -> zeroes.pdiscard(0, 1 << 20, cb)));
        assertEquals(0, await(cb -> zeroes.pwriteZeroes(0, 1 << 20, BlockBackend.MAY_UNMAP, cb)));
        assertEquals(-Errno.EIO, await(cb -> zeroes.preadv((1L << 30) - 10, iov(x), cb)));
    }

    @Test
    void latencyUsesTheSubmittingContextsTimer() throws Exception {
        long latencyNs = 80_000_000L;
        BlockDriverState bs = nodes.add(Map.of("driver", "null-co", "node-name", "slow", "size", "1M",
                "latency-ns", Long.toString(latencyNs)));
        BlockBackend blk = new BlockBackend(bs, true);
        try (AioContext io = AioContext.newIoThread("test-null-io")) {
            CompletableFuture<Long> elapsed = new CompletableFuture<>();
            CompletableFuture<AioContext> where = new CompletableFuture<>();
            io.execute(() -> {
                long t0 = System.nanoTime();
                blk.preadv(0, iov(ByteBuffer.allocate(512)), ret -> {
                    where.complete(AioContext.current());
                    elapsed.complete(System.nanoTime() - t0);
                });
            });
            assertTrue(elapsed.get(TIMEOUT_S, TimeUnit.SECONDS) >= latencyNs);
            assertSame(io, where.get(TIMEOUT_S, TimeUnit.SECONDS));
        }
        // Plain thread: the pool's timer.
        long t0 = System.nanoTime();
        assertEquals(0, await(blk::flush));
        assertTrue(System.nanoTime() - t0 >= latencyNs);
        bs.awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
    }

    @Test
    void inFlightCoversTheLatency() throws Exception {
        BlockDriverState bs = nodes.add(Map.of("driver", "null-co", "node-name", "slow", "size", "1M",
                "latency-ns", "200000000"));
        BlockBackend blk = new BlockBackend(bs, true);
        CompletableFuture<Integer> f = new CompletableFuture<>();
        blk.flush(f::complete);
        assertEquals(1, bs.inFlight());
        bs.awaitIdle(TIMEOUT_S, TimeUnit.SECONDS);
        assertTrue(f.isDone(), "idle before the callback ran");
        assertEquals(0, f.get());
    }

    @Test
    void sizeSuffixes() throws Exception {
        assertEquals(512, BlockNodes.parseSize("size", "512"));
        assertEquals(512, BlockNodes.parseSize("size", "512B"));
        assertEquals(64 << 10, BlockNodes.parseSize("size", "64K"));
        assertEquals(64 << 10, BlockNodes.parseSize("size", "64k"));
        assertEquals(3L << 20, BlockNodes.parseSize("size", "3M"));
        assertEquals(1L << 30, BlockNodes.parseSize("size", "1G"));
        assertEquals(2L << 40, BlockNodes.parseSize("size", "2T"));
        for (String bad : new String[] {"", "G", "-1", "1.5G", "1X", "0x10", "99999999999999999999", "9000000E"}) {
            BlockException e = assertThrows(BlockException.class, () -> BlockNodes.parseSize("size", bad), bad);
            assertTrue(e.getMessage().contains("'size'"), e.getMessage());
        }
    }
}
