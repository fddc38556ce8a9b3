package io.jvhost.vhostuser;

import io.jvhost.iothread.sys.EventFd;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.MigrationLog;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Live-migration dirty logging (VHOST_F_LOG_ALL, LOG_SHMFD, SET_LOG_BASE, VHOST_VRING_F_LOG), checked through the
 * front-end's own mapping of the log: exactly the pages the device wrote are marked, with the spec's bit order;
 * toggling logging and swapping logs never halts a ring; hostile log messages are refused.
 */
@Timeout(60)
class DirtyLoggingTest extends ExportTestBase {
    static final long PAGE = 4096;
    MigrationLog log;

    /** Handshake, then the front-end's log for all of guest memory, mapped by the back-end (reply 0). */
    private void openWithLog(TestExport.Builder b) throws Exception {
        openWithLog(b, new VhostUserFrontend.Options());
    }

    private void openWithLog(TestExport.Builder b, VhostUserFrontend.Options o) throws Exception {
        open(b, o);
        assertTrue(neg.hasProtocol(PF_LOG_SHMFD), "LOG_SHMFD negotiated");
        assertTrue((neg.offeredFeatures() & bit(F_LOG_ALL)) != 0, "VHOST_F_LOG_ALL offered");
        log = ex.closeLater(MigrationLog.covering(guestEnd()));
        assertEquals(0, fe.setLogBase(log), "SET_LOG_BASE reply");
    }

    private long guestEnd() {
        long end = 0;
        for (var r : mem.regions()) end = Math.max(end, r.gpaEnd());
        return end;
    }

    private void logAll(boolean on) throws Exception {
        fe.setFeatures(on ? neg.features() | bit(F_LOG_ALL) : neg.features()); // acked: in effect on return
    }

    static void addPages(Set<Long> s, long gpa, long len) {
        for (long p = gpa / PAGE; p <= (gpa + len - 1) / PAGE; p++) s.add(p);
    }

    /** Pages of the request's device-writable data buffers and of its status byte. */
    static SortedSet<Long> writtenPages(BlkRequest r, boolean data) {
        SortedSet<Long> s = new TreeSet<>();
        if (data) for (DriverQueue.Segment seg : r.dataSegments()) addPages(s, seg.gpa(), seg.len());
        addPages(s, r.statusGpa(), 1);
        return s;
    }

    static SortedSet<Long> usedRingPages(long logGpa, int size) {
        SortedSet<Long> s = new TreeSet<>();
        addPages(s, logGpa, 6 + 8L * size);
        return s;
    }

    /** The log holds exactly {@code want}, bit for bit; then it is cleared as QEMU's sync would. */
    private void assertLogIs(Set<Long> want, String what) {
        assertArrayEquals(log.expectedBytes(want), log.bytes(), what + ": log bytes (bit = page % 8 of byte page / 8)");
        assertEquals(new TreeSet<>(want), log.sync(), what);
    }

    @Test
    void exactlyThePagesTheDeviceWroteAreMarked() throws Exception {
        openWithLog(export());
        DriverQueue q = fe.queue(0);
        SortedSet<Long> all = new TreeSet<>();

        // Logging off: a read marks nothing.
        ok(q, BlkRequest.read(0, 4096));
        assertTrue(log.dirtyPages().isEmpty(), "nothing is marked before VHOST_F_LOG_ALL");

        logAll(true);
        // A read whose 3 data descriptors span 4 pages starting mid-page, in region 0 ...
        long g0 = mem.region(0).gpa() + 8 * MIB + 100;
        BlkRequest r = ok(q, BlkRequest.read(16, 12800).dataAt(g0).segmentSizes(4096, 8192, 512));
        SortedSet<Long> want = writtenPages(r, true);
        SortedSet<Long> data = new TreeSet<>();
        for (DriverQueue.Segment seg : r.dataSegments()) addPages(data, seg.gpa(), seg.len());
        assertEquals(Set.of(g0 / PAGE, g0 / PAGE + 1, g0 / PAGE + 2, g0 / PAGE + 3), data, "12800 bytes from 100 bytes into a page");
        assertLogIs(want, "read in region 0");
        all.addAll(want);
        // ... and one in region 1 (1 GiB up), the status byte merged into the last data buffer.
        long g1 = mem.region(1).gpa() + 4 * MIB + PAGE - 8;
        r = ok(q, BlkRequest.read(0, 1024).dataAt(g1).statusInLastData(true));
        want = writtenPages(r, true);
        assertEquals(Set.of(g1 / PAGE, g1 / PAGE + 1), want);
        assertLogIs(want, "read in region 1");
        all.addAll(want);

        // A write only has its status byte written: the data pages (read by the device) stay clean.
        long g2 = mem.region(0).gpa() + 10 * MIB;
        r = ok(q, BlkRequest.write(64, TestExport.pattern(8192, 3)).dataAt(g2).indirect(true));
        want = writtenPages(r, false);
        assertFalse(want.contains(g2 / PAGE));
        assertLogIs(want, "write");
        all.addAll(want);
        // Flush: the status byte only. GET_ID: its buffer and status byte.
        r = ok(q, BlkRequest.flush());
        assertLogIs(writtenPages(r, false), "flush");
        all.addAll(writtenPages(r, false));
        r = ok(q, BlkRequest.getId());
        assertLogIs(writtenPages(r, true), "GET_ID");
        all.addAll(writtenPages(r, true));

        // VHOST_VRING_F_LOG with the used ring's own address (what QEMU sends): the used ring is logged too.
        fe.setVringAddr(q, true);
        r = ok(q, BlkRequest.read(8, 512));
        want = writtenPages(r, true);
        SortedSet<Long> used = usedRingPages(q.usedGpa(), q.size());
        want.addAll(used);
        assertLogIs(want, "read with VHOST_VRING_F_LOG");
        all.addAll(want);

        // The log address need not be the used ring's: writes are logged at log_guest_addr + offset. Placed 512
        // bytes before a page end: used->idx and the first elements are logged in one page, avail_event in the next.
        long logAddr = mem.region(1).gpa() + 12 * MIB + PAGE - 512;
        fe.setVringAddr(q.index(), VRING_ADDR_F_LOG, q.descUaddr(), q.usedUaddr(), q.availUaddr(), logAddr);
        r = ok(q, BlkRequest.read(8, 512));
        want = writtenPages(r, true);
        want.add(logAddr / PAGE);
        SortedSet<Long> got = log.sync();
        assertTrue(got.containsAll(want), got + " contains " + want);
        got.removeAll(want);
        assertTrue(Set.of(logAddr / PAGE + 1).containsAll(got), "only the log address's pages, not the used ring's own: " + got);
        all.addAll(want);
        all.addAll(got);

        // VHOST_VRING_F_LOG off again: data and status only.
        fe.setVringAddr(q, false);
        r = ok(q, BlkRequest.read(8, 512));
        assertLogIs(writtenPages(r, true), "read after VHOST_VRING_F_LOG off");
        all.addAll(writtenPages(r, true));

        // Statistics: distinct pages since the connection started; the used-ring pages are those of both log
        // addresses (all marked: the used ring at logAddr had used->idx and its first elements written).
        DirtyStats st = ex.export.dirtyStats();
        assertEquals(all.size(), st.pagesMarked(), "distinct pages " + all);
        SortedSet<Long> usedAll = usedRingPages(q.usedGpa(), q.size());
        usedAll.addAll(usedRingPages(logAddr, q.size()));
        assertEquals(usedAll.size(), st.usedRingPages());
        long usedMarked = usedAll.stream().filter(all::contains).count();
        assertEquals(usedMarked, st.usedRingPagesMarked());
        assertEquals(0, st.marksOutsideLog());

        // Logging off: nothing more is marked, and the statistics line is logged once, in its fixed format.
        try (TestExport.LogCapture cap = new TestExport.LogCapture(BlkDevice.class)) {
            logAll(false);
            ok(q, BlkRequest.read(0, 8192));
            assertTrue(log.dirtyPages().isEmpty(), "nothing is marked after VHOST_F_LOG_ALL is cleared");
            List<String> lines = cap.messages().stream().filter(m -> m.contains("dirty log:")).toList();
            assertEquals(List.of("export " + ex.cfg.id() + " conn#1: " + st.logText()), lines);
            Matcher m = DirtyStats.LOG_LINE.matcher(lines.get(0));
            assertTrue(m.find());
            assertEquals(all.size(), Long.parseLong(m.group(1)));
            assertEquals(usedMarked, Long.parseLong(m.group(2)));
            assertEquals(usedAll.size(), Long.parseLong(m.group(3)));
        }
    }

    @Test
    void togglingLoggingAndSwappingLogsDoNotHaltRunningRings() throws Exception {
        // 32 requests sit in a slow node; every logging change must be acked while they are still in flight (a
        // ring that was stopped for it would have drained them first).
        openWithLog(export().nullCo(1L << 30, 1_000_000_000L));
        DriverQueue q = fe.queue(0);
        List<BlkRequest> rs = new ArrayList<>();
        for (int i = 0; i < 32; i++) {
            BlkRequest r = BlkRequest.read(i * 8L, 4096);
            q.enqueue(r);
            rs.add(r);
        }
        q.kick();
        TestExport.awaitCondition("32 requests in flight", T, () -> ex.node.inFlight() == 32);
        logAll(true);
        fe.setVringAddr(q, true);
        MigrationLog next = ex.closeLater(MigrationLog.covering(guestEnd()));
        assertEquals(2, mapsOf(log), "before the swap both sides map the first log");
        assertEquals(0, fe.setLogBase(next), "SET_LOG_BASE reply while requests are in flight");
        assertEquals(32, ex.node.inFlight(), "no ring was stopped (drained) for LOG_ALL, F_LOG or the new log");
        assertEquals(0, q.usedIdx());
        assertEquals(1, mapsOf(log), "by the reply every queue switched and the back-end unmapped the old log");

        q.awaitAll(rs, T);
        for (BlkRequest r : rs) assertEquals(BLK_S_OK, r.status());
        // Everything completed after the swap went to the new log only.
        assertTrue(log.dirtyPages().isEmpty(), "the replaced log was not written: " + log.dirtyPages());
        SortedSet<Long> want = usedRingPages(q.usedGpa(), q.size());
        for (BlkRequest r : rs) want.addAll(writtenPages(r, true));
        assertEquals(want, next.dirtyPages());

        // Logging off while 32 more are in flight: acked at once, and their completions mark nothing.
        rs.clear();
        for (int i = 0; i < 32; i++) {
            BlkRequest r = BlkRequest.read(i * 8L, 4096);
            q.enqueue(r);
            rs.add(r);
        }
        q.kick();
        TestExport.awaitCondition("32 requests in flight", T, () -> ex.node.inFlight() == 32);
        // The ring may still be re-enabling notifications (an avail_event write, logged with F_LOG): an acked
        // message that posts to the queue's iothread is a barrier behind that pass.
        fe.setVringAddr(q, true);
        next.sync();
        logAll(false);
        assertEquals(32, ex.node.inFlight(), "LOG_ALL off did not stop the ring");
        q.awaitAll(rs, T);
        assertTrue(next.dirtyPages().isEmpty(), "completions after LOG_ALL off are not logged");
    }

    @Test
    void requestsIssuedContinuouslyAcrossToggles() throws Exception {
        openWithLog(export().nullCo(1L << 30, 200_000L).numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        ExecutorService pool = Executors.newFixedThreadPool(2);
        AtomicBoolean stop = new AtomicBoolean();
        try {
            List<Future<Integer>> drivers = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                DriverQueue q = fe.queue(i);
                drivers.add(pool.submit(() -> drive(q, stop)));
            }
            // While both drivers keep 16 requests in flight: LOG_ALL, F_LOG and the log itself change 100 times.
            for (int round = 0; round < 20; round++) {
                logAll(true);
                for (DriverQueue q : fe.queues()) fe.setVringAddr(q, true);
                assertEquals(0, fe.setLogBase(ex.closeLater(MigrationLog.covering(guestEnd()))));
                for (DriverQueue q : fe.queues()) fe.setVringAddr(q, false);
                logAll(false);
            }
            stop.set(true);
            int total = 0;
            for (Future<Integer> f : drivers) total += f.get(30, TimeUnit.SECONDS);
            assertTrue(total >= 2 * 16, "requests flowed: " + total);
            assertTrue(ex.export.dirtyStats().pagesMarked() > 0);
        } finally {
            stop.set(true);
            pool.shutdownNow();
        }
        // Both rings still serve, nothing broke.
        for (DriverQueue q : fe.queues()) ok(q, BlkRequest.read(0, 512));
    }

    /** Keeps 16 reads in flight until told to stop; every one must complete with OK. Returns how many ran. */
    private static int drive(DriverQueue q, AtomicBoolean stop) throws Exception {
        List<BlkRequest> inFlight = new ArrayList<>();
        int done = 0;
        long sector = 0;
        while (!stop.get() || !inFlight.isEmpty()) {
            while (!stop.get() && inFlight.size() < 16) {
                BlkRequest r = BlkRequest.read((sector++ % 1000) * 8, 4096);
                q.enqueue(r);
                inFlight.add(r);
            }
            q.kick();
            q.awaitUsed(1, T);
            for (var it = inFlight.iterator(); it.hasNext(); ) {
                BlkRequest r = it.next();
                if (!r.isDone()) continue;
                assertEquals(BLK_S_OK, r.status(), r::toString);
                it.remove();
                done++;
            }
        }
        return done;
    }

    @Test
    void hostileLogMessagesAreRefusedAndTheConnectionStaysUsable() throws Exception {
        open(export(), new VhostUserFrontend.Options());
        DriverQueue q = fe.queue(0);
        try (MigrationLog small = MigrationLog.create(4096, 0, 4096);
             MigrationLog odd = MigrationLog.create(4091, 0, 4091);
             EventFd efd = EventFd.create()) {
            long fdsBefore = TestExport.openFds();
            assertNotEquals(0, fe.setLogBase(0, 0, small.fd()), "size 0");
            assertNotEquals(0, fe.setLogBase(1L << 40, 0, small.fd()), "1 TiB of log");
            assertNotEquals(0, fe.setLogBase(-4096, 0, small.fd()), "negative size");
            assertNotEquals(0, fe.setLogBase(4096, 4096, small.fd()), "offset at the end of the fd");
            assertNotEquals(0, fe.setLogBase(4096, Long.MAX_VALUE - 100, small.fd()), "offset + size overflows");
            assertNotEquals(0, fe.setLogBase(8192, 0, small.fd()), "log longer than the fd");
            assertNotEquals(0, fe.setLogBase(4091, 0, odd.fd()), "last 8-byte word past the end of the fd");
            assertNotEquals(0, fe.setLogBase(4096, 0), "no fd");
            assertNotEquals(0, fe.setLogBase(4096, 0, efd.fd()), "an eventfd as log");
            fe.send(SET_LOG_BASE, VERSION, new byte[8], small.fd());
            assertNotEquals(0, fe.receiveReply(SET_LOG_BASE).u64(), "8-byte payload");
            // After a refused log, LOG_ALL is refused too (QEMU ignores SET_LOG_BASE's value but checks this ack).
            assertNotEquals(0, fe.sendWithAck(SET_FEATURES, u64(neg.features() | bit(F_LOG_ALL))), "LOG_ALL without a usable log");
            // SET_LOG_FD needs an eventfd.
            assertNotEquals(0, fe.sendWithAck(SET_LOG_FD, null, small.fd()), "SET_LOG_FD with a memfd");
            assertNotEquals(0, fe.sendWithAck(SET_LOG_FD, null), "SET_LOG_FD without fd");
            fe.getFeatures(); // round trip: every fd above was handled (and closed) by now
            assertEquals(fdsBefore, TestExport.openFds(), "the back-end kept none of the refused fds");
            assertEquals(1, ex.export.connectionCount(), "never disconnected");
            ok(q, BlkRequest.read(0, 4096));

            // A good log afterwards works, LOG_ALL is accepted again, SET_LOG_FD gets signalled.
            log = ex.closeLater(MigrationLog.covering(guestEnd()));
            assertEquals(0, fe.setLogBase(log));
            fe.setLogFd(efd.fd());
            TestExport.Watched w = ex.watch(dup(efd));
            logAll(true);
            BlkRequest r = ok(q, BlkRequest.read(0, 4096));
            assertEquals(writtenPages(r, true), log.dirtyPages());
            assertTrue(w.await(T), "the SET_LOG_FD eventfd is signalled after marking");
        }
        assertEquals(0, ex.export.dirtyStats().marksOutsideLog());
    }

    @Test
    void aLogTooSmallForTheGuestIsCountedNotWrittenOutside() throws Exception {
        open(export(), new VhostUserFrontend.Options());
        DriverQueue q = fe.queue(0);
        // Covers region 0 only (16 MiB = 4096 pages = 512 bytes): writes in region 1 cannot be marked.
        log = ex.closeLater(MigrationLog.create(512, 8, 1024));
        log.fillFile((byte) 0);
        assertEquals(0, fe.setLogBase(log));
        logAll(true);
        BlkRequest r = ok(q, BlkRequest.read(0, 4096).dataAt(mem.region(1).gpa() + MIB).region(1));
        assertEquals(new DirtyStats(0, 0, 0, 2), ex.export.dirtyStats(), "data and status page outside the log, " + r);
        byte[] file = log.fileBytes();
        for (int i = 0; i < file.length; i++) {
            if (i < 8 || i >= 8 + 512) assertEquals(0, file[i], "byte " + i + " outside the log");
        }
        r = ok(q, BlkRequest.read(0, 4096).region(0));
        assertTrue(log.dirtyPages().containsAll(writtenPages(r, true)), "region 0 pages are marked at offset 8");
    }

    @Test
    void refusedLogWhileLoggingDropsTheConnection() throws Exception {
        // The front-end frees its old log when it has the reply, whatever its value: going on would lose marks.
        openWithLog(export());
        logAll(true);
        try (TestExport.LogCapture cap = new TestExport.LogCapture(BlkDevice.class)) {
            assertNotEquals(0, fe.setLogBase(0, 0, log.fd()));
            assertTrue(fe.awaitDisconnect(T), "the back-end closed the connection");
            TestExport.awaitCondition("the statistics line at disconnect", T, () -> cap.contains("dirty log:"));
        }
        VhostUserFrontend fe2 = ex.connect(mem);
        fe2.handshake(new VhostUserFrontend.Options().reuseQueues(List.of(fe.queue(0)), null));
        ok(fe2.queue(0), BlkRequest.read(0, 512));
    }

    @Test
    void disconnectWithLoggingOnLogsTheStatisticsOnce() throws Exception {
        openWithLog(export());
        logAll(true);
        fe.setVringAddr(fe.queue(0), true);
        BlkRequest r = ok(fe.queue(0), BlkRequest.read(0, 4096));
        SortedSet<Long> want = writtenPages(r, true);
        want.addAll(usedRingPages(fe.queue(0).usedGpa(), fe.queue(0).size()));
        try (TestExport.LogCapture cap = new TestExport.LogCapture(BlkDevice.class)) {
            fe.close(); // like a migration source that quits: QEMU stops the rings, then goes away
            TestExport.awaitCondition("disconnect handled", T, () -> cap.contains("dirty log:"));
            assertEquals(1, cap.count("dirty log:"), "one line per logging session");
            assertTrue(cap.contains(": dirty log: " + want.size() + " distinct pages marked (used-ring pages: 1/1)"), cap.messages().toString());
        }
        TestExport.awaitCondition("connection gone", T, () -> ex.export.dirtyStats().pagesMarked() == want.size());
        assertEquals(new DirtyStats(want.size(), 1, 1, 0), ex.export.dirtyStats(), "the last connection's statistics stay readable");
        assertEquals(1, mapsOf(log), "the back-end unmapped the log at disconnect");
    }

    // ------------------------------------------------------------------------------------------ helpers

    static byte[] u64(long v) {
        return ProtocolErrorTest.le(8).putLong(v).array();
    }

    /** How many mappings of this log's memfd the process has (ours is one, the back-end's another). */
    static long mapsOf(MigrationLog l) throws Exception {
        String name = "/memfd:" + l.memfdName() + " ";
        return TestExport.maps().stream().filter(s -> s.contains(name)).count();
    }

    /** A second eventfd object on the same counter (the watcher closes its own copy). */
    private static EventFd dup(EventFd e) {
        return EventFd.adopt(io.jvhost.iothread.sys.Libc.dup(e.fd()));
    }
}
