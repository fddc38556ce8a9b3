package io.jvhost.vhostuser.frontend;

import io.jvhost.iothread.sys.Libc;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeoutException;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Checks the fixture on its own, playing the device by hand (reading descriptors, writing the used ring and the
 * call eventfd), for the layouts qemu-storage-daemon cannot take (e.g. an indirect table across regions).
 */
@Timeout(30)
class FixtureSelfTest {
    static final Duration T = Duration.ofSeconds(5);

    @Test
    void allocatorKeepsAllocationsInsideRegionsUnlessPlacedExplicitly() throws Exception {
        try (GuestMemory m = GuestMemory.adjacentRegions(2, 1 << 20)) {
            assertEquals(m.region(0).gpaEnd(), m.region(1).gpa());
            assertNotEquals(m.region(0).uaddr() + m.region(0).size(), m.region(1).uaddr(), "uaddrs are not contiguous");
            long a = m.alloc(700 << 10, 4096, 0);
            assertThrows(IllegalStateException.class, () -> m.alloc(400 << 10, 8, 0), "does not spill into region 1");
            long b = m.alloc(400 << 10, 8, 1);
            assertEquals(m.region(1), m.regionOf(b));
            m.free(b);
            long straddle = m.allocAt(m.region(1).gpa() - 100, 200);
            assertThrows(IllegalStateException.class, () -> m.allocAt(straddle + 10, 8), "already allocated");
            m.free(straddle);
            m.free(a);
            assertEquals(0, m.allocatedBytes());
            assertEquals(0, m.allocAt(0, (2 << 20) - 5), "everything is one free block again");
        }
    }

    @Test
    void accessIsPiecewiseAcrossRegionsAndTranslatesUaddr() throws Exception {
        GuestMemory m = GuestMemory.create(List.of(
                new GuestMemory.RegionSpec(0, 1 << 20, 0x7000_0000_0000L),
                new GuestMemory.RegionSpec(1 << 20, 1 << 20, 0x6000_0000_0000L)), true);
        long edge = 1 << 20;
        m.putU64(edge - 3, 0x1122334455667788L);
        assertEquals(0x1122334455667788L, m.getU64(edge - 3));
        assertEquals(0x88, m.getU8(edge - 3));
        assertEquals(0x11, m.getU8(edge + 4));
        // Each region is a separate memfd: the bytes really are in two files.
        assertEquals(m.region(0).fd() != m.region(1).fd(), true);
        assertEquals(0x7000_0000_0000L + 5, m.uaddr(5));
        assertEquals(0x6000_0000_0000L + 5, m.uaddr(edge + 5));
        assertThrows(IllegalArgumentException.class, () -> m.uaddr(2 << 20));
        assertThrows(IllegalArgumentException.class, () -> m.getU8(2 << 20));
        m.close();
        assertThrows(IllegalStateException.class, () -> m.getU8(0), "no access to unmapped memory");
    }

    /** The device's view: follows a chain (direct or indirect) and returns its segments. */
    private static List<DriverQueue.Segment> walk(GuestMemory m, DriverQueue q, int head) {
        List<DriverQueue.Segment> out = new ArrayList<>();
        long table = q.descGpa();
        int i = head;
        int flags = m.getU16(table + 16L * i + 12);
        if ((flags & VRING_DESC_F_INDIRECT) != 0) {
            table = m.getU64(q.descGpa() + 16L * i);
            i = 0;
        }
        while (true) {
            long d = table + 16L * i;
            flags = m.getU16(d + 12);
            out.add(new DriverQueue.Segment(m.getU64(d), (int) m.getU32(d + 8), (flags & VRING_DESC_F_WRITE) != 0));
            if ((flags & VRING_DESC_F_NEXT) == 0) return out;
            i = m.getU16(d + 14);
        }
    }

    @Test
    void requestLayoutAsTheDeviceSeesItAndCompletionThroughTheCallFd() throws Exception {
        try (GuestMemory m = GuestMemory.adjacentRegions(2, 1 << 20); DriverQueue q = new DriverQueue(m, 0, 16, 0)) {
            byte[] data = new byte[3000];
            for (int i = 0; i < data.length; i++) data[i] = (byte) i;
            long boundary = m.region(1).gpa();
            BlkRequest w = BlkRequest.write(77, data).segmentSizes(1000, 2000).region(0).indirectTableAt(boundary - 24);
            q.enqueue(w);
            assertEquals(0, m.getU16(q.availGpa() + 2), "not published before kick");
            q.setKickAlways(true);
            assertTrue(q.kick());
            long[] cnt = new long[1];
            assertEquals(8, Libc.read(q.kickFd(), cnt, 8));
            assertEquals(1, cnt[0]);

            assertEquals(1, m.getU16Acquire(q.availGpa() + 2));
            int head = m.getU16(q.availGpa() + 4);
            assertEquals(w.head(), head);
            List<DriverQueue.Segment> segs = walk(m, q, head);
            assertEquals(4, segs.size());
            ByteBuffer hdr = ByteBuffer.wrap(m.read(segs.get(0).gpa(), 16)).order(ByteOrder.LITTLE_ENDIAN);
            assertEquals(BLK_T_OUT, hdr.getInt(0));
            assertEquals(77, hdr.getLong(8));
            assertEquals(List.of(16, 1000, 2000, 1), segs.stream().map(DriverQueue.Segment::len).toList());
            assertEquals(List.of(false, false, false, true), segs.stream().map(DriverQueue.Segment::writable).toList());
            byte[] got = new byte[3000];
            m.read(segs.get(1).gpa(), got, 0, 1000);
            m.read(segs.get(2).gpa(), got, 1000, 2000);
            assertArrayEquals(data, got);

            // Play the device: status, used element, used idx, then signal the call eventfd.
            m.putU8(segs.get(3).gpa(), BLK_S_OK);
            m.putU32(q.usedGpa() + 4, head);
            m.putU32(q.usedGpa() + 8, 1);
            m.putU16Release(q.usedGpa() + 2, 1);
            assertEquals(0, Libc.eventfd_write(q.callFd(), 1));
            q.await(w, T);
            assertEquals(BLK_S_OK, w.status());
            assertEquals(1, w.usedLen());
            assertEquals(q.size(), q.freeDescriptors());
            assertEquals(16 * 16 + (6 + 2 * 16) + (6 + 8 * 16), m.allocatedBytes(), "request buffers and table were freed");
        }
    }

    @Test
    void kickHonoursAvailEventAndNoNotify() throws Exception {
        try (GuestMemory m = GuestMemory.twoRegions(1 << 20); DriverQueue q = new DriverQueue(m, 0, 16)) {
            long availEvent = q.usedGpa() + 4 + 8L * 16;
            q.setEventIdx(true);
            m.putU16(availEvent, 0);
            q.enqueue(BlkRequest.flush());
            assertTrue(q.kick(), "avail_event 0 asks for a kick when idx moves 0 -> 1");
            q.enqueue(BlkRequest.flush());
            assertFalse(q.kick(), "avail_event still 0: no kick for 1 -> 2");
            m.putU16(availEvent, 2);
            q.enqueue(BlkRequest.flush());
            assertTrue(q.kick(), "avail_event 2 is crossed by 2 -> 3");
            q.setEventIdx(false);
            m.putU16(q.usedGpa(), VRING_USED_F_NO_NOTIFY);
            q.enqueue(BlkRequest.flush());
            assertFalse(q.kick());
            m.putU16(q.usedGpa(), 0);
            q.enqueue(BlkRequest.flush());
            assertTrue(q.kick());
            assertEquals(3, q.kicksSent());
            assertEquals(2, q.kicksSuppressed());
            assertEquals(5, q.inFlight());
            // Nothing completes: the wait is bounded.
            assertThrows(TimeoutException.class, () -> q.awaitUsed(1, Duration.ofMillis(50)));
        }
    }

    @Test
    void bogusUsedElementsAreReportedNotFatal() throws Exception {
        try (GuestMemory m = GuestMemory.twoRegions(1 << 20); DriverQueue q = new DriverQueue(m, 0, 8)) {
            q.submit(BlkRequest.flush());
            m.putU32(q.usedGpa() + 4, 7);          // id never submitted
            m.putU32(q.usedGpa() + 4 + 8, 99999);  // id out of range
            m.putU16Release(q.usedGpa() + 2, 40);  // idx jumps by more than the ring size
            List<DriverQueue.UsedElem> u = q.pollUsed();
            assertEquals(8, u.size(), "never more than the ring size per poll");
            assertTrue(q.unexpectedUsed().size() >= 2);
            assertEquals(40, q.lastUsed());
        }
    }
}
