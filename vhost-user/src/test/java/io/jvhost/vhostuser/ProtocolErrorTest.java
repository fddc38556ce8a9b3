package io.jvhost.vhostuser;

import io.jvhost.iothread.sys.EventFd;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeoutException;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * Hostile front-ends: messages the back-end must refuse (a failed REPLY_ACK, connection kept), messages after
 * which it must drop the connection (and serve the next front-end), and malformed rings, which stop only the
 * queue concerned. The process never crashes and the export keeps serving.
 */
@Timeout(30)
class ProtocolErrorTest extends ExportTestBase {

    static ByteBuffer le(int size) {
        return ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
    }

    static byte[] vringState(int index, int num) {
        return le(8).putInt(index).putInt(num).array();
    }

    static byte[] region(long gpa, long size, long uaddr, long off) {
        return le(40).putLong(0).putLong(gpa).putLong(size).putLong(uaddr).putLong(off).array();
    }

    /** The connection answers and the rings still serve. */
    private void assertHealthy(String after) throws Exception {
        assertEquals(neg.offeredFeatures(), fe.getFeatures(), "connection usable after " + after);
        for (DriverQueue q : fe.queues()) {
            BlkRequest r = run(q, BlkRequest.read(0, 512));
            assertEquals(BLK_S_OK, r.status(), "queue " + q.index() + " serves after " + after);
        }
    }

    private void expectNack(String what, int request, byte[] payload, int... fds) throws Exception {
        long ack = fe.sendWithAck(request, payload, fds);
        assertNotEquals(0, ack, what + " must be refused");
        assertHealthy(what);
    }

    @Test
    void refusedMessagesGetAFailedAckAndTheConnectionStaysUsable() throws Exception {
        open(export().numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        DriverQueue q0 = fe.queue(0);
        GuestMemory.Region r0 = mem.region(0);
        try (EventFd e = EventFd.create()) {
            expectNack("unknown request 0x7777", 0x7777, new byte[8]);
            expectNack("unknown request 0", 0, null);
            expectNack("unknown request 100 with an fd", 100, null, e.fd());
            expectNack("SET_VRING_NUM with a 4-byte payload", SET_VRING_NUM, le(4).putInt(0).array());
            expectNack("SET_VRING_NUM for vring 1000", SET_VRING_NUM, vringState(1000, 128));
            expectNack("SET_VRING_NUM for vring -1", SET_VRING_NUM, vringState(-1, 128));
            expectNack("SET_VRING_NUM 100 (not a power of two)", SET_VRING_NUM, vringState(0, 100));
            expectNack("SET_VRING_NUM 0", SET_VRING_NUM, vringState(0, 0));
            expectNack("SET_VRING_NUM 65536", SET_VRING_NUM, vringState(0, 65536));
            expectNack("SET_VRING_NUM on a running ring", SET_VRING_NUM, vringState(0, 64));
            expectNack("SET_VRING_BASE for vring 1000", SET_VRING_BASE, vringState(1000, 0));
            expectNack("SET_VRING_BASE on a running ring", SET_VRING_BASE, vringState(1, 5));
            expectNack("SET_VRING_ENABLE for vring 1000", SET_VRING_ENABLE, vringState(1000, 1));
            expectNack("SET_VRING_ENABLE 2", SET_VRING_ENABLE, vringState(0, 2));
            expectNack("SET_VRING_ADDR for vring 1000", SET_VRING_ADDR, le(40).putInt(1000).array());
            expectNack("SET_VRING_ADDR with 24 bytes", SET_VRING_ADDR, le(24).array());
            expectNack("SET_VRING_ADDR moving a running ring", SET_VRING_ADDR, le(40).putInt(0).putInt(0)
                    .putLong(q0.descUaddr() + 4096).putLong(q0.usedUaddr()).putLong(q0.availUaddr()).putLong(0).array());
            expectNack("SET_VRING_KICK for vring 200", SET_VRING_KICK, le(8).putLong(200).array(), e.fd());
            expectNack("SET_VRING_CALL with reserved bits", SET_VRING_CALL, le(8).putLong(1L << 20).array(), e.fd());
            expectNack("SET_VRING_CALL without its fd", SET_VRING_CALL, le(8).putLong(0).array());
            expectNack("SET_VRING_KICK in polling mode", SET_VRING_KICK, le(8).putLong(VRING_NOFD_MASK).array());
            expectNack("SET_MEM_TABLE with 2 regions and 1 fd", SET_MEM_TABLE, le(8 + 64).putInt(2).putInt(0)
                    .put(VhostUserFrontend.regionBytes(r0)).put(VhostUserFrontend.regionBytes(mem.region(1))).array(), r0.fd());
            expectNack("SET_MEM_TABLE with 0 regions", SET_MEM_TABLE, le(8).array());
            expectNack("SET_MEM_TABLE with 9 regions", SET_MEM_TABLE, le(8 + 9 * 32).putInt(9).array());
            expectNack("SET_MEM_TABLE shorter than its region count", SET_MEM_TABLE, le(8 + 32).putInt(2).putInt(0)
                    .put(VhostUserFrontend.regionBytes(r0)).array(), r0.fd(), r0.fd());
            // A table whose second region runs past the end of its fd: nothing of it may stay mapped.
            long mapped = MemoryTableTest.guestMappedBytes();
            expectNack("SET_MEM_TABLE with a region past the end of its fd", SET_MEM_TABLE, le(8 + 64).putInt(2).putInt(0)
                    .put(VhostUserFrontend.regionBytes(r0))
                    .putLong(8L << 30).putLong(1L << 30).putLong(0x1234_0000_0000L).putLong(0).array(), r0.fd(), r0.fd());
            assertEquals(mapped, MemoryTableTest.guestMappedBytes(), "the region mapped before the failure was unmapped");
            expectNack("ADD_MEM_REG without fd", ADD_MEM_REG, region(8L << 30, 4096, 0x1234_0000_0000L, 0));
            expectNack("ADD_MEM_REG past the end of its fd", ADD_MEM_REG, region(8L << 30, 1L << 30, 0x1234_0000_0000L, 0), r0.fd());
            expectNack("ADD_MEM_REG overlapping a region", ADD_MEM_REG, region(r0.gpa() + 4096, 4096, 0x1234_0000_0000L, 0), r0.fd());
            expectNack("ADD_MEM_REG overlapping in uaddr", ADD_MEM_REG, region(8L << 30, 4096, r0.uaddr(), 0), r0.fd());
            expectNack("ADD_MEM_REG wrapping 2^64", ADD_MEM_REG, region(-4096L, 8192, 0x1234_0000_0000L, 0), r0.fd());
            expectNack("ADD_MEM_REG with a negative mmap offset", ADD_MEM_REG, region(8L << 30, 4096, 0x1234_0000_0000L, -4096), r0.fd());
            expectNack("REM_MEM_REG of an unknown region", REM_MEM_REG, region(8L << 30, 4096, 0x1234_0000_0000L, 0));
            expectNack("SET_FEATURES with RING_PACKED", SET_FEATURES, le(8).putLong(neg.features() | bit(F_RING_PACKED)).array());
            expectNack("SET_FEATURES dropping EVENT_IDX while rings run", SET_FEATURES, le(8).putLong(neg.features() & ~bit(F_EVENT_IDX)).array());
            expectNack("SET_PROTOCOL_FEATURES with INFLIGHT_SHMFD", SET_PROTOCOL_FEATURES,
                    le(8).putLong(neg.protocolFeatures() | bit(PF_INFLIGHT_SHMFD)).array());
            expectNack("SET_OWNER with a payload", SET_OWNER, new byte[8]);
            expectNack("SET_BACKEND_REQ_FD without fd", SET_BACKEND_REQ_FD, null);
            expectNack("GET_INFLIGHT_FD (not offered)", GET_INFLIGHT_FD, le(16).array());
            expectNack("SET_STATUS (STATUS not negotiated)", SET_STATUS, le(8).putLong(15).array());
        }
        assertEquals(1, ex.export.connectionCount(), "never disconnected");
        // The memory table is what the handshake sent: buffers in both regions still work.
        for (int r = 0; r < 2; r++) assertEquals(BLK_S_OK, run(q0, BlkRequest.write(8L * r, new byte[4096]).region(r)).status());
    }

    @Test
    void fdsOfRefusedOrUnexpectedMessagesAreClosed() throws Exception {
        open(export());
        List<EventFd> mine = new ArrayList<>();
        try {
            for (int i = 0; i < 6; i++) mine.add(EventFd.create());
            long before = TestExport.openFds();
            int[] three = {mine.get(0).fd(), mine.get(1).fd(), mine.get(2).fd()};
            assertEquals(0, fe.sendWithAck(SET_OWNER, null, three), "extra fds are ignored, not an error");
            assertNotEquals(0, fe.sendWithAck(SET_MEM_TABLE, le(8 + 32).putInt(1).putInt(0).put(VhostUserFrontend.regionBytes(mem.region(0))).array(),
                    mem.region(0).fd(), mine.get(3).fd()));
            assertNotEquals(0, fe.sendWithAck(SET_VRING_NUM, vringState(7, 128), mine.get(4).fd()));
            assertNotEquals(0, fe.sendWithAck(0x4242, null, mine.get(5).fd(), mine.get(0).fd()));
            fe.getFeatures(); // a full round trip: the back-end handled (and closed) everything before this reply
            assertEquals(before, TestExport.openFds(), "the back-end closed every fd it did not keep");
            assertHealthy("messages with extra fds");
        } finally {
            mine.forEach(EventFd::close);
        }
    }

    enum Fatal {
        UNKNOWN_WITHOUT_NEED_REPLY, PAYLOAD_4097, PAYLOAD_4G, BAD_VERSION, GET_VRING_BASE_1000,
        MALFORMED_WITHOUT_NEED_REPLY
    }

    @ParameterizedTest
    @EnumSource(Fatal.class)
    void fatalMessagesDropTheConnectionAndTheNextFrontEndIsServed(Fatal kind) throws Exception {
        open(export());
        ok(fe.queue(0), BlkRequest.flush());
        switch (kind) {
            case UNKNOWN_WITHOUT_NEED_REPLY:
                fe.send(0x7777, VERSION, new byte[8]);
                break;
            case PAYLOAD_4097:
                fe.sendBytes(le(12 + 4097).putInt(GET_FEATURES).putInt(VERSION).putInt(4097).array());
                break;
            case PAYLOAD_4G:
                fe.sendBytes(le(12).putInt(SET_VRING_NUM).putInt(VERSION).putInt(-1).array());
                break;
            case BAD_VERSION:
                fe.send(GET_FEATURES, 0x2, null);
                break;
            case GET_VRING_BASE_1000: // has a reply of its own: a failure cannot be acked
                fe.send(GET_VRING_BASE, VERSION | FLAG_NEED_REPLY, vringState(1000, 0));
                break;
            case MALFORMED_WITHOUT_NEED_REPLY: // no way to report it: the front-end must not believe it worked
                fe.send(SET_VRING_NUM, VERSION, le(4).array());
                break;
            default:
                throw new AssertionError(kind);
        }
        assertTrue(fe.awaitDisconnect(T), kind + ": the back-end drops the connection");
        fe.close();

        GuestMemory mem2 = guest(GuestMemory.twoRegions(8 * MIB));
        VhostUserFrontend fe2 = ex.connect(mem2);
        fe2.handshake(new VhostUserFrontend.Options());
        byte[] d = TestExport.pattern(4096, kind.ordinal());
        ok(fe2.queue(0), BlkRequest.write(16, d));
        assertArrayEquals(d, ok(fe2.queue(0), BlkRequest.read(16, 4096)).data());
        assertEquals(2, ex.export.connectionCount());
    }

    /** GET_CONFIG has its own reply, so a bad request gets a zero-size payload (the spec's failure) and no disconnect. */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"size0", "past256"})
    void badGetConfigGetsAnEmptyReplyAndTheConnectionStays(String kind) throws Exception {
        open(export());
        if (kind.equals("size0")) {
            fe.send(GET_CONFIG, VERSION, le(12).array());
        } else {
            fe.send(GET_CONFIG, VERSION, le(12 + 16).putInt(250).putInt(16).array());
        }
        VhostUserFrontend.Message reply = fe.receive(T);
        assertEquals(GET_CONFIG, reply.request());
        assertEquals(0, reply.payload().length, "failure is a zero-size GET_CONFIG reply");
        byte[] d = TestExport.pattern(4096, 3);
        ok(fe.queue(0), BlkRequest.write(16, d));
        assertArrayEquals(d, ok(fe.queue(0), BlkRequest.read(16, 4096)).data());
    }

    enum BadRing {
        HEAD_OUT_OF_RANGE, AVAIL_IDX_RUNS_AWAY, DESCRIPTOR_LOOP, NEXT_OUT_OF_RANGE, UNMAPPED_BUFFER, ZERO_LENGTH,
        READABLE_AFTER_WRITABLE, INDIRECT_WITH_NEXT, NESTED_INDIRECT, INDIRECT_BAD_LENGTH, INDIRECT_UNMAPPED
    }

    /** Writes a malformed chain (or avail index) into queue q and notifies the device. */
    private void corrupt(DriverQueue q, BadRing kind) {
        long buf = mem.alloc(4096, 16);
        int[] d = q.reserveDescriptors(3);
        switch (kind) {
            case HEAD_OUT_OF_RANGE:
                q.pushRawHead(q.size() + 372);
                break;
            case AVAIL_IDX_RUNS_AWAY:
                q.setAvailIdx(q.availIdx() + q.size() + 1);
                q.notifyDevice();
                return;
            case DESCRIPTOR_LOOP:
                q.writeDescriptor(d[0], buf, 16, VRING_DESC_F_NEXT, d[1]);
                q.writeDescriptor(d[1], buf + 16, 16, VRING_DESC_F_NEXT, d[0]);
                q.pushRawHead(d[0]);
                break;
            case NEXT_OUT_OF_RANGE:
                q.writeDescriptor(d[0], buf, 16, VRING_DESC_F_NEXT, 40000);
                q.pushRawHead(d[0]);
                break;
            case UNMAPPED_BUFFER:
                q.writeDescriptor(d[0], buf, 16, VRING_DESC_F_NEXT, d[1]);
                q.writeDescriptor(d[1], 0x5000_0000_0000L, 4096, VRING_DESC_F_WRITE, 0);
                q.pushRawHead(d[0]);
                break;
            case ZERO_LENGTH:
                q.writeDescriptor(d[0], buf, 16, VRING_DESC_F_NEXT, d[1]);
                q.writeDescriptor(d[1], buf + 64, 0, VRING_DESC_F_WRITE, 0);
                q.pushRawHead(d[0]);
                break;
            case READABLE_AFTER_WRITABLE:
                q.writeDescriptor(d[0], buf, 1, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, d[1]);
                q.writeDescriptor(d[1], buf + 64, 16, 0, 0);
                q.pushRawHead(d[0]);
                break;
            case INDIRECT_WITH_NEXT:
                q.writeDescriptorAt(buf, buf + 1024, 16, 0, 0);
                q.writeDescriptor(d[0], buf, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, d[1]);
                q.writeDescriptor(d[1], buf + 2048, 1, VRING_DESC_F_WRITE, 0);
                q.pushRawHead(d[0]);
                break;
            case NESTED_INDIRECT:
                q.writeDescriptorAt(buf, buf + 1024, 16, VRING_DESC_F_INDIRECT, 0);
                q.writeDescriptor(d[0], buf, 16, VRING_DESC_F_INDIRECT, 0);
                q.pushRawHead(d[0]);
                break;
            case INDIRECT_BAD_LENGTH:
                q.writeDescriptor(d[0], buf, 24, VRING_DESC_F_INDIRECT, 0);
                q.pushRawHead(d[0]);
                break;
            case INDIRECT_UNMAPPED:
                q.writeDescriptor(d[0], 0x5000_0000_0000L, 64, VRING_DESC_F_INDIRECT, 0);
                q.pushRawHead(d[0]);
                break;
            default:
                throw new AssertionError(kind);
        }
        q.setAvailIdx(q.availIdx());
        q.notifyDevice();
    }

    @ParameterizedTest
    @EnumSource(BadRing.class)
    void malformedRingStopsOnlyItsQueue(BadRing kind) throws Exception {
        open(export().numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        DriverQueue q0 = fe.queue(0), q1 = fe.queue(1);
        ok(q0, BlkRequest.flush());
        TestExport.Watched err = ex.watch();
        fe.setVringErr(0, err.fd()); // replaces the fixture's err eventfd on the running ring
        try (TestExport.LogCapture log = new TestExport.LogCapture(BlkQueue.class)) {
            corrupt(q0, kind);
            assertTrue(err.await(T), kind + ": err eventfd signalled");
            String name = ex.queueName(1, 0);
            assertTrue(log.contains(name + ": ring broken"), () -> "logged: " + log.messages());
            assertEquals(1, log.count("ring broken"), "one line, and only for this queue");

            // The other queue is unaffected, and so is the connection.
            byte[] d = TestExport.pattern(4096, 3);
            ok(q1, BlkRequest.write(24, d));
            assertArrayEquals(d, ok(q1, BlkRequest.read(24, 4096)).data());
            assertEquals(neg.offeredFeatures(), fe.getFeatures());
            // The broken queue takes nothing more: a valid request gets no answer (bounded wait for what must not come).
            int usedBefore = q0.usedIdx();
            q0.submit(BlkRequest.flush());
            assertThrows(TimeoutException.class, () -> q0.awaitUsed(1, Duration.ofMillis(150)));
            assertEquals(usedBefore, q0.usedIdx());
            assertEquals(1, log.count("ring broken"), "no second line for the same queue");
        }
        // A new front-end resets the device: both queues work again.
        fe.close();
        GuestMemory mem2 = guest(GuestMemory.twoRegions(8 * MIB));
        VhostUserFrontend fe2 = ex.connect(mem2);
        fe2.handshake(new VhostUserFrontend.Options().numQueues(2));
        ok(fe2.queue(0), BlkRequest.flush());
        ok(fe2.queue(1), BlkRequest.flush());
    }
}
