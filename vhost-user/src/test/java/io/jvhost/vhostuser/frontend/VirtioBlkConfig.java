package io.jvhost.vhostuser.frontend;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Decoded struct virtio_blk_config (virtio 1.2 §5.2.4, little-endian). Fields beyond the bytes supplied decode
 * as 0; {@link #length} says how many bytes were there. Offsets are public so SET_CONFIG tests can target one.
 */
public record VirtioBlkConfig(
        int length,
        long capacity,
        long sizeMax,
        long segMax,
        int cylinders,
        int heads,
        int sectors,
        long blkSize,
        int physicalBlockExp,
        int alignmentOffset,
        int minIoSize,
        long optIoSize,
        int writeback,
        int numQueues,
        long maxDiscardSectors,
        long maxDiscardSeg,
        long discardSectorAlignment,
        long maxWriteZeroesSectors,
        long maxWriteZeroesSeg,
        int writeZeroesMayUnmap,
        long maxSecureEraseSectors,
        long maxSecureEraseSeg,
        long secureEraseSectorAlignment) {

    public static final int OFF_CAPACITY = 0, OFF_SIZE_MAX = 8, OFF_SEG_MAX = 12, OFF_GEOMETRY = 16, OFF_BLK_SIZE = 20,
            OFF_TOPOLOGY = 24, OFF_WRITEBACK = 32, OFF_NUM_QUEUES = 34, OFF_MAX_DISCARD_SECTORS = 36,
            OFF_MAX_DISCARD_SEG = 40, OFF_DISCARD_SECTOR_ALIGNMENT = 44, OFF_MAX_WRITE_ZEROES_SECTORS = 48,
            OFF_MAX_WRITE_ZEROES_SEG = 52, OFF_WRITE_ZEROES_MAY_UNMAP = 56, OFF_MAX_SECURE_ERASE_SECTORS = 60;
    /** Up to and including unused1[3] (what QEMU 7.2 and QSD use without SECURE_ERASE). */
    public static final int SIZE_WITHOUT_SECURE_ERASE = 60;
    /** The full struct as of virtio 1.2 / Linux 6.x headers. */
    public static final int SIZE_FULL = 72;

    public static VirtioBlkConfig decode(byte[] raw) {
        ByteBuffer b = ByteBuffer.wrap(java.util.Arrays.copyOf(raw, Math.max(raw.length, SIZE_FULL))).order(ByteOrder.LITTLE_ENDIAN);
        return new VirtioBlkConfig(
                raw.length,
                b.getLong(0),
                u32(b, 8),
                u32(b, 12),
                b.getShort(16) & 0xffff,
                b.get(18) & 0xff,
                b.get(19) & 0xff,
                u32(b, 20),
                b.get(24) & 0xff,
                b.get(25) & 0xff,
                b.getShort(26) & 0xffff,
                u32(b, 28),
                b.get(32) & 0xff,
                b.getShort(34) & 0xffff,
                u32(b, 36),
                u32(b, 40),
                u32(b, 44),
                u32(b, 48),
                u32(b, 52),
                b.get(56) & 0xff,
                u32(b, 60),
                u32(b, 64),
                u32(b, 68));
    }

    private static long u32(ByteBuffer b, int off) {
        return b.getInt(off) & 0xffffffffL;
    }

    /** Capacity in bytes. */
    public long capacityBytes() {
        return capacity * VhostUserProtocol.SECTOR_SIZE;
    }
}
