package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.file.Files;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static io.jvhost.vhostuser.QueueStats.Kind.*;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/** Management hooks: per-queue statistics, writethrough start-up mode, non-blocking close. */
@Timeout(60)
class StatsAndCloseTest extends ExportTestBase {
    @Test
    void perQueueStatisticsCountWhatTheGuestDid() throws Exception {
        open(export().numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        DriverQueue q0 = fe.queue(0), q1 = fe.queue(1);
        for (int i = 0; i < 3; i++) ok(q0, BlkRequest.read(i * 8L, 4096));
        for (int i = 0; i < 2; i++) ok(q1, BlkRequest.write(i * 16L, TestExport.pattern(8192, i)));
        ok(q1, BlkRequest.flush());
        ok(q1, BlkRequest.discard(64, 8));
        ok(q0, BlkRequest.writeZeroes(128, 8, false));
        BlkRequest past = run(q0, BlkRequest.read(TestExport.IMAGE_SIZE / 512, 512));
        assertEquals(BLK_S_IOERR, past.status());
        ok(q0, BlkRequest.getId()); // not an I/O kind: not counted

        QueueStats s0 = ex.export.queueStats().get(0), s1 = ex.export.queueStats().get(1);
        // Refused before reaching the block layer (out of range): counted as a failed read with no bytes moved.
        assertEquals(4, s0.operations(READ));
        assertEquals(3 * 4096, s0.bytes(READ), "bytes moved by reads (the refused one moved none)");
        assertEquals(1, s0.failed(READ));
        assertTrue(s0.totalTimeNs(READ) > 0);
        assertEquals(1, s0.operations(WRITE_ZEROES));
        assertEquals(4096, s0.bytes(WRITE_ZEROES));
        assertEquals(0, s0.operations(WRITE));
        assertEquals(2, s1.operations(WRITE));
        assertEquals(2 * 8192, s1.bytes(WRITE));
        assertEquals(1, s1.operations(FLUSH));
        assertEquals(1, s1.operations(DISCARD));
        assertEquals(4096, s1.bytes(DISCARD));
        assertEquals(0, s1.failed(WRITE));
    }

    @Test
    void writethroughExportsStartWithTheCacheOff() throws Exception {
        open(export().writethrough(true));
        assertEquals(0, neg.config().writeback(), "config space writeback field");
        assertFalse(ex.blk.isWriteCacheEnabled());
        fe.setConfig(32, 0, new byte[] {1}); // the driver may still turn it on
        assertTrue(ex.blk.isWriteCacheEnabled());
    }

    @Test
    void closeAsyncFromTheMainLoopDoesNotBlockIt() throws Exception {
        open(export().nullCo(1L << 30, 20_000_000));
        DriverQueue q = fe.queue(0);
        BlkRequest r = BlkRequest.read(0, 4096);
        q.enqueue(r);
        q.kick();
        TestExport.awaitCondition("request in flight", T, () -> ex.node.inFlight() >= 1);
        // Called ON the main loop: must return at once, the loop keeps running, the future completes later.
        CompletableFuture<Void> f = ex.mainLoop.call(() -> ex.export.closeAsync(), 10, TimeUnit.SECONDS);
        assertEquals(42, ex.mainLoop.call(() -> 42, 10, TimeUnit.SECONDS), "main loop still serves tasks");
        f.get(10, TimeUnit.SECONDS);
        q.pollUntil(1, T); // the used ring in guest memory: written before the disconnect
        assertEquals(BLK_S_OK, r.status(), "the in-flight request completed before the disconnect");
        assertFalse(Files.exists(ex.socket), "socket unlinked");
        assertTrue(fe.awaitDisconnect(T));
    }
}
