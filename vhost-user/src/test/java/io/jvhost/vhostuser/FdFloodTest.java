package io.jvhost.vhostuser;

import io.jvhost.iothread.sys.EventFd;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.Arrays;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * A front-end may attach up to 253 fds (the kernel's SCM_MAX_FD) to one sendmsg. junixsocket's default ancillary
 * buffer holds 60; with more, its read failed with ENOBUFS and the 60 fds the kernel had already installed in our
 * process were lost to us, i.e. leaked, once per message (found by VhostUserMessageFuzzTest). Now every such
 * message is received whole: the fds beyond what the message may carry are closed, the message is served, and
 * the process ends up with the fds it had.
 */
@Timeout(30)
class FdFloodTest extends ExportTestBase {

    @Test
    void messagesWithUpTo253FdsLeakNothing() throws Exception {
        open(export());
        try (EventFd e = EventFd.create()) {
            long before = TestExport.openFds();
            for (int n : new int[] {8, 60, 61, 200, 253}) {
                int[] fds = new int[n];
                Arrays.fill(fds, e.fd());
                assertEquals(0, fe.sendWithAck(SET_OWNER, null, fds), n + " fds on SET_OWNER: served, extras ignored");
                fe.getFeatures(); // a round trip: the back-end has handled (and closed) everything before it
                assertEquals(before, TestExport.openFds(), "after a message with " + n + " fds: " + TestExport.fdTargets());
            }
            // A message that may carry fds, with far too many: refused like any wrong fd count, nothing kept.
            int[] many = new int[253];
            Arrays.fill(many, mem.region(0).fd());
            assertNotEquals(0, fe.sendWithAck(SET_MEM_TABLE, ProtocolErrorTest.le(8 + 32).putInt(1).putInt(0)
                    .put(frontendRegion()).array(), many));
            fe.getFeatures();
            assertEquals(before, TestExport.openFds(), "after SET_MEM_TABLE with 253 fds");
        }
        ok(fe.queue(0), io.jvhost.vhostuser.frontend.BlkRequest.read(0, 4096)); // and the device still serves
    }

    private byte[] frontendRegion() {
        return io.jvhost.vhostuser.frontend.VhostUserFrontend.regionBytes(mem.region(0));
    }
}
