package io.jvhost.vhostuser;

/** vhost-user wire constants (QEMU docs/interop/vhost-user.rst). */
final class Proto {
    private Proto() {}

    static final int HDR_SIZE = 12;
    static final int VERSION = 0x1;
    static final int FLAG_VERSION_MASK = 0x3;
    static final int FLAG_REPLY = 1 << 2;
    static final int FLAG_NEED_REPLY = 1 << 3;
    /** Largest payload we accept: bigger than any legal message (GET_CONFIG is 12 + 256 bytes). */
    static final int MAX_PAYLOAD = 4096;
    static final int MAX_FDS = 8;

    // Front-end requests.
    static final int GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, RESET_OWNER = 4, SET_MEM_TABLE = 5,
            SET_LOG_BASE = 6, SET_LOG_FD = 7, SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10,
            GET_VRING_BASE = 11, SET_VRING_KICK = 12, SET_VRING_CALL = 13, SET_VRING_ERR = 14,
            GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18,
            SEND_RARP = 19, NET_SET_MTU = 20, SET_BACKEND_REQ_FD = 21, IOTLB_MSG = 22, SET_VRING_ENDIAN = 23,
            GET_CONFIG = 24, SET_CONFIG = 25, GET_INFLIGHT_FD = 31, SET_INFLIGHT_FD = 32, RESET_DEVICE = 34,
            GET_MAX_MEM_SLOTS = 36, ADD_MEM_REG = 37, REM_MEM_REG = 38, SET_STATUS = 39, GET_STATUS = 40;

    // Back-end requests (on the SET_BACKEND_REQ_FD channel).
    static final int BACKEND_CONFIG_CHANGE_MSG = 2;

    // Virtio feature bits (device-independent).
    static final long F_NOTIFY_ON_EMPTY = 1L << 24, F_LOG_ALL = 1L << 26, F_INDIRECT_DESC = 1L << 28,
            F_EVENT_IDX = 1L << 29, F_PROTOCOL_FEATURES = 1L << 30, F_VERSION_1 = 1L << 32;

    // Protocol feature bits.
    static final long PF_MQ = 1L << 0, PF_LOG_SHMFD = 1L << 1, PF_REPLY_ACK = 1L << 3, PF_BACKEND_REQ = 1L << 5,
            PF_CONFIG = 1L << 9, PF_RESET_DEVICE = 1L << 13, PF_CONFIGURE_MEM_SLOTS = 1L << 15, PF_STATUS = 1L << 16;

    static final long VRING_NOFD_MASK = 1L << 8;
    static final int VRING_IDX_MASK = 0xff;

    static String name(int req) {
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
            default: return "request " + req;
        }
    }
}
