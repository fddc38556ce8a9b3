package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserException;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

@Timeout(60)
class HostileFdAndFullQueueTest extends ExportTestBase {

    /** A guest may legally fill its whole ring; the queue must keep serving, never call that "broken". */
    @Test
    void aFullQueueIsServedRoundAfterRound() throws Exception {
        try (TestExport.LogCapture log = new TestExport.LogCapture(BlkQueue.class)) {
            open(export().nullCo(1L << 30, 20_000_000), new VhostUserFrontend.Options().queueSize(8));
            DriverQueue q = fe.queue(0);
            for (int round = 0; round < 5; round++) {
                List<BlkRequest> rs = new ArrayList<>();
                for (int i = 0; i < 8; i++) {
                    BlkRequest r = BlkRequest.read(i * 8L, 512).indirect(true); // one descriptor each: 8 fill the ring
                    q.enqueue(r);
                    rs.add(r);
                }
                q.kick();
                q.awaitAll(rs, T);
                for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status(), r::toString);
            }
            assertEquals(0, log.count("ring broken"), () -> "logged: " + log.messages());
        }
    }

    /** Kick/call/err must be eventfds: a regular file or socket could block or spin an iothread. */
    @Test
    void aKickThatIsNotAnEventfdIsRefused() throws Exception {
        open(export(), new VhostUserFrontend.Options().replyAck(true));
        Path f = Files.createTempFile("not-an-eventfd", ".bin");
        int fd = io.jvhost.iothread.sys.Libc.open(f.toString(), io.jvhost.iothread.sys.Libc.O_RDWR | io.jvhost.iothread.sys.Libc.O_CLOEXEC, 0);
        try {
            VhostUserException e = assertThrows(VhostUserException.class, () -> fe.setVringCall(0, fd));
            assertNotEquals(0, e.ackValue(), "refused with a non-zero REPLY_ACK");
        } finally {
            io.jvhost.iothread.sys.Libc.close(fd);
            Files.delete(f);
        }
        // The connection and the ring still work.
        byte[] d = TestExport.pattern(512, 9);
        ok(fe.queue(0), BlkRequest.write(4, d));
        assertArrayEquals(d, ok(fe.queue(0), BlkRequest.read(4, 512)).data());
    }
}
