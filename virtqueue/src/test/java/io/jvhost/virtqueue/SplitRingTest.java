package io.jvhost.virtqueue;

import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_INDIRECT;
import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_NEXT;
import static io.jvhost.virtqueue.SplitRing.VIRTQ_DESC_F_WRITE;
import static io.jvhost.virtqueue.TestGuest.*;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class SplitRingTest {
    static final int N = VIRTQ_DESC_F_NEXT, W = VIRTQ_DESC_F_WRITE, I = VIRTQ_DESC_F_INDIRECT;
    static final long DESC = A_GPA + 0x1000, AVAIL = A_GPA + 0x2000, USED = A_GPA + 0x3000;
    static final long BUF = A_GPA + 0x10000; // driver buffers
    static final long GAP = B_GPA + B_SIZE + 0x1000; // unmapped guest-physical address

    private TestGuest g;

    @BeforeEach
    void setUp() throws Exception {
        g = new TestGuest();
    }

    @AfterEach
    void tearDown() {
        g.close();
    }

    private TestGuest.Driver driver(int size, int start) {
        return g.new Driver(size, DESC, AVAIL, USED, start);
    }

    private SplitRing ring(int size, boolean eventIdx, int start) throws RingException {
        return new SplitRing(g.mem, size, DESC, AVAIL, USED, eventIdx, start);
    }

    @Test
    void constructorValidatesGeometry() {
        for (int bad : new int[] {0, -1, 3, 12, 65536, 1 << 16 | 1}) {
            assertThrows(RingException.class, () -> ring(bad, false, 0), "size " + bad);
        }
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, DESC + 8, AVAIL, USED, false, 0), "desc align 16");
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, DESC, AVAIL + 1, USED, false, 0), "avail align 2");
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, DESC, AVAIL, USED + 2, false, 0), "used align 4");
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, GAP, AVAIL, USED, false, 0), "desc unmapped");
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, DESC, GAP, USED, false, 0), "avail unmapped");
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, DESC, AVAIL, GAP, false, 0), "used unmapped");
        long end = B_GPA + B_SIZE;
        // Each area ends 2 bytes past the end of B (the event field is included in the checked size).
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, end - 16 * 8 + 16, AVAIL, USED, false, 0));
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, DESC, end - (6 + 2 * 8) + 2, USED, false, 0));
        assertThrows(RingException.class, () -> new SplitRing(g.mem, 8, DESC, AVAIL, end - (6 + 8 * 8) + 2, false, 0));
        assertThrows(RingException.class, () -> ring(8, false, 65536), "next avail idx is a u16");
        assertThrows(RingException.class, () -> ring(8, false, -1));
        assertDoesNotThrow(() -> new SplitRing(g.mem, 8, end - 16 * 8, end - 4096, end - 2048, false, 0));
        assertDoesNotThrow(() -> ring(32768, true, 65535));
        assertDoesNotThrow(() -> ring(1, false, 0));
    }

    @Test
    void popsASimpleChainAndPublishesTheUsedElement() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, false, 0);
        assertFalse(r.hasAvailable());
        DescChain c = new DescChain(16);
        assertFalse(r.pop(c));

        d.desc(5, BUF, 16, N, 2);
        d.desc(2, BUF + 0x1000, 4096, N | W, 7);
        d.desc(7, BUF + 0x3000, 1, W, 0);
        d.offer(5);
        assertTrue(r.hasAvailable());
        assertTrue(r.pop(c));
        assertEquals(5, c.head());
        assertEquals(3, c.count());
        assertEquals(1, c.readableCount());
        assertEquals(2, c.writableCount());
        assertEquals(BUF, c.addr(0));
        assertEquals(16, c.len(0));
        assertFalse(c.writable(0));
        assertEquals(BUF + 0x1000, c.addr(1));
        assertTrue(c.writable(1));
        assertEquals(4096, c.len(1));
        assertEquals(BUF + 0x3000, c.addr(2));
        assertEquals(1, c.len(2));
        assertEquals(16, c.readableBytes());
        assertEquals(4097, c.writableBytes());
        assertThrows(IndexOutOfBoundsException.class, () -> c.addr(3));
        assertEquals(1, r.lastAvailIdx());
        assertEquals(1, r.inFlight());
        assertFalse(r.hasAvailable());
        assertFalse(r.pop(c));

        r.push(5, 4097);
        assertEquals(1, r.lastUsedIdx());
        assertEquals(0, d.usedIdx(), "push does not publish");
        assertEquals(5, d.usedId(0));
        assertEquals(4097, d.usedLen(0));
        r.publish();
        assertEquals(1, d.usedIdx());
        assertEquals(0, r.inFlight());
        assertThrows(RingException.class, () -> r.push(5, 1), "nothing in flight");
    }

    @Test
    void everyUsedRingWriteIsReportedWithItsOffset() throws Exception {
        // Without EVENT_IDX: used->flags (NO_NOTIFY toggles), elements, idx.
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, false, 0);
        List<long[]> writes = new ArrayList<>();
        r.setUsedWriteLog((off, len) -> writes.add(new long[] {off, len}));
        d.desc(3, BUF, 16, 0, 0);
        d.offer(3);
        r.disableNotification();
        assertTrue(r.pop(new DescChain(4)));
        assertFalse(r.enableNotification());
        r.push(3, 0);
        r.publish();
        assertEquals(List.of("0+2", "0+2", "4+8", "2+2"), describe(writes), "flags set, flags cleared, ring[0], idx");

        // With EVENT_IDX: avail_event instead of flags; element slots wrap with the ring.
        d = driver(4, 5);
        r = ring(4, true, 5);
        writes.clear();
        r.setUsedWriteLog((off, len) -> writes.add(new long[] {off, len}));
        d.desc(1, BUF, 16, 0, 0);
        d.offer(1);
        assertTrue(r.pop(new DescChain(4)));
        r.push(1, 7);
        r.publish();
        long availEvent = 4 + 8 * 4;
        assertEquals(availEvent, r.availEventOffset());
        assertEquals(List.of(availEvent + "+2", availEvent + "+2", (4 + 8 * (5 % 4)) + "+8", "2+2"), describe(writes),
                "avail_event (priming, pop), ring[5 % 4], idx");
        r.setUsedWriteLog(null);
        writes.clear();
        d.offer(1);
        assertTrue(r.pop(new DescChain(4)));
        r.push(1, 7);
        r.publish();
        assertTrue(writes.isEmpty(), "no log after setUsedWriteLog(null)");
    }

    private static List<String> describe(List<long[]> writes) {
        List<String> out = new ArrayList<>();
        for (long[] w : writes) out.add(w[0] + "+" + w[1]);
        return out;
    }

    @Test
    void multipleChainsInFifoOrderAndPushValidation() throws Exception {
        TestGuest.Driver d = driver(4, 0);
        SplitRing r = ring(4, false, 0);
        for (int i = 0; i < 4; i++) {
            d.desc(i, BUF + 0x100L * i, 10 + i, 0, 0);
            d.offer(3 - i);
        }
        DescChain c = new DescChain(1);
        for (int i = 0; i < 4; i++) {
            assertTrue(r.pop(c));
            assertEquals(3 - i, c.head());
            assertEquals(10 + 3 - i, c.len(0));
        }
        assertFalse(r.pop(c));
        assertThrows(RingException.class, () -> r.push(4, 0), "head out of range");
        assertThrows(RingException.class, () -> r.push(-1, 0));
        r.push(1, -1); // len is a u32
        r.publish();
        assertEquals(0xffffffffL, d.usedLen(0));
    }

    @Test
    void buffersMayCrossRegionAndWindowBoundaries() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, false, 0);
        d.desc(0, B_GPA - 512, 1024, N, 1);
        d.desc(1, C_WINDOW2 - 4096, 8192, W, 0);
        d.offer(0);
        DescChain c = new DescChain(4);
        assertTrue(r.pop(c));
        assertEquals(2, c.count());
        List<ByteBuffer> parts = new ArrayList<>();
        assertEquals(2, g.mem.slices(c.addr(0), c.len(0), parts::add));
        assertEquals(512, parts.get(0).remaining());
        assertEquals(512, parts.get(1).remaining());
        parts.clear();
        assertEquals(2, g.mem.slices(c.addr(1), c.len(1), parts::add));
        assertEquals(4096, parts.get(0).remaining());
        assertEquals(4096, parts.get(1).remaining());
    }

    @Test
    void ringAreasStraddlingAWindowBoundaryWork() throws Exception {
        long[][] placements = {
            {C_WINDOW2 - 64, C_WINDOW2 + 0x1000, C_WINDOW2 + 0x2000}, // descriptor table straddles
            {C_WINDOW2 - 0x1000, C_WINDOW2 - 10, C_WINDOW2 + 0x2000}, // avail ring entries straddle
            {C_WINDOW2 - 0x1000, C_WINDOW2 + 0x1000, C_WINDOW2 - 36}, // used elements straddle
        };
        for (long[] p : placements) {
            long desc = p[0], avail = p[1], used = p[2];
            TestGuest.Driver d = g.new Driver(8, desc, avail, used, 65530);
            SplitRing r = new SplitRing(g.mem, 8, desc, avail, used, true, 65530);
            DescChain c = new DescChain(4);
            for (int round = 0; round < 12; round++) { // wraps the u16 indices
                int head = (round * 3) % 8;
                d.desc(head, C_WINDOW2 + 0x3000, 512 + round, W, 0);
                d.offer(head);
                assertTrue(r.pop(c));
                assertEquals(head, c.head());
                assertEquals(512 + round, c.len(0));
                r.push(head, 100 + round);
                r.publish();
                assertEquals((65531 + round) & 0xffff, d.usedIdx());
                assertEquals(head, d.usedId((65530 + round) & 0xffff));
                assertEquals(100 + round, d.usedLen((65530 + round) & 0xffff));
                assertEquals(r.lastAvailIdx(), d.availEvent());
            }
        }
    }

    @Test
    void indirectTables() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, false, 0);
        DescChain c = new DescChain(64);

        // A single indirect descriptor; its WRITE flag must be ignored.
        long table = BUF + 0x8000;
        d.descAt(table, BUF, 16, N, 1);
        d.descAt(table + 16, BUF + 0x100, 512, N | W, 2);
        d.descAt(table + 32, BUF + 0x400, 1, W, 0);
        d.desc(3, table, 48, I | W, 0);
        d.offer(3);
        assertTrue(r.pop(c));
        assertEquals(3, c.head());
        assertEquals(3, c.count());
        assertEquals(1, c.readableCount());
        assertEquals(BUF + 0x400, c.addr(2));
        assertEquals(513, c.writableBytes());

        // Direct descriptors followed by an indirect one (legal, if unusual).
        d.desc(0, BUF + 0x2000, 8, N, 1);
        d.desc(1, table, 48, I, 0);
        d.offer(0);
        assertTrue(r.pop(c));
        assertEquals(4, c.count());
        assertEquals(2, c.readableCount());
        assertEquals(BUF + 0x2000, c.addr(0));
        assertEquals(BUF, c.addr(1));

        // A table spanning regions A and B, with one entry straddling the boundary (read piecewise).
        long span = B_GPA - 40;
        for (int i = 0; i < 4; i++) d.descAt(span + 16L * i, BUF + 0x10L * i, 4 + i, i < 3 ? N : 0, i + 1);
        d.desc(4, span, 64, I, 0);
        d.offer(4);
        assertTrue(r.pop(c));
        assertEquals(4, c.count());
        for (int i = 0; i < 4; i++) {
            assertEquals(BUF + 0x10L * i, c.addr(i));
            assertEquals(4 + i, c.len(i));
        }

        // An indirect table longer than the queue size (Linux does this) is fine.
        long big = BUF + 0x20000;
        for (int i = 0; i < 40; i++) d.descAt(big + 16L * i, BUF + 8L * i, 8, i < 39 ? N : 0, i + 1);
        d.desc(5, big, 16 * 40, I, 0);
        d.offer(5);
        assertTrue(r.pop(c));
        assertEquals(40, c.count());
        assertEquals(320, c.readableBytes());
    }

    /** One malformed ring setup: writes descriptors through the driver, then offers. */
    private interface Setup {
        void apply(TestGuest.Driver d) throws Exception;
    }

    private void assertRejected(String what, int capacity, Setup setup) throws Exception {
        TestGuest.Driver d = driver(8, 100);
        SplitRing r = ring(8, false, 100);
        setup.apply(d);
        DescChain c = new DescChain(capacity);
        RingException e = assertThrows(RingException.class, () -> r.pop(c), what);
        assertNotNull(e.getMessage());
        assertEquals(100, r.lastAvailIdx(), what + ": nothing consumed");
        // The same bad state is reported again, not silently skipped.
        assertThrows(RingException.class, () -> r.pop(c), what);
    }

    @Test
    void malformedChainsAreRejected() throws Exception {
        long t = BUF + 0x8000;
        assertRejected("head >= size", 8, d -> d.offer(8));
        assertRejected("head 0xffff", 8, d -> d.offer(0xffff));
        assertRejected("next >= size", 8, d -> {
            d.desc(0, BUF, 8, N, 8);
            d.offer(0);
        });
        assertRejected("self loop", 8, d -> {
            d.desc(0, BUF, 8, N, 0);
            d.offer(0);
        });
        assertRejected("loop 0->1->0", 64, d -> {
            d.desc(0, BUF, 8, N, 1);
            d.desc(1, BUF, 8, N, 0);
            d.offer(0);
        });
        assertRejected("indirect len % 16", 8, d -> {
            d.desc(0, t, 24, I, 0);
            d.offer(0);
        });
        assertRejected("indirect len 0", 8, d -> {
            d.desc(0, t, 0, I, 0);
            d.offer(0);
        });
        assertRejected("indirect table too long", 8, d -> {
            d.desc(0, t, 16L * (SplitRing.MAX_INDIRECT_ENTRIES + 1), I, 0);
            d.offer(0);
        });
        assertRejected("indirect table unmapped", 8, d -> {
            d.desc(0, GAP, 32, I, 0);
            d.offer(0);
        });
        assertRejected("indirect table runs into a gap", 8, d -> {
            d.desc(0, B_GPA + B_SIZE - 16, 32, I, 0);
            d.offer(0);
        });
        assertRejected("indirect table address wraps", 8, d -> {
            d.desc(0, -16L, 32, I, 0);
            d.offer(0);
        });
        assertRejected("INDIRECT with NEXT", 8, d -> {
            d.descAt(t, BUF, 8, 0, 0);
            d.desc(0, t, 16, I | N, 1);
            d.desc(1, BUF, 8, 0, 0);
            d.offer(0);
        });
        assertRejected("nested indirect", 8, d -> {
            d.descAt(t + 0x100, BUF, 8, 0, 0);
            d.descAt(t, t + 0x100, 16, I, 0);
            d.desc(0, t, 16, I, 0);
            d.offer(0);
        });
        assertRejected("readable after writable", 8, d -> {
            d.desc(0, BUF, 8, W | N, 1);
            d.desc(1, BUF, 8, 0, 0);
            d.offer(0);
        });
        assertRejected("readable after writable (indirect)", 8, d -> {
            d.descAt(t, BUF, 8, W | N, 1);
            d.descAt(t + 16, BUF, 8, 0, 0);
            d.desc(0, t, 32, I, 0);
            d.offer(0);
        });
        assertRejected("readable indirect entry after writable direct", 8, d -> {
            d.descAt(t, BUF, 8, 0, 0);
            d.desc(0, BUF, 8, W | N, 1);
            d.desc(1, t, 16, I, 0);
            d.offer(0);
        });
        assertRejected("zero-length buffer", 8, d -> {
            d.desc(0, BUF, 8, N, 1);
            d.desc(1, BUF, 0, W, 0);
            d.offer(0);
        });
        assertRejected("too many segments", 2, d -> {
            d.desc(0, BUF, 8, N, 1);
            d.desc(1, BUF, 8, N, 2);
            d.desc(2, BUF, 8, 0, 0);
            d.offer(0);
        });
        assertRejected("unmapped buffer", 8, d -> {
            d.desc(0, GAP, 8, 0, 0);
            d.offer(0);
        });
        assertRejected("buffer runs into a gap", 8, d -> {
            d.desc(0, B_GPA + B_SIZE - 8, 16, W, 0);
            d.offer(0);
        });
        assertRejected("buffer address wraps", 8, d -> {
            d.desc(0, -16L, 32, W, 0);
            d.offer(0);
        });
        assertRejected("buffer of 2 GiB", 8, d -> {
            d.desc(0, C_GPA, 0x8000_0000L, W, 0);
            d.offer(0);
        });
        assertRejected("buffer of 4 GiB - 1", 8, d -> {
            d.desc(0, C_GPA, 0xffff_ffffL, W, 0);
            d.offer(0);
        });
        assertRejected("indirect next >= entries", 8, d -> {
            d.descAt(t, BUF, 8, N, 1);
            d.descAt(t + 16, BUF, 8, N, 2);
            d.desc(0, t, 32, I, 0);
            d.offer(0);
        });
        assertRejected("indirect loop", 64, d -> {
            d.descAt(t, BUF, 8, N, 1);
            d.descAt(t + 16, BUF, 8, N, 0);
            d.desc(0, t, 32, I, 0);
            d.offer(0);
        });
        assertRejected("avail idx more than size ahead", 8, d -> g.put(d.avail + 2, 100 + 9, 2));
        assertRejected("avail idx moved backwards", 8, d -> g.put(d.avail + 2, 99, 2));
    }

    @Test
    void hasAvailableRejectsRunawayIndexAgainstUsedIndex() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, false, 0);
        for (int i = 0; i < 8; i++) {
            d.desc(i, BUF, 8, 0, 0);
            d.offer(i);
        }
        DescChain c = new DescChain(1);
        for (int i = 0; i < 8; i++) assertTrue(r.pop(c));
        assertEquals(8, r.inFlight());
        // The driver cannot own more than `size` chains: one more before any used element is a bug.
        d.offer(0);
        assertThrows(RingException.class, r::hasAvailable);
        r.push(0, 0);
        assertTrue(r.hasAvailable(), "after one completion the ninth chain is legal");
        assertTrue(r.pop(c));
    }

    @Test
    void notifyWithoutEventIdxFollowsNoInterrupt() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, false, 0);
        d.desc(0, BUF, 8, 0, 0);
        d.offer(0);
        d.offer(0);
        DescChain c = new DescChain(1);
        assertTrue(r.pop(c));
        r.push(0, 0);
        r.publish();
        assertTrue(r.needsNotify());
        d.availFlags(SplitRing.VIRTQ_AVAIL_F_NO_INTERRUPT);
        assertTrue(r.pop(c));
        r.push(0, 0);
        r.publish();
        assertFalse(r.needsNotify());
    }

    @Test
    void needEventMatchesItsDefinition() {
        // vring_need_event(event, new, old) is "event lies in [old, new) modulo 2^16".
        Random rnd = new Random(42);
        for (int k = 0; k < 20000; k++) {
            int old = rnd.nextInt(65536);
            int n = (old + rnd.nextInt(40)) & 0xffff;
            int event = rnd.nextBoolean() ? (old + rnd.nextInt(50) - 5) & 0xffff : rnd.nextInt(65536);
            boolean expected = false;
            for (int i = old; i != n; i = (i + 1) & 0xffff) expected |= i == event;
            assertEquals(expected, SplitRing.needEvent(event, n, old), event + " " + n + " " + old);
        }
    }

    @Test
    void eventIdxNotificationAcrossU16WrapAround() throws Exception {
        int start = 65533;
        TestGuest.Driver d = driver(8, start);
        SplitRing r = ring(8, true, start);
        assertEquals(start, r.lastUsedIdx(), "continues from used->idx in guest memory");
        for (int i = 0; i < 6; i++) {
            d.desc(i, BUF + 64L * i, 8, 0, 0);
            d.offer(i);
        }
        DescChain c = new DescChain(1);
        for (int i = 0; i < 6; i++) {
            assertTrue(r.pop(c));
            assertEquals(i, c.head());
            assertEquals((start + i + 1) & 0xffff, d.availEvent(), "avail_event follows lastAvailIdx");
        }
        assertEquals(3, r.lastAvailIdx());
        assertFalse(r.pop(c));

        r.push(0, 1);
        r.publish(); // used 65534
        assertTrue(r.needsNotify(), "first notification is unconditional");
        d.usedEvent(65535); // "interrupt me once used->idx passes 65535"
        r.push(1, 1);
        r.publish(); // 65535
        assertFalse(r.needsNotify());
        r.push(2, 1);
        r.publish(); // 0: crossed 65535
        assertTrue(r.needsNotify());
        assertEquals(0, d.usedIdx());
        r.push(3, 1);
        r.publish(); // 1
        assertFalse(r.needsNotify(), "event already passed");
        d.usedEvent(1);
        r.push(4, 1);
        r.push(5, 1);
        r.publish(); // 3: batch crossed 1
        assertTrue(r.needsNotify());
        assertFalse(r.needsNotify(), "nothing new published");
        for (int i = 0; i < 6; i++) assertEquals(i, d.usedId((start + i) & 0xffff));
    }

    @Test
    void notificationSuppressionWithoutEventIdx() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        g.put(d.used, SplitRing.VIRTQ_USED_F_NO_NOTIFY, 2); // stale flag left by a previous back-end
        SplitRing r = ring(8, false, 0);
        assertEquals(SplitRing.VIRTQ_USED_F_NO_NOTIFY, d.usedFlags(), "constructor writes nothing");
        assertFalse(r.hasAvailable());
        assertEquals(0, d.usedFlags(), "first use enables kicks");
        r.disableNotification();
        assertEquals(SplitRing.VIRTQ_USED_F_NO_NOTIFY, d.usedFlags());
        assertFalse(r.enableNotification());
        assertEquals(0, d.usedFlags());
        r.disableNotification();
        d.desc(0, BUF, 8, 0, 0);
        d.offer(0);
        assertTrue(r.enableNotification(), "buffer arrived while kicks were off");
        assertEquals(0, d.usedFlags());
    }

    @Test
    void notificationSuppressionWithEventIdx() throws Exception {
        TestGuest.Driver d = driver(8, 10);
        g.put(d.used + 4 + 8 * 8, 0x1234, 2);
        SplitRing r = ring(8, true, 10);
        assertEquals(0x1234, d.availEvent());
        assertFalse(r.hasAvailable());
        assertEquals(10, d.availEvent(), "first use asks for a kick at the next buffer");
        d.desc(0, BUF, 8, 0, 0);
        DescChain c = new DescChain(1);

        r.disableNotification();
        d.offer(0);
        d.offer(0);
        assertTrue(r.pop(c));
        assertEquals(10, d.availEvent(), "not advanced while disabled");
        assertTrue(r.enableNotification(), "one chain still pending");
        assertEquals(11, d.availEvent());
        assertTrue(r.pop(c));
        assertEquals(12, d.availEvent(), "advanced by pop while enabled");
        r.disableNotification();
        assertFalse(r.enableNotification());
        assertEquals(12, d.availEvent());
        assertEquals(0, d.usedFlags(), "flags untouched with EVENT_IDX");
    }

    @Test
    void setMemoryRevalidates() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, false, 0);
        GuestMemory withoutA = g.mem.without(A_GPA, A_SIZE, A_UADDR);
        assertThrows(RingException.class, () -> r.setMemory(withoutA));
        assertSame(g.mem, r.memory());
        // Buffers in B become unreachable after B is removed from the table.
        d.desc(0, B_GPA + 0x100, 8, 0, 0);
        d.offer(0);
        d.offer(0);
        DescChain c = new DescChain(1);
        assertTrue(r.pop(c));
        GuestMemory withoutB = g.mem.without(B_GPA, B_SIZE, B_UADDR);
        r.setMemory(withoutB);
        assertThrows(RingException.class, () -> r.pop(c));
        r.setMemory(withoutB.with(g.b));
        assertTrue(r.pop(c));
    }

    @Test
    void ringInAClosedRegionFailsWithoutCrashing() throws Exception {
        TestGuest.Driver d = driver(8, 0);
        SplitRing r = ring(8, true, 0);
        d.desc(0, B_GPA, 8, 0, 0);
        d.offer(0);
        d.offer(0);
        d.offer(0);
        DescChain c = new DescChain(1);
        assertTrue(r.pop(c));
        assertTrue(r.pop(c));
        r.push(0, 0);
        r.publish();
        assertTrue(r.needsNotify());
        g.b.close(); // buffer region gone
        assertThrows(RingException.class, () -> r.pop(c));
        g.a.close(); // ring region gone
        assertThrows(RingException.class, () -> r.pop(c));
        assertThrows(RingException.class, () -> ring(8, true, 0), "closed regions are not mapped");
        assertThrows(RingException.class, () -> r.push(0, 0));
        assertThrows(RingException.class, r::publish);
        assertThrows(RingException.class, r::needsNotify);
        assertDoesNotThrow(r::disableNotification, "with EVENT_IDX, disabling touches no guest memory");
        assertThrows(RingException.class, r::enableNotification);
    }

    @Test
    void frontEndShrinkingTheMemfdDoesNotCrashTheJvm() throws Exception {
        int fd = TestGuest.memfd("shrink", 0x10000);
        try (MemoryRegion r = MemoryRegion.map(fd, 0x4000_0000L, 0x10000, 0x1000_0000L, 0)) {
            GuestMemory m = GuestMemory.empty().with(r);
            long desc = 0x4000_0000L, avail = desc + 0x1000, used = desc + 0x2000, buf = desc + 0x8000;
            m.writeU64(desc, buf);
            m.writeU32(desc + 8, 8);
            m.writeU16(avail + 4, 0);
            m.writeU16(avail + 2, 1);
            SplitRing ring = new SplitRing(m, 8, desc, avail, used, false, 0);
            assertEquals(0, io.jvhost.iothread.sys.Libc.ftruncate(fd, 0)); // hostile peer: pages now SIGBUS
            // HotSpot turns the SIGBUS into an *asynchronous* InternalError ("a fault occurred in a recent unsafe
            // memory access"), delivered at some later safepoint poll of the faulting thread. So run the access
            // on its own thread and collect whatever surfaces, there or in its uncaught-exception handler.
            java.util.concurrent.atomic.AtomicReference<Throwable> seen = new java.util.concurrent.atomic.AtomicReference<>();
            java.util.concurrent.atomic.AtomicBoolean returned = new java.util.concurrent.atomic.AtomicBoolean();
            Thread t = new Thread(() -> {
                try {
                    ring.pop(new DescChain(1));
                    returned.set(true);
                } catch (Throwable e) {
                    seen.compareAndSet(null, e);
                }
            }, "shrunk-memfd");
            t.setUncaughtExceptionHandler((th, e) -> seen.compareAndSet(null, e));
            t.start();
            t.join(30_000);
            assertFalse(t.isAlive());
            Throwable e = seen.get();
            assertTrue(e == null ? returned.get() : e instanceof RingException || e instanceof InternalError, String.valueOf(e));
            // The JVM is alive and this thread can still use guest memory elsewhere.
            assertEquals(0, g.mem.readU8(A_GPA));
        } finally {
            io.jvhost.iothread.sys.Libc.close(fd);
        }
    }
}
