package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * 1000 connect / handshake / disconnect cycles must leave no fd and no mapping behind: the process's open fds
 * (/proc/self/fd) and mappings (/proc/self/maps) return to where they were after one warm-up cycle (junixsocket,
 * netty and JNA open some fds and map libraries lazily at first use). The cycles mix front-ends that only say
 * hello, ones that map memory and leave without starting a ring, and full ones with running queues and I/O that
 * stop in QEMU's ways, change their memory table, or just vanish with requests in flight.
 */
@Timeout(180)
class FdHygieneTest extends ExportTestBase {
    static final int CYCLES = 1000;

    /**
     * Anonymous mapping lines may drift by this much. They belong to the JVM and libc, not to the back-end, which
     * creates no anonymous mappings (it only maps fds the front-end sends): the Java heap, metaspace, the code
     * cache and malloc arenas are reserved ranges whose committed parts grow as the JVM warms up, and each
     * non-contiguous commit splits one /proc/self/maps line into two (observed: +3 over 50 cycles). A leak of one
     * mapping per cycle would add 50. Named mappings (memfds, files, libraries) must match exactly.
     */
    static final int ANON_LINE_TOLERANCE = 10;

    /** What is measured, taken with one idle front-end connected and served (see {@link #snapshot}). */
    record Snapshot(long fds, List<String> fdTargets, int mapLines, long anonLines, List<String> named, long guestBytes) {}

    /** A /proc/self/maps line without a path (address, perms, offset, dev, inode only). */
    static boolean anonymous(String line) {
        return line.trim().split("\\s+").length < 6;
    }

    /** "perms path" of a named mapping: what stays the same however the kernel places or merges it. */
    static String named(String line) {
        String[] f = line.trim().split("\\s+", 6);
        return f[1] + " " + f[5];
    }

    /**
     * Connects a probe front-end and waits for its GET_FEATURES reply: the export accepts a connection only after
     * the previous one is fully torn down (rings stopped, memory unmapped, fds closed), so the reply proves that
     * every earlier cycle is cleaned up. The measurement is taken with the probe still connected, both times.
     */
    private Snapshot snapshot(GuestMemory anyGuest) throws Exception {
        try (VhostUserFrontend probe = VhostUserFrontend.connect(ex.socket, anyGuest)) {
            assertTrue((probe.getFeatures() & bit(F_VERSION_1)) != 0);
            long fds = TestExport.openFds();
            List<String> targets = TestExport.fdTargets();
            List<String> maps = TestExport.maps();
            List<String> named = new ArrayList<>();
            for (String l : maps) if (!anonymous(l)) named.add(named(l));
            java.util.Collections.sort(named);
            long anon = maps.stream().filter(FdHygieneTest::anonymous).count();
            return new Snapshot(fds, targets, maps.size(), anon, named, MemoryTableTest.guestMappedBytes());
        }
    }

    private void cycle(int i) throws Exception {
        try (GuestMemory g = GuestMemory.twoRegions(4 * MIB)) {
            try (VhostUserFrontend f = VhostUserFrontend.connect(ex.socket, g)) {
                if (i % 5 == 3) { // hello and goodbye: no memory, no rings
                    assertTrue((f.getFeatures() & bit(F_VERSION_1)) != 0);
                    return;
                }
                if (i % 5 == 4) { // memory mapped (a table or slots), fds for the rings sent, no ring ever started
                    f.setAckAll(true);
                    long pf = f.getProtocolFeatures();
                    f.setProtocolFeatures(pf & (bit(PF_REPLY_ACK) | bit(PF_CONFIGURE_MEM_SLOTS) | bit(PF_MQ)));
                    f.setOwner();
                    f.setFeatures(bit(F_VERSION_1) | bit(F_PROTOCOL_FEATURES));
                    if (i % 2 == 0) f.setMemTable();
                    else for (GuestMemory.Region r : g.regions()) f.addMemReg(r);
                    try (io.jvhost.iothread.sys.EventFd e = io.jvhost.iothread.sys.EventFd.create()) {
                        f.setVringCall(0, e.fd());
                        f.setVringKick(0, e.fd());
                    }
                    return;
                }
                f.handshake(new VhostUserFrontend.Options().numQueues(2).memSlots(i % 2 == 0).eventIdx(i % 3 != 0));
                for (DriverQueue q : f.queues()) {
                    List<BlkRequest> rs = new ArrayList<>();
                    for (int k = 0; k < 4; k++) rs.add(q.submit(BlkRequest.read(k * 8L, 4096).indirect(k % 2 == 0)));
                    rs.add(q.submit(BlkRequest.write(64, new byte[4096])));
                    q.awaitAll(rs, T);
                    for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());
                }
                if (i % 4 == 1) f.stop();          // QEMU's stop before going away
                if (i % 4 == 2) {                  // stopped rings, then a region removed and added back
                    f.stop();
                    f.remMemReg(g.region(1));
                    f.addMemReg(g.region(1));
                }
                if (i % 4 == 3) {                  // gone with requests still in flight
                    for (int k = 0; k < 8; k++) f.queue(0).submit(BlkRequest.read(k, 512));
                }
            }
        }
    }

    @Test
    void aThousandConnectionCyclesLeaveNoFdOrMappingBehind() throws Exception {
        // null-co without latency: the block layer starts no worker threads, whose stacks would come and go.
        ex = export().nullCo(1L << 30, 0).numQueues(2).start();
        // The fixture's interrupt loop exists while some driver queue does: keep one, so its thread (and stack
        // mappings) do not come and go with each cycle.
        GuestMemory parked = guest(GuestMemory.twoRegions(1 * MIB));
        ex.closeLater(new DriverQueue(parked, 0, 8));

        cycle(0); // warm-up: lazy fds and library mappings of junixsocket, netty, JNA
        Snapshot s0 = snapshot(parked);
        for (int i = 1; i <= CYCLES; i++) cycle(i);
        Snapshot s1 = snapshot(parked);

        assertEquals(s0.fds(), s1.fds(), () -> "open fds after " + CYCLES + " cycles:\n" + diff(s0.fdTargets(), s1.fdTargets()));
        assertEquals(s0.guestBytes(), s1.guestBytes(), "guest memory still mapped after " + CYCLES + " cycles");
        assertEquals(s0.named(), s1.named(), () -> "named mappings after " + CYCLES + " cycles:\n" + diff(s0.named(), s1.named()));
        assertTrue(Math.abs(s1.anonLines() - s0.anonLines()) <= ANON_LINE_TOLERANCE,
                "anonymous mapping lines " + s0.anonLines() + " -> " + s1.anonLines());
        System.out.printf("fd hygiene: fds %d -> %d, maps lines %d -> %d (named %d -> %d, anonymous %d -> %d)%n",
                s0.fds(), s1.fds(), s0.mapLines(), s1.mapLines(), s0.named().size(), s1.named().size(), s0.anonLines(), s1.anonLines());
        assertEquals(CYCLES + 3, ex.export.connectionCount());
    }

    /** Lines only in a or only in b, addresses dropped (for the failure message). */
    static String diff(List<String> a, List<String> b) {
        Map<String, Integer> count = new HashMap<>();
        for (String l : a) count.merge(l, 1, Integer::sum);
        for (String l : b) count.merge(l, -1, Integer::sum);
        StringBuilder sb = new StringBuilder();
        count.forEach((l, n) -> {
            if (n != 0) sb.append(n > 0 ? "- " : "+ ").append(l).append('\n');
        });
        return sb.toString();
    }
}
