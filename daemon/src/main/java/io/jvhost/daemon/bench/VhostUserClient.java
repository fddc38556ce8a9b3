package io.jvhost.daemon.bench;

import org.newsclub.net.unix.AFUNIXSocket;
import org.newsclub.net.unix.AFUNIXSocketAddress;
import org.newsclub.net.unix.FileDescriptorCast;

import java.io.EOFException;
import java.io.FileDescriptor;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;

/**
 * The control plane of the bench's front-end: vhost-user messages over the unix socket, in the order QEMU 7.2's
 * vhost-user-blk sends them. Blocking I/O with a bound on every reply; used only during setup and teardown, so
 * it may allocate freely. Every reply is checked (request, reply flag, size): a back-end that answers nonsense
 * ends the run with a {@link BenchException} rather than a garbage measurement.
 */
final class VhostUserClient implements AutoCloseable {
    // Requests (docs/interop/vhost-user.rst).
    static final int GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5, SET_VRING_NUM = 8,
            SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12, SET_VRING_CALL = 13,
            GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18,
            GET_CONFIG = 24, GET_MAX_MEM_SLOTS = 36, ADD_MEM_REG = 37;
    static final int VERSION = 0x1, FLAG_REPLY = 0x4, FLAG_NEED_REPLY = 0x8, HEADER = 12;

    // Protocol feature bits.
    static final int PF_MQ = 0, PF_REPLY_ACK = 3, PF_CONFIG = 9, PF_CONFIGURE_MEM_SLOTS = 15;

    private final AFUNIXSocket sock;
    private final InputStream in;
    private final OutputStream out;
    private final int timeoutMs;
    private boolean replyAck;

    private VhostUserClient(AFUNIXSocket sock, int timeoutMs) throws IOException {
        this.sock = sock;
        this.timeoutMs = timeoutMs;
        // junixsocket drops received fds silently with the default buffer size of 0; we expect none, but an
        // unexpected one must be received (and closed with the socket) rather than leak into the peer's accounting.
        sock.setAncillaryReceiveBufferSize(1024);
        sock.setSoTimeout(timeoutMs);
        this.in = sock.getInputStream();
        this.out = sock.getOutputStream();
    }

    static VhostUserClient connect(Path socket, int timeoutMs) throws IOException {
        try {
            return new VhostUserClient(AFUNIXSocket.connectTo(AFUNIXSocketAddress.of(socket)), timeoutMs);
        } catch (IOException e) {
            throw new BenchException("cannot connect to " + socket + ": " + e.getMessage(), e);
        }
    }

    /** From now on every message without a reply of its own asks for an ack (REPLY_ACK), which is checked. */
    void useReplyAck(boolean on) {
        this.replyAck = on;
    }

    // ------------------------------------------------------------------------------------------ raw messages

    private void send(int request, int flags, byte[] payload, int... fds) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(HEADER + payload.length).order(ByteOrder.nativeOrder());
        b.putInt(request).putInt(flags).putInt(payload.length).put(payload);
        if (fds.length > 0) {
            FileDescriptor[] f = new FileDescriptor[fds.length];
            for (int i = 0; i < fds.length; i++) f[i] = FileDescriptorCast.unsafeUsing(fds[i]).getFileDescriptor();
            sock.setOutboundFileDescriptors(f);
        }
        out.write(b.array());
        out.flush();
    }

    /** Reads one reply to {@code request}: exactly 12 header bytes, then exactly its payload. */
    private byte[] reply(int request) throws IOException {
        byte[] h = readFully(HEADER);
        ByteBuffer hb = ByteBuffer.wrap(h).order(ByteOrder.nativeOrder());
        int req = hb.getInt(), flags = hb.getInt(), size = hb.getInt();
        if (size < 0 || size > 4096) throw new BenchException("back-end reply to " + name(request) + " has size " + Integer.toUnsignedString(size));
        byte[] p = readFully(size);
        if (req != request || (flags & FLAG_REPLY) == 0) {
            throw new BenchException("back-end answered " + name(request) + " with request " + req + " flags 0x" + Integer.toHexString(flags));
        }
        return p;
    }

    private byte[] readFully(int n) throws IOException {
        byte[] b = new byte[n];
        int off = 0;
        while (off < n) {
            int r;
            try {
                r = in.read(b, off, n - off);
            } catch (SocketTimeoutException e) {
                throw new BenchException("back-end did not answer within " + timeoutMs + " ms");
            }
            sock.getReceivedFileDescriptors(); // none expected; junixsocket closes them with the socket
            if (r < 0) throw new EOFException("back-end closed the connection");
            off += r;
        }
        return b;
    }

    private long requestU64(int request) throws IOException {
        send(request, VERSION, new byte[0]);
        byte[] p = reply(request);
        if (p.length != 8) throw new BenchException(name(request) + " reply has " + p.length + " bytes, expected 8");
        return ByteBuffer.wrap(p).order(ByteOrder.nativeOrder()).getLong();
    }

    /** A message without a reply of its own; with REPLY_ACK on, asks for the ack and checks it is 0. */
    private void sendNoReply(int request, byte[] payload, int... fds) throws IOException {
        send(request, VERSION | (replyAck ? FLAG_NEED_REPLY : 0), payload, fds);
        if (!replyAck) return;
        byte[] p = reply(request);
        long v = p.length == 8 ? ByteBuffer.wrap(p).order(ByteOrder.nativeOrder()).getLong() : -1;
        if (v != 0) throw new BenchException("back-end refused " + name(request) + " (ack " + v + ")");
    }

    private static byte[] u64(long v) {
        return ByteBuffer.allocate(8).order(ByteOrder.nativeOrder()).putLong(v).array();
    }

    private static byte[] vringState(int index, int num) {
        return ByteBuffer.allocate(8).order(ByteOrder.nativeOrder()).putInt(index).putInt(num).array();
    }

    // ---------------------------------------------------------------------------------------- typed messages

    long getFeatures() throws IOException { return requestU64(GET_FEATURES); }
    void setFeatures(long f) throws IOException { sendNoReply(SET_FEATURES, u64(f)); }
    long getProtocolFeatures() throws IOException { return requestU64(GET_PROTOCOL_FEATURES); }
    /** Never with need_reply: the back-end only knows about REPLY_ACK once this message is handled. */
    void setProtocolFeatures(long f) throws IOException { send(SET_PROTOCOL_FEATURES, VERSION, u64(f)); }
    long getQueueNum() throws IOException { return requestU64(GET_QUEUE_NUM); }
    long getMaxMemSlots() throws IOException { return requestU64(GET_MAX_MEM_SLOTS); }
    void setOwner() throws IOException { sendNoReply(SET_OWNER, new byte[0]); }

    /** GET_CONFIG of bytes [0, size): the reply must have the request's size (spec). */
    byte[] getConfig(int size) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(12 + size).order(ByteOrder.nativeOrder()).putInt(0).putInt(size).putInt(0);
        send(GET_CONFIG, VERSION, b.array());
        byte[] p = reply(GET_CONFIG);
        if (p.length != 12 + size) throw new BenchException("GET_CONFIG reply has " + p.length + " bytes, expected " + (12 + size));
        byte[] cfg = new byte[size];
        System.arraycopy(p, 12, cfg, 0, size);
        return cfg;
    }

    private static byte[] region(long gpa, long size, long uaddr, long mmapOffset) {
        return ByteBuffer.allocate(32).order(ByteOrder.nativeOrder()).putLong(gpa).putLong(size).putLong(uaddr).putLong(mmapOffset).array();
    }

    /** ADD_MEM_REG (CONFIGURE_MEM_SLOTS, what QEMU 7.2 uses when offered): {u64 padding, region} + 1 fd. */
    void addMemReg(GuestRam ram) throws IOException {
        byte[] p = ByteBuffer.allocate(40).order(ByteOrder.nativeOrder()).putLong(0).put(region(0, ram.size, ram.uaddr, 0)).array();
        sendNoReply(ADD_MEM_REG, p, ram.fd);
    }

    /** SET_MEM_TABLE with the one region: {u32 nregions, u32 padding, region} + 1 fd. */
    void setMemTable(GuestRam ram) throws IOException {
        byte[] p = ByteBuffer.allocate(40).order(ByteOrder.nativeOrder()).putInt(1).putInt(0).put(region(0, ram.size, ram.uaddr, 0)).array();
        sendNoReply(SET_MEM_TABLE, p, ram.fd);
    }

    void setVringNum(int index, int num) throws IOException { sendNoReply(SET_VRING_NUM, vringState(index, num)); }
    void setVringBase(int index, int base) throws IOException { sendNoReply(SET_VRING_BASE, vringState(index, base)); }

    /** Ring addresses are front-end virtual addresses (uaddr), as QEMU sends them. */
    void setVringAddr(int index, long descUaddr, long usedUaddr, long availUaddr) throws IOException {
        sendNoReply(SET_VRING_ADDR, ByteBuffer.allocate(40).order(ByteOrder.nativeOrder()).putInt(index).putInt(0)
                .putLong(descUaddr).putLong(usedUaddr).putLong(availUaddr).putLong(0).array());
    }

    void setVringKick(int index, int fd) throws IOException { sendNoReply(SET_VRING_KICK, u64(index & 0xff), fd); }
    void setVringCall(int index, int fd) throws IOException { sendNoReply(SET_VRING_CALL, u64(index & 0xff), fd); }
    void setVringEnable(int index, boolean on) throws IOException { sendNoReply(SET_VRING_ENABLE, vringState(index, on ? 1 : 0)); }

    /** Stops the ring; returns the back-end's next avail index. */
    int getVringBase(int index) throws IOException {
        send(GET_VRING_BASE, VERSION, vringState(index, 0));
        byte[] p = reply(GET_VRING_BASE);
        if (p.length != 8) throw new BenchException("GET_VRING_BASE reply has " + p.length + " bytes, expected 8");
        ByteBuffer b = ByteBuffer.wrap(p).order(ByteOrder.nativeOrder());
        int idx = b.getInt();
        if (idx != index) throw new BenchException("GET_VRING_BASE reply for vring " + idx + ", asked " + index);
        return b.getInt();
    }

    static String name(int request) {
        return switch (request) {
            case GET_FEATURES -> "GET_FEATURES";
            case SET_FEATURES -> "SET_FEATURES";
            case SET_OWNER -> "SET_OWNER";
            case SET_MEM_TABLE -> "SET_MEM_TABLE";
            case SET_VRING_NUM -> "SET_VRING_NUM";
            case SET_VRING_ADDR -> "SET_VRING_ADDR";
            case SET_VRING_BASE -> "SET_VRING_BASE";
            case GET_VRING_BASE -> "GET_VRING_BASE";
            case SET_VRING_KICK -> "SET_VRING_KICK";
            case SET_VRING_CALL -> "SET_VRING_CALL";
            case GET_PROTOCOL_FEATURES -> "GET_PROTOCOL_FEATURES";
            case SET_PROTOCOL_FEATURES -> "SET_PROTOCOL_FEATURES";
            case GET_QUEUE_NUM -> "GET_QUEUE_NUM";
            case SET_VRING_ENABLE -> "SET_VRING_ENABLE";
            case GET_CONFIG -> "GET_CONFIG";
            case GET_MAX_MEM_SLOTS -> "GET_MAX_MEM_SLOTS";
            case ADD_MEM_REG -> "ADD_MEM_REG";
            default -> "REQUEST_" + request;
        };
    }

    @Override
    public void close() {
        try {
            sock.close();
        } catch (IOException ignored) {
            // closing is best effort: the run is over either way
        }
    }
}
