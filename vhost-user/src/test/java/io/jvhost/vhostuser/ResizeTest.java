package io.jvhost.vhostuser;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserException;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import io.jvhost.vhostuser.frontend.VirtioBlkConfig;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/** block_resize seen from the front-end: CONFIG_CHANGE_MSG on the back-end channel, new capacity, new space usable. */
class ResizeTest extends ExportTestBase {
    static final long OLD = 1 * MIB, NEW = 2 * MIB;

    @Test
    void resizeSendsConfigChangeAndTheNewCapacityIsUsable() throws Exception {
        open(export().nullCo(OLD, 0));
        assertTrue(neg.hasProtocol(PF_BACKEND_REQ));
        DriverQueue q = fe.queue(0);
        assertEquals(OLD / 512, fe.readConfig(VirtioBlkConfig.SIZE_FULL).capacity());
        assertEquals(BLK_S_IOERR, run(q, BlkRequest.write(OLD / 512, new byte[512])).status(), "past the old end");

        ex.blk.truncate(NEW); // a management thread (this one), like QMP block_resize

        VhostUserFrontend.Message m = fe.receiveBackendRequest(T);
        assertEquals(BACKEND_CONFIG_CHANGE_MSG, m.request());
        assertEquals(VERSION, m.flags() & 3);
        assertEquals(0, m.flags() & FLAG_NEED_REPLY, "no reply requested: nothing for the back-end to read");
        assertEquals(0, m.payload().length);
        assertEquals(NEW / 512, fe.readConfig(VirtioBlkConfig.SIZE_FULL).capacity());
        ok(q, BlkRequest.write(OLD / 512, new byte[512]));
        ok(q, BlkRequest.read(NEW / 512 - 1, 512));
        assertEquals(BLK_S_IOERR, run(q, BlkRequest.read(NEW / 512, 512)).status(), "past the new end");

        // Shrinking works the same way.
        ex.blk.truncate(OLD / 2);
        assertEquals(BACKEND_CONFIG_CHANGE_MSG, fe.receiveBackendRequest(T).request());
        assertEquals(OLD / 2 / 512, fe.readConfig(VirtioBlkConfig.SIZE_FULL).capacity());
        assertEquals(BLK_S_IOERR, run(q, BlkRequest.read(OLD / 2 / 512, 512)).status());
    }

    @Test
    void withoutBackendChannelTheCapacityStillChanges() throws Exception {
        open(export().nullCo(OLD, 0), new VhostUserFrontend.Options().backendReq(false));
        ex.blk.truncate(NEW);
        // No channel to notify on; the next config read (e.g. after a guest rescan) has the new size.
        assertEquals(NEW / 512, fe.readConfig(VirtioBlkConfig.SIZE_FULL).capacity());
        ok(fe.queue(0), BlkRequest.write(OLD / 512, new byte[512]));
    }

    @Test
    void resizeWithoutFrontEndIsFine() throws Exception {
        ex = export().nullCo(OLD, 0).start();
        ex.blk.truncate(NEW);
        mem = guest(io.jvhost.vhostuser.frontend.GuestMemory.twoRegions(16 * MIB));
        fe = ex.connect(mem);
        neg = fe.handshake(new VhostUserFrontend.Options());
        assertEquals(NEW / 512, neg.config().capacity());
        VhostUserException e = assertThrows(VhostUserException.class, () -> fe.receiveBackendRequest(Duration.ofMillis(200)),
                "a resize before the connection is not replayed");
        assertTrue(e.getMessage().contains("timed out"), e.getMessage());
    }
}
