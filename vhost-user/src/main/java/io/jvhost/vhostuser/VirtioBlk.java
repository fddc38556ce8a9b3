package io.jvhost.vhostuser;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** virtio-blk constants and the config space layout (virtio 1.x, 5.2). */
final class VirtioBlk {
    private VirtioBlk() {}

    static final int T_IN = 0, T_OUT = 1, T_FLUSH = 4, T_GET_ID = 8, T_DISCARD = 11, T_WRITE_ZEROES = 13;
    /** Write with forced unit access (linux uapi virtio_blk.h, 2025): data is stable before the status is. */
    static final int T_OUT_FUA = 27;
    static final int S_OK = 0, S_IOERR = 1, S_UNSUPP = 2;
    static final int WZ_FLAG_UNMAP = 1;
    static final int ID_BYTES = 20;
    static final int SECTOR_SHIFT = 9;

    // Feature bits.
    static final long F_SIZE_MAX = 1L << 1, F_SEG_MAX = 1L << 2, F_RO = 1L << 5, F_BLK_SIZE = 1L << 6,
            F_FLUSH = 1L << 9, F_TOPOLOGY = 1L << 10, F_CONFIG_WCE = 1L << 11, F_MQ = 1L << 12,
            F_DISCARD = 1L << 13, F_WRITE_ZEROES = 1L << 14,
            /** OUT_FUA requests (type 27) may be sent only when this is negotiated. */
            F_OUT_FUA = 1L << 18;

    // Limits we advertise and enforce.
    static final int MAX_DISCARD_SECTORS = 32768, MAX_WRITE_ZEROES_SECTORS = 32768;
    static final int SIZE_MAX = 1 << 20;
    /** Default virtqueue size of QEMU's vhost-user-blk-pci (queue-size=128): seg_max = size - 2 (header, status). */
    static final int DEFAULT_QUEUE_SIZE = 128;
    static final int SEG_MAX = DEFAULT_QUEUE_SIZE - 2;

    // Config space offsets.
    static final int CFG_CAPACITY = 0, CFG_SIZE_MAX = 8, CFG_SEG_MAX = 12, CFG_BLK_SIZE = 20, CFG_PHYS_EXP = 24,
            CFG_ALIGN_OFF = 25, CFG_MIN_IO = 26, CFG_OPT_IO = 28, CFG_WRITEBACK = 32, CFG_NUM_QUEUES = 34,
            CFG_MAX_DISCARD_SECTORS = 36, CFG_MAX_DISCARD_SEG = 40, CFG_DISCARD_ALIGN = 44,
            CFG_MAX_WZ_SECTORS = 48, CFG_MAX_WZ_SEG = 52, CFG_WZ_MAY_UNMAP = 56;
    /** Size of the struct up to and including the fields we fill (virtio_blk_config in virtio 1.2 is 60 bytes). */
    static final int CONFIG_SIZE = 60;

    static byte[] config(long lengthBytes, int lbs, int numQueues, boolean writeback) {
        ByteBuffer b = ByteBuffer.allocate(CONFIG_SIZE).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(CFG_CAPACITY, lengthBytes >>> SECTOR_SHIFT);
        b.putInt(CFG_SIZE_MAX, SIZE_MAX);
        b.putInt(CFG_SEG_MAX, SEG_MAX);
        b.putInt(CFG_BLK_SIZE, lbs);
        b.put(CFG_PHYS_EXP, (byte) 0);
        b.put(CFG_ALIGN_OFF, (byte) 0);
        b.putShort(CFG_MIN_IO, (short) 1);
        b.putInt(CFG_OPT_IO, 1);
        b.put(CFG_WRITEBACK, (byte) (writeback ? 1 : 0));
        b.putShort(CFG_NUM_QUEUES, (short) numQueues);
        b.putInt(CFG_MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS);
        b.putInt(CFG_MAX_DISCARD_SEG, 1);
        b.putInt(CFG_DISCARD_ALIGN, lbs >> SECTOR_SHIFT);
        b.putInt(CFG_MAX_WZ_SECTORS, MAX_WRITE_ZEROES_SECTORS);
        b.putInt(CFG_MAX_WZ_SEG, 1);
        b.put(CFG_WZ_MAY_UNMAP, (byte) 1);
        return b.array();
    }
}
