package io.jvhost.vhostuser.frontend;

/**
 * Wire constants of the vhost-user protocol (QEMU docs/interop/vhost-user.rst) and of virtio-blk, as the test
 * front-end needs them. Kept separate from the back-end's own constants on purpose: the fixture must not share
 * a (possibly wrong) definition with the code it tests.
 */
public final class VhostUserProtocol {
    private VhostUserProtocol() {}

    // Header flags.
    public static final int VERSION = 0x1;
    public static final int FLAG_REPLY = 0x4;
    public static final int FLAG_NEED_REPLY = 0x8;
    public static final int HEADER_SIZE = 12;
    /** QEMU's VHOST_USER_PAYLOAD_SIZE cap: largest payload a sane peer sends (SET_MEM_TABLE with 8 regions is 264). */
    public static final int MAX_PAYLOAD = 4096 + 12;

    // Front-end -> back-end requests.
    public static final int GET_FEATURES = 1;
    public static final int SET_FEATURES = 2;
    public static final int SET_OWNER = 3;
    public static final int RESET_OWNER = 4;
    public static final int SET_MEM_TABLE = 5;
    public static final int SET_LOG_BASE = 6;
    public static final int SET_LOG_FD = 7;
    public static final int SET_VRING_NUM = 8;
    public static final int SET_VRING_ADDR = 9;
    public static final int SET_VRING_BASE = 10;
    public static final int GET_VRING_BASE = 11;
    public static final int SET_VRING_KICK = 12;
    public static final int SET_VRING_CALL = 13;
    public static final int SET_VRING_ERR = 14;
    public static final int GET_PROTOCOL_FEATURES = 15;
    public static final int SET_PROTOCOL_FEATURES = 16;
    public static final int GET_QUEUE_NUM = 17;
    public static final int SET_VRING_ENABLE = 18;
    public static final int SET_BACKEND_REQ_FD = 21;
    public static final int GET_CONFIG = 24;
    public static final int SET_CONFIG = 25;
    public static final int GET_INFLIGHT_FD = 31;
    public static final int SET_INFLIGHT_FD = 32;
    public static final int RESET_DEVICE = 34;
    public static final int GET_MAX_MEM_SLOTS = 36;
    public static final int ADD_MEM_REG = 37;
    public static final int REM_MEM_REG = 38;
    public static final int SET_STATUS = 39;
    public static final int GET_STATUS = 40;

    // Back-end -> front-end requests (on the BACKEND_REQ channel).
    public static final int BACKEND_CONFIG_CHANGE_MSG = 2;

    // Virtio / vhost feature bits (bit numbers).
    public static final int F_NOTIFY_ON_EMPTY = 24;
    public static final int F_ANY_LAYOUT = 27;
    public static final int F_INDIRECT_DESC = 28;
    public static final int F_EVENT_IDX = 29;
    public static final int F_PROTOCOL_FEATURES = 30;
    public static final int F_LOG_ALL = 26;
    public static final int F_VERSION_1 = 32;
    public static final int F_IOMMU_PLATFORM = 33;
    public static final int F_RING_PACKED = 34;

    public static final int BLK_F_SIZE_MAX = 1;
    public static final int BLK_F_SEG_MAX = 2;
    public static final int BLK_F_GEOMETRY = 4;
    public static final int BLK_F_RO = 5;
    public static final int BLK_F_BLK_SIZE = 6;
    public static final int BLK_F_FLUSH = 9;
    public static final int BLK_F_TOPOLOGY = 10;
    public static final int BLK_F_CONFIG_WCE = 11;
    public static final int BLK_F_MQ = 12;
    public static final int BLK_F_DISCARD = 13;
    public static final int BLK_F_WRITE_ZEROES = 14;
    public static final int BLK_F_SECURE_ERASE = 16;
    /** Proposed (virtio-comment, May 2025): VIRTIO_BLK_F_OUT_FUA / VIRTIO_BLK_T_OUT_FUA. Not in QEMU 7.2. */
    public static final int BLK_F_OUT_FUA = 18;

    // Protocol feature bits.
    public static final int PF_MQ = 0;
    public static final int PF_LOG_SHMFD = 1;
    public static final int PF_REPLY_ACK = 3;
    public static final int PF_BACKEND_REQ = 5;
    public static final int PF_CONFIG = 9;
    public static final int PF_BACKEND_SEND_FD = 10;
    public static final int PF_HOST_NOTIFIER = 11;
    public static final int PF_INFLIGHT_SHMFD = 12;
    public static final int PF_RESET_DEVICE = 13;
    public static final int PF_CONFIGURE_MEM_SLOTS = 15;
    public static final int PF_STATUS = 16;

    // SET_VRING_KICK/CALL/ERR payload.
    public static final long VRING_NOFD_MASK = 1L << 8;

    // SET_VRING_ADDR flags: VHOST_VRING_F_LOG is bit 0 (linux vhost.h), "log used-ring writes at the log address".
    public static final int VRING_ADDR_F_LOG = 1 << 0;

    // Virtio device status (SET_STATUS / GET_STATUS).
    public static final int STATUS_ACKNOWLEDGE = 1;
    public static final int STATUS_DRIVER = 2;
    public static final int STATUS_DRIVER_OK = 4;
    public static final int STATUS_FEATURES_OK = 8;
    public static final int STATUS_NEEDS_RESET = 64;
    public static final int STATUS_FAILED = 128;

    // GET/SET_CONFIG flags.
    public static final int CONFIG_FLAG_WRITABLE = 0;
    public static final int CONFIG_FLAG_MIGRATION = 1;

    // Split ring.
    public static final int VRING_DESC_F_NEXT = 1;
    public static final int VRING_DESC_F_WRITE = 2;
    public static final int VRING_DESC_F_INDIRECT = 4;
    public static final int VRING_USED_F_NO_NOTIFY = 1;
    public static final int VRING_AVAIL_F_NO_INTERRUPT = 1;

    // virtio-blk request types and status.
    public static final int BLK_T_IN = 0;
    public static final int BLK_T_OUT = 1;
    public static final int BLK_T_FLUSH = 4;
    public static final int BLK_T_GET_ID = 8;
    public static final int BLK_T_GET_LIFETIME = 10;
    public static final int BLK_T_DISCARD = 11;
    public static final int BLK_T_WRITE_ZEROES = 13;
    public static final int BLK_T_SECURE_ERASE = 14;
    public static final int BLK_T_OUT_FUA = 27;
    public static final int BLK_S_OK = 0;
    public static final int BLK_S_IOERR = 1;
    public static final int BLK_S_UNSUPP = 2;
    public static final int BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
    public static final int BLK_ID_BYTES = 20;
    public static final int SECTOR_SIZE = 512;

    public static long bit(int n) {
        return 1L << n;
    }

    public static String requestName(int req) {
        switch (req) {
            case GET_FEATURES: return "GET_FEATURES";
            case SET_FEATURES: return "SET_FEATURES";
            case SET_OWNER: return "SET_OWNER";
            case RESET_OWNER: return "RESET_OWNER";
            case SET_MEM_TABLE: return "SET_MEM_TABLE";
            case SET_LOG_BASE: return "SET_LOG_BASE";
            case SET_LOG_FD: return "SET_LOG_FD";
            case SET_VRING_NUM: return "SET_VRING_NUM";
            case SET_VRING_ADDR: return "SET_VRING_ADDR";
            case SET_VRING_BASE: return "SET_VRING_BASE";
            case GET_VRING_BASE: return "GET_VRING_BASE";
            case SET_VRING_KICK: return "SET_VRING_KICK";
            case SET_VRING_CALL: return "SET_VRING_CALL";
            case SET_VRING_ERR: return "SET_VRING_ERR";
            case GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
            case SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
            case GET_QUEUE_NUM: return "GET_QUEUE_NUM";
            case SET_VRING_ENABLE: return "SET_VRING_ENABLE";
            case SET_BACKEND_REQ_FD: return "SET_BACKEND_REQ_FD";
            case GET_CONFIG: return "GET_CONFIG";
            case SET_CONFIG: return "SET_CONFIG";
            case GET_INFLIGHT_FD: return "GET_INFLIGHT_FD";
            case SET_INFLIGHT_FD: return "SET_INFLIGHT_FD";
            case RESET_DEVICE: return "RESET_DEVICE";
            case GET_MAX_MEM_SLOTS: return "GET_MAX_MEM_SLOTS";
            case ADD_MEM_REG: return "ADD_MEM_REG";
            case REM_MEM_REG: return "REM_MEM_REG";
            case SET_STATUS: return "SET_STATUS";
            case GET_STATUS: return "GET_STATUS";
            default: return "REQUEST_" + req;
        }
    }
}
