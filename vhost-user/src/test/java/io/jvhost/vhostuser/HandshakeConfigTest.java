package io.jvhost.vhostuser;

import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.VhostUserException;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import io.jvhost.vhostuser.frontend.VirtioBlkConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

import static io.jvhost.vhostuser.TestExport.IMAGE_SIZE;
import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/** The QEMU 7.2 handshake, the feature sets it negotiates, and the virtio-blk config space (GET/SET_CONFIG). */
@Timeout(30)
class HandshakeConfigTest extends ExportTestBase {

    @Test
    void qemu72HandshakeIsAckedAndNegotiatesTheExpectedFeatures() throws Exception {
        // Every message without a reply of its own carries need_reply and its ack must be 0 (ackAll).
        open(export().numQueues(2), new VhostUserFrontend.Options().numQueues(2));
        long offered = neg.offeredFeatures();
        for (int b : new int[] {F_VERSION_1, F_INDIRECT_DESC, F_EVENT_IDX, F_PROTOCOL_FEATURES, BLK_F_SIZE_MAX,
                BLK_F_SEG_MAX, BLK_F_BLK_SIZE, BLK_F_FLUSH, BLK_F_TOPOLOGY, BLK_F_CONFIG_WCE, BLK_F_MQ,
                BLK_F_DISCARD, BLK_F_WRITE_ZEROES}) {
            assertTrue((offered & bit(b)) != 0, "feature bit " + b + " offered");
            assertTrue(neg.has(b) || b == F_PROTOCOL_FEATURES, "feature bit " + b + " negotiated");
        }
        assertTrue(neg.has(F_PROTOCOL_FEATURES));
        for (int b : new int[] {BLK_F_RO, F_RING_PACKED, F_NOTIFY_ON_EMPTY, F_IOMMU_PLATFORM, BLK_F_GEOMETRY}) {
            assertEquals(0, offered & bit(b), "feature bit " + b + " must not be offered");
        }
        // Dirty logging is offered (QEMU blocks migration without it) but only acked by a migrating front-end.
        assertTrue((offered & bit(F_LOG_ALL)) != 0, "VHOST_F_LOG_ALL offered");
        assertFalse(neg.has(F_LOG_ALL));
        assertEquals(bit(PF_MQ) | bit(PF_LOG_SHMFD) | bit(PF_REPLY_ACK) | bit(PF_BACKEND_REQ) | bit(PF_CONFIG)
                | bit(PF_RESET_DEVICE) | bit(PF_CONFIGURE_MEM_SLOTS) | bit(PF_STATUS), neg.offeredProtocolFeatures(), "protocol features offered");
        assertEquals(neg.offeredProtocolFeatures() & VhostUserFrontend.DEFAULT_PROTOCOL_FEATURES, neg.protocolFeatures(),
                "the fixture takes all it knows (QEMU 7.2's set: STATUS is newer)");
        assertEquals(2, neg.maxQueues());
        assertEquals(509, neg.maxMemSlots());
        assertNotNull(neg.config());
        assertEquals(1, ex.export.connectionCount());
        // Both rings run.
        for (int i = 0; i < 2; i++) ok(fe.queue(i), BlkRequest.flush());
        // A second GET_FEATURES after negotiation still answers the same offer.
        assertEquals(offered, fe.getFeatures());
    }

    @ParameterizedTest(name = "replyAck={0} memSlots={1} eventIdx={2}")
    @CsvSource({"false,false,false", "false,true,true", "true,false,true"})
    void handshakeVariantsServeIo(boolean replyAck, boolean memSlots, boolean eventIdx) throws Exception {
        open(export(), new VhostUserFrontend.Options().replyAck(replyAck).memSlots(memSlots).eventIdx(eventIdx));
        assertEquals(replyAck, neg.hasProtocol(PF_REPLY_ACK));
        assertEquals(eventIdx, neg.has(F_EVENT_IDX));
        DriverQueue q = fe.queue(0);
        byte[] d = TestExport.pattern(4096, 1);
        ok(q, BlkRequest.write(8, d));
        assertArrayEquals(d, ok(q, BlkRequest.read(8, 4096)).data());
        assertArrayEquals(d, ex.imageBytes(8 * 512L, 4096));
    }

    @ParameterizedTest(name = "lbs={0} queues={1}")
    @CsvSource({"512,1", "4096,4"})
    void configSpaceFields(int lbs, int queues) throws Exception {
        open(export().logicalBlockSize(lbs).numQueues(queues), new VhostUserFrontend.Options().numQueues(queues)
                .configSize(VirtioBlkConfig.SIZE_FULL));
        VirtioBlkConfig c = neg.config();
        assertEquals(VirtioBlkConfig.SIZE_FULL, c.length());
        assertEquals(IMAGE_SIZE / 512, c.capacity(), "capacity in 512-byte sectors");
        assertEquals(1 << 20, c.sizeMax());
        assertEquals(126, c.segMax(), "seg_max = queue size 128 - 2");
        assertEquals(lbs, c.blkSize(), "blk_size = logical-block-size");
        assertEquals(0, c.physicalBlockExp());
        assertEquals(0, c.alignmentOffset());
        assertEquals(1, c.minIoSize());
        assertEquals(1, c.optIoSize());
        assertEquals(1, c.writeback(), "writeback cache on by default");
        assertEquals(queues, c.numQueues());
        assertEquals(32768, c.maxDiscardSectors());
        assertEquals(1, c.maxDiscardSeg());
        assertEquals(lbs / 512, c.discardSectorAlignment());
        assertEquals(32768, c.maxWriteZeroesSectors());
        assertEquals(1, c.maxWriteZeroesSeg());
        assertEquals(1, c.writeZeroesMayUnmap());
        assertEquals(0, c.maxSecureEraseSectors(), "no SECURE_ERASE: fields past 60 bytes read as 0");

        // GET_CONFIG honours offset and size.
        assertArrayEquals(le16(queues), fe.getConfig(VirtioBlkConfig.OFF_NUM_QUEUES, 2, 0));
        assertArrayEquals(le32(lbs), fe.getConfig(VirtioBlkConfig.OFF_BLK_SIZE, 4, 0));
        assertArrayEquals(le64(IMAGE_SIZE / 512), fe.getConfig(VirtioBlkConfig.OFF_CAPACITY, 8, 0));
        assertArrayEquals(new byte[] {1}, fe.getConfig(VirtioBlkConfig.OFF_WRITEBACK, 1, 0));
        byte[] full = fe.getConfig(0, 256, 0);
        byte[] tail = fe.getConfig(50, 20, 0);
        assertArrayEquals(Arrays.copyOfRange(full, 50, 70), tail, "a window in the middle");
        assertArrayEquals(new byte[196], Arrays.copyOfRange(full, 60, 256), "beyond the struct: zeros");
        assertArrayEquals(new byte[6], fe.getConfig(250, 6, 0));
        // The reply echoes offset, size and flags.
        fe.send(GET_CONFIG, VERSION, ByteBuffer.allocate(12 + 3).order(ByteOrder.LITTLE_ENDIAN).putInt(33).putInt(3).putInt(0).array());
        VhostUserFrontend.Message m = fe.receiveReply(GET_CONFIG);
        ByteBuffer r = ByteBuffer.wrap(m.payload()).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(15, m.payload().length);
        assertEquals(33, r.getInt(0));
        assertEquals(3, r.getInt(4));
        assertArrayEquals(Arrays.copyOfRange(full, 33, 36), Arrays.copyOfRange(m.payload(), 12, 15));
    }

    @Test
    void setConfigTogglesWritebackAndRefusesEverythingElse() throws Exception {
        open(export());
        DriverQueue q = fe.queue(0);
        assertTrue(ex.blk.isWriteCacheEnabled());

        fe.setConfig(VirtioBlkConfig.OFF_WRITEBACK, CONFIG_FLAG_WRITABLE, new byte[] {0}); // acked 0 (ackAll)
        assertEquals(0, fe.readConfig(VirtioBlkConfig.SIZE_WITHOUT_SECURE_ERASE).writeback());
        assertFalse(ex.blk.isWriteCacheEnabled(), "writethrough now");
        byte[] d = TestExport.pattern(4096, 2);
        ok(q, BlkRequest.write(0, d));
        assertArrayEquals(d, ex.imageBytes(0, 4096));

        fe.setConfig(VirtioBlkConfig.OFF_WRITEBACK, CONFIG_FLAG_WRITABLE, new byte[] {1});
        assertEquals(1, fe.readConfig(VirtioBlkConfig.SIZE_WITHOUT_SECURE_ERASE).writeback());
        assertTrue(ex.blk.isWriteCacheEnabled());

        byte[] before = fe.getConfig(0, VirtioBlkConfig.SIZE_FULL, 0);
        // Read-only fields, a wider write over writeback, and the migration flag are all refused with a NACK.
        expectNack(() -> fe.setConfig(VirtioBlkConfig.OFF_CAPACITY, CONFIG_FLAG_WRITABLE, new byte[8]));
        expectNack(() -> fe.setConfig(VirtioBlkConfig.OFF_BLK_SIZE, CONFIG_FLAG_WRITABLE, le32(4096)));
        expectNack(() -> fe.setConfig(VirtioBlkConfig.OFF_NUM_QUEUES, CONFIG_FLAG_WRITABLE, le16(8)));
        expectNack(() -> fe.setConfig(VirtioBlkConfig.OFF_WRITEBACK, CONFIG_FLAG_WRITABLE, new byte[] {0, 0}));
        expectNack(() -> fe.setConfig(VirtioBlkConfig.OFF_WRITEBACK, CONFIG_FLAG_MIGRATION, new byte[] {0}));
        // A size field that does not match the payload.
        assertNotEquals(0, fe.sendWithAck(SET_CONFIG, ByteBuffer.allocate(13).order(ByteOrder.LITTLE_ENDIAN)
                .putInt(VirtioBlkConfig.OFF_WRITEBACK).putInt(5).putInt(0).put((byte) 0).array()));
        assertArrayEquals(before, fe.getConfig(0, VirtioBlkConfig.SIZE_FULL, 0), "config unchanged");
        assertTrue(ex.blk.isWriteCacheEnabled());
        ok(q, BlkRequest.flush()); // connection and ring still fine
    }

    @Test
    void withoutFlushNegotiatedTheCacheIsWritethrough() throws Exception {
        open(export(), new VhostUserFrontend.Options().wantedFeatures(VhostUserFrontend.DEFAULT_FEATURES & ~bit(BLK_F_FLUSH)));
        assertFalse(neg.has(BLK_F_FLUSH));
        assertFalse(ex.blk.isWriteCacheEnabled(), "a driver that cannot flush gets stable writes");
        ok(fe.queue(0), BlkRequest.write(0, new byte[512]));
    }

    private static void expectNack(org.junit.jupiter.api.function.Executable e) {
        VhostUserException x = assertThrows(VhostUserException.class, e);
        assertNotEquals(0, x.ackValue(), x::getMessage);
    }

    static byte[] le16(int v) {
        return ByteBuffer.allocate(2).order(ByteOrder.LITTLE_ENDIAN).putShort((short) v).array();
    }

    static byte[] le32(int v) {
        return ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(v).array();
    }

    static byte[] le64(long v) {
        return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array();
    }
}
