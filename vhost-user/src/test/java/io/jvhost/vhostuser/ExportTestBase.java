package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.BLK_S_OK;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** One in-process export and one guest per test; everything is closed after the test. */
abstract class ExportTestBase {
    static final Duration T = TestExport.T;
    static final long MIB = 1L << 20;

    @TempDir
    Path dir;
    TestExport ex;
    GuestMemory mem;
    VhostUserFrontend fe;
    VhostUserFrontend.Negotiated neg;
    private final List<GuestMemory> guests = new ArrayList<>();

    @AfterEach
    void closeExport() {
        if (ex != null) ex.close(); // front-ends first (registered with it), then export, loops, nodes
        for (GuestMemory g : guests) g.close();
    }

    TestExport.Builder export() {
        return TestExport.builder(dir);
    }

    /** A guest that is closed after the test (after the export, so the back-end never outlives its mappings' use). */
    GuestMemory guest(GuestMemory g) {
        guests.add(g);
        return g;
    }

    /** Starts the export, creates a two-region guest and runs the QEMU 7.2 handshake with {@code o}. */
    void open(TestExport.Builder b, VhostUserFrontend.Options o) throws Exception {
        ex = b.start();
        mem = guest(GuestMemory.twoRegions(16 * MIB));
        fe = ex.connect(mem);
        neg = fe.handshake(o);
    }

    void open(TestExport.Builder b) throws Exception {
        open(b, new VhostUserFrontend.Options());
    }

    static BlkRequest ok(DriverQueue q, BlkRequest r) throws Exception {
        q.await(q.submit(r), T);
        assertEquals(BLK_S_OK, r.status(), r::toString);
        return r;
    }

    static BlkRequest run(DriverQueue q, BlkRequest r) throws Exception {
        return q.await(q.submit(r), T);
    }
}
