package io.jvhost.vhostuser.frontend;

import io.jvhost.iothread.sys.EventFd;
import org.newsclub.net.unix.AFUNIXSocket;
import org.newsclub.net.unix.AFUNIXSocketAddress;
import org.newsclub.net.unix.AFUNIXSocketChannel;
import org.newsclub.net.unix.AFUNIXServerSocketChannel;
import org.newsclub.net.unix.FileDescriptorCast;

import java.io.EOFException;
import java.io.FileDescriptor;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;

/**
 * A vhost-user front-end that plays QEMU's role against a vhost-user-blk back-end: connects to its unix socket,
 * sends every front-end message a blk back-end must handle (with optional REPLY_ACK checking), shares
 * {@link GuestMemory} through SET_MEM_TABLE or ADD_MEM_REG, and drives {@link DriverQueue}s.
 *
 * <p>{@link #handshake} replays the message sequence of QEMU 7.2's vhost-user-blk device (realize, then
 * DRIVER_OK); {@link #stop} replays its stop (SET_VRING_ENABLE 0, then GET_VRING_BASE). Raw {@link #send} /
 * {@link #sendBytes} / {@link #receive} exist for malformed-input tests.
 *
 * <p>Not thread-safe. Closing it closes the socket, the queues it created and its eventfds; the
 * {@link GuestMemory} belongs to the caller (so a second front-end can reconnect to the same guest).
 */
public final class VhostUserFrontend implements AutoCloseable {
    /**
     * A message as read off the socket. junixsocket closes received fds that are still open when the socket
     * closes; dup one ({@code FileDescriptorCast.duplicating}) to keep it longer.
     */
    public record Message(int request, int flags, byte[] payload, FileDescriptor[] fds) {
        public boolean isReply() { return (flags & FLAG_REPLY) != 0; }

        /** Raw number of received fd {@code i}. */
        public int fd(int i) throws IOException { return FileDescriptorCast.using(fds[i]).as(Integer.class); }

        /** Payload as a u64 (replies to GET_FEATURES, GET_QUEUE_NUM, REPLY_ACK ...). */
        public long u64() throws VhostUserException {
            if (payload.length != 8) throw new VhostUserException(requestName(request) + " reply has " + payload.length + " payload bytes, expected 8");
            return ByteBuffer.wrap(payload).order(ByteOrder.nativeOrder()).getLong();
        }

        @Override
        public String toString() {
            return requestName(request) + "[flags=0x" + Integer.toHexString(flags) + " size=" + payload.length + " fds=" + fds.length + "]";
        }
    }

    /** Handshake knobs. Defaults: what QEMU 7.2's vhost-user-blk would negotiate, minus inflight/log. */
    public static final class Options {
        int numQueues = 1;
        int queueSize = 128;
        boolean eventIdx = true;
        boolean indirect = true;
        boolean memSlots = true;
        boolean replyAck = true;
        boolean backendReq = true;
        boolean kickAlways;
        boolean maskedCallAtRealize = true;
        int configSize = VirtioBlkConfig.SIZE_WITHOUT_SECURE_ERASE;
        long wantedFeatures = DEFAULT_FEATURES;
        long wantedProtocolFeatures = DEFAULT_PROTOCOL_FEATURES;
        List<DriverQueue> reuseQueues;
        int[] vringBases;

        public Options numQueues(int n) { this.numQueues = n; return this; }
        public Options queueSize(int n) { this.queueSize = n; return this; }
        /** Negotiate VIRTIO_RING_F_EVENT_IDX (if offered) and drive the rings with used_event/avail_event. */
        public Options eventIdx(boolean on) { this.eventIdx = on; return this; }
        /** Negotiate VIRTIO_RING_F_INDIRECT_DESC (if offered). */
        public Options indirect(boolean on) { this.indirect = on; return this; }
        /** Use ADD_MEM_REG (when CONFIGURE_MEM_SLOTS is offered, as QEMU 7.2 does) instead of SET_MEM_TABLE. */
        public Options memSlots(boolean on) { this.memSlots = on; return this; }
        /** Negotiate REPLY_ACK (if offered) and set need_reply on every message that has no reply of its own. */
        public Options replyAck(boolean on) { this.replyAck = on; return this; }
        /** Send SET_BACKEND_REQ_FD when BACKEND_REQ is negotiated. */
        public Options backendReq(boolean on) { this.backendReq = on; return this; }
        /** Kick after every submit regardless of the device's notification suppression. */
        public Options kickAlways(boolean on) { this.kickAlways = on; return this; }
        /** Like QEMU: at realize send a placeholder ("masked") call eventfd, replace it at DRIVER_OK. */
        public Options maskedCallAtRealize(boolean on) { this.maskedCallAtRealize = on; return this; }
        public Options configSize(int n) { this.configSize = n; return this; }
        /** Virtio feature bits the driver accepts (PROTOCOL_FEATURES is handled separately). */
        public Options wantedFeatures(long f) { this.wantedFeatures = f; return this; }
        public Options wantedProtocolFeatures(long f) { this.wantedProtocolFeatures = f; return this; }
        /**
         * Reconnect: start these existing queues (same guest memory) instead of creating new ones; they are not
         * owned by the new front-end. {@code bases} = SET_VRING_BASE per queue (null: each queue's used idx, as
         * QEMU does after a back-end crash).
         */
        public Options reuseQueues(List<DriverQueue> qs, int[] bases) { this.reuseQueues = qs; this.vringBases = bases; return this; }
    }

    /** What {@link #handshake} negotiated. {@code config} is null when CONFIG was not negotiated. */
    public record Negotiated(long offeredFeatures, long features, long offeredProtocolFeatures, long protocolFeatures,
                             long maxQueues, long maxMemSlots, VirtioBlkConfig config) {
        public boolean has(int featureBit) { return (features & bit(featureBit)) != 0; }
        public boolean hasProtocol(int bit) { return (protocolFeatures & bit(bit)) != 0; }
    }

    /**
     * What a Linux guest behind QEMU 7.2's vhost-user-blk ends up acking: QEMU's user_feature_bits, split ring only,
     * without the legacy NOTIFY_ON_EMPTY (Linux never acks it for a VERSION_1 device; with it a back-end must
     * notify whenever the ring runs empty, defeating interrupt suppression). OUT_FUA is included for back-ends
     * that offer it (QEMU 7.2 did not know it).
     */
    public static final long DEFAULT_FEATURES = bit(BLK_F_SIZE_MAX) | bit(BLK_F_SEG_MAX) | bit(BLK_F_GEOMETRY)
            | bit(BLK_F_BLK_SIZE) | bit(BLK_F_TOPOLOGY) | bit(BLK_F_MQ) | bit(BLK_F_RO) | bit(BLK_F_FLUSH)
            | bit(BLK_F_CONFIG_WCE) | bit(BLK_F_DISCARD) | bit(BLK_F_WRITE_ZEROES) | bit(BLK_F_OUT_FUA)
            | bit(F_VERSION_1) | bit(F_INDIRECT_DESC) | bit(F_EVENT_IDX);

    /** QEMU 7.2's protocol feature mask for blk, minus the ones this fixture does not implement (inflight, status, postcopy). */
    public static final long DEFAULT_PROTOCOL_FEATURES = bit(PF_MQ) | bit(PF_LOG_SHMFD) | bit(PF_REPLY_ACK)
            | bit(PF_BACKEND_REQ) | bit(PF_CONFIG) | bit(PF_BACKEND_SEND_FD) | bit(PF_HOST_NOTIFIER)
            | bit(PF_RESET_DEVICE) | bit(PF_CONFIGURE_MEM_SLOTS);

    private final AFUNIXSocket sock;
    private final InputStream in;
    private final OutputStream out;
    private final GuestMemory mem;
    private Duration replyTimeout = Duration.ofSeconds(10);
    private boolean ackAll;
    private long protocolFeatures;
    private final List<DriverQueue> queues = new ArrayList<>();
    private final List<DriverQueue> ownedQueues = new ArrayList<>();
    private final List<EventFd> ownedEventFds = new ArrayList<>();
    /** The BACKEND_REQ channel: [0] our end, [1] the end sent to the back-end (kept open, see setBackendReqFd). */
    private AFUNIXSocketChannel[] backendPair;
    private static final java.util.concurrent.atomic.AtomicLong PAIR_SEQ = new java.util.concurrent.atomic.AtomicLong();
    private AFUNIXSocket backendSock;
    private boolean ringsNeedEnable;
    private boolean closed;

    private VhostUserFrontend(AFUNIXSocket sock, GuestMemory mem) throws IOException {
        this.sock = sock;
        this.mem = mem;
        // Default 0 silently drops received fds (java-stack.md §1).
        sock.setAncillaryReceiveBufferSize(1024);
        this.in = sock.getInputStream();
        this.out = sock.getOutputStream();
    }

    /** Connects to a listening back-end. */
    public static VhostUserFrontend connect(Path socket, GuestMemory mem) throws IOException {
        return new VhostUserFrontend(AFUNIXSocket.connectTo(AFUNIXSocketAddress.of(socket)), mem);
    }

    public GuestMemory memory() { return mem; }
    public List<DriverQueue> queues() { return Collections.unmodifiableList(queues); }
    public DriverQueue queue(int i) { return queues.get(i); }
    public long protocolFeatures() { return protocolFeatures; }

    /** Bound for every reply wait (default 10 s). */
    public void setReplyTimeout(Duration d) { this.replyTimeout = d; }

    /**
     * When on (and REPLY_ACK was negotiated through {@link #setProtocolFeatures}), every message without a reply of
     * its own carries need_reply and its ack is checked: non-zero throws {@link VhostUserException}.
     */
    public void setAckAll(boolean on) { this.ackAll = on; }

    private boolean replyAckOn() { return ackAll && (protocolFeatures & bit(PF_REPLY_ACK)) != 0; }

    // ============================================================================================ raw I/O

    /** Sends one message: header (request, flags, payload length) + payload, with {@code fds} as SCM_RIGHTS. */
    public void send(int request, int flags, byte[] payload, int... fds) throws IOException {
        byte[] p = payload == null ? new byte[0] : payload;
        ByteBuffer b = ByteBuffer.allocate(HEADER_SIZE + p.length).order(ByteOrder.nativeOrder());
        b.putInt(request).putInt(flags).putInt(p.length).put(p);
        sendBytes(b.array(), fds);
    }

    /** Sends arbitrary bytes in one write (a lying size field, a truncated header ...), fds attached. */
    public void sendBytes(byte[] bytes, int... fds) throws IOException {
        checkOpen();
        if (fds != null && fds.length > 0) {
            FileDescriptor[] f = new FileDescriptor[fds.length];
            for (int i = 0; i < fds.length; i++) f[i] = FileDescriptorCast.unsafeUsing(fds[i]).getFileDescriptor();
            sock.setOutboundFileDescriptors(f);
        }
        out.write(bytes);
        out.flush();
    }

    /** Reads one message (exactly 12 header bytes, then exactly size bytes), waiting at most the reply timeout. */
    public Message receive() throws IOException {
        return receive(replyTimeout);
    }

    public Message receive(Duration timeout) throws IOException {
        checkOpen();
        return readMessage(sock, in, timeout, "back-end");
    }

    private static Message readMessage(AFUNIXSocket s, InputStream is, Duration timeout, String who) throws IOException {
        s.setSoTimeout((int) Math.max(1, Math.min(Integer.MAX_VALUE, timeout.toMillis())));
        List<FileDescriptor> fds = new ArrayList<>();
        byte[] hdr = readFully(s, is, HEADER_SIZE, fds, who);
        ByteBuffer h = ByteBuffer.wrap(hdr).order(ByteOrder.nativeOrder());
        int req = h.getInt(), flags = h.getInt(), size = h.getInt();
        if (size < 0 || size > MAX_PAYLOAD) throw new VhostUserException(who + " sent " + requestName(req) + " with payload size " + Integer.toUnsignedString(size));
        byte[] payload = readFully(s, is, size, fds, who);
        return new Message(req, flags, payload, fds.toArray(new FileDescriptor[0]));
    }

    private static byte[] readFully(AFUNIXSocket s, InputStream is, int n, List<FileDescriptor> fds, String who) throws IOException {
        byte[] b = new byte[n];
        int off = 0;
        while (off < n) {
            int r;
            try {
                r = is.read(b, off, n - off);
            } catch (SocketTimeoutException e) {
                throw new VhostUserException("timed out waiting for " + who + " (" + off + "/" + n + " bytes)");
            }
            FileDescriptor[] got = s.getReceivedFileDescriptors();
            if (got != null) fds.addAll(Arrays.asList(got));
            if (r < 0) throw new EOFException(who + " closed the connection (" + off + "/" + n + " bytes)");
            off += r;
        }
        return b;
    }

    /**
     * Waits until the back-end closes the connection (EOF or reset), discarding anything it still sends.
     * Returns false if the connection is still open after {@code timeout}.
     */
    public boolean awaitDisconnect(Duration timeout) throws IOException {
        checkOpen();
        long deadline = System.nanoTime() + timeout.toNanos();
        byte[] sink = new byte[4096];
        while (true) {
            long left = (deadline - System.nanoTime()) / 1_000_000;
            if (left <= 0) return false;
            sock.setSoTimeout((int) Math.min(left, Integer.MAX_VALUE));
            try {
                if (in.read(sink) < 0) return true;
                sock.getReceivedFileDescriptors();
            } catch (SocketTimeoutException e) {
                return false;
            } catch (SocketException e) {
                return true; // ECONNRESET and friends: closed, too
            }
        }
    }

    /** Reads a reply and checks it answers {@code request}. */
    public Message receiveReply(int request) throws IOException {
        Message m = receive();
        if (m.request() != request) throw new VhostUserException("expected reply to " + requestName(request) + ", got " + m);
        if (!m.isReply() || (m.flags() & 3) != VERSION) throw new VhostUserException("bad reply flags: " + m);
        return m;
    }

    /**
     * Sends with need_reply set and returns the back-end's u64 ack (0 = success), without judging it.
     */
    public long sendWithAck(int request, byte[] payload, int... fds) throws IOException {
        send(request, VERSION | FLAG_NEED_REPLY, payload, fds);
        return receiveReply(request).u64();
    }

    /** A message without a reply of its own: acked (and checked) when {@link #setAckAll} applies. */
    private void sendNoReply(int request, byte[] payload, int... fds) throws IOException {
        if (replyAckOn()) {
            long ack = sendWithAck(request, payload, fds);
            if (ack != 0) throw new VhostUserException(requestName(request) + " was NACKed with " + ack, ack);
        } else {
            send(request, VERSION, payload, fds);
        }
    }

    private long requestU64(int request, byte[] payload) throws IOException {
        send(request, VERSION, payload);
        return receiveReply(request).u64();
    }

    private static byte[] u64(long v) {
        return ByteBuffer.allocate(8).order(ByteOrder.nativeOrder()).putLong(v).array();
    }

    private static byte[] vringState(int index, int num) {
        return ByteBuffer.allocate(8).order(ByteOrder.nativeOrder()).putInt(index).putInt(num).array();
    }

    // ======================================================================================= typed messages

    public long getFeatures() throws IOException { return requestU64(GET_FEATURES, null); }

    public void setFeatures(long f) throws IOException { sendNoReply(SET_FEATURES, u64(f)); }

    public long getProtocolFeatures() throws IOException { return requestU64(GET_PROTOCOL_FEATURES, null); }

    /** Also records the set, so REPLY_ACK use follows what was negotiated. */
    public void setProtocolFeatures(long f) throws IOException {
        // The ack (if any) is governed by the previous set: the back-end only knows REPLY_ACK after this message.
        sendNoReply(SET_PROTOCOL_FEATURES, u64(f));
        this.protocolFeatures = f;
    }

    public void setOwner() throws IOException { sendNoReply(SET_OWNER, null); }

    public void resetOwner() throws IOException { sendNoReply(RESET_OWNER, null); }

    /** Region description as on the wire: gpa, size, uaddr, mmap_offset. */
    public static byte[] regionBytes(GuestMemory.Region r) {
        return ByteBuffer.allocate(32).order(ByteOrder.nativeOrder()).putLong(r.gpa()).putLong(r.size()).putLong(r.uaddr()).putLong(r.mmapOffset()).array();
    }

    /** SET_MEM_TABLE with all regions of the guest. */
    public void setMemTable() throws IOException { setMemTable(mem.regions()); }

    public void setMemTable(List<GuestMemory.Region> rs) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(8 + 32 * rs.size()).order(ByteOrder.nativeOrder());
        b.putInt(rs.size()).putInt(0);
        int[] fds = new int[rs.size()];
        for (int i = 0; i < rs.size(); i++) {
            b.put(regionBytes(rs.get(i)));
            fds[i] = rs.get(i).fd();
        }
        sendNoReply(SET_MEM_TABLE, b.array(), fds);
    }

    public long getMaxMemSlots() throws IOException { return requestU64(GET_MAX_MEM_SLOTS, null); }

    public void addMemReg(GuestMemory.Region r) throws IOException {
        sendNoReply(ADD_MEM_REG, ByteBuffer.allocate(40).order(ByteOrder.nativeOrder()).putLong(0).put(regionBytes(r)).array(), r.fd());
    }

    public void remMemReg(GuestMemory.Region r) throws IOException {
        sendNoReply(REM_MEM_REG, ByteBuffer.allocate(40).order(ByteOrder.nativeOrder()).putLong(0).put(regionBytes(r)).array());
    }

    public void setVringNum(int index, int num) throws IOException { sendNoReply(SET_VRING_NUM, vringState(index, num)); }

    public void setVringBase(int index, int base) throws IOException { sendNoReply(SET_VRING_BASE, vringState(index, base)); }

    /** SET_VRING_ADDR with front-end virtual addresses (uaddr), as QEMU sends them. */
    public void setVringAddr(int index, int flags, long descUaddr, long usedUaddr, long availUaddr, long logGuestAddr) throws IOException {
        sendNoReply(SET_VRING_ADDR, ByteBuffer.allocate(40).order(ByteOrder.nativeOrder()).putInt(index).putInt(flags)
                .putLong(descUaddr).putLong(usedUaddr).putLong(availUaddr).putLong(logGuestAddr).array());
    }

    public void setVringAddr(DriverQueue q) throws IOException {
        setVringAddr(q.index(), 0, q.descUaddr(), q.usedUaddr(), q.availUaddr(), 0);
    }

    /**
     * As QEMU's vhost_dev_set_log does during migration: the same addresses, VHOST_VRING_F_LOG on or off, and the
     * used ring's guest-physical address as log address.
     */
    public void setVringAddr(DriverQueue q, boolean log) throws IOException {
        setVringAddr(q.index(), log ? VRING_ADDR_F_LOG : 0, q.descUaddr(), q.usedUaddr(), q.availUaddr(), log ? q.usedGpa() : 0);
    }

    /**
     * SET_LOG_BASE: {u64 mmap_size, u64 mmap_offset} with the given fds (normally one: the log's memfd). With
     * LOG_SHMFD negotiated the back-end must reply (QEMU waits for it); its u64 is returned, else 0.
     */
    public long setLogBase(long size, long offset, int... fds) throws IOException {
        send(SET_LOG_BASE, VERSION, ByteBuffer.allocate(16).order(ByteOrder.nativeOrder()).putLong(size).putLong(offset).array(), fds);
        if ((protocolFeatures & bit(PF_LOG_SHMFD)) == 0) return 0;
        return receiveReply(SET_LOG_BASE).u64();
    }

    public long setLogBase(MigrationLog log) throws IOException {
        return setLogBase(log.size(), log.offset(), log.fd());
    }

    /** SET_LOG_FD with an eventfd (fd &lt; 0: without any fd, for malformed-input tests). */
    public void setLogFd(int fd) throws IOException {
        if (fd < 0) sendNoReply(SET_LOG_FD, null);
        else sendNoReply(SET_LOG_FD, null, fd);
    }

    /** GET_VRING_BASE: stops the ring and returns the back-end's next avail index. */
    public int getVringBase(int index) throws IOException {
        send(GET_VRING_BASE, VERSION, vringState(index, 0));
        Message m = receiveReply(GET_VRING_BASE);
        if (m.payload().length != 8) throw new VhostUserException("GET_VRING_BASE reply size " + m.payload().length);
        ByteBuffer b = ByteBuffer.wrap(m.payload()).order(ByteOrder.nativeOrder());
        int idx = b.getInt();
        if (idx != index) throw new VhostUserException("GET_VRING_BASE reply for vring " + idx + ", asked " + index);
        return b.getInt();
    }

    private void vringFd(int request, int index, int fd) throws IOException {
        if (fd < 0) sendNoReply(request, u64((index & 0xff) | VRING_NOFD_MASK));
        else sendNoReply(request, u64(index & 0xff), fd);
    }

    /** fd &lt; 0 sends the "no fd" flag (bit 8). */
    public void setVringKick(int index, int fd) throws IOException { vringFd(SET_VRING_KICK, index, fd); }
    public void setVringCall(int index, int fd) throws IOException { vringFd(SET_VRING_CALL, index, fd); }
    public void setVringErr(int index, int fd) throws IOException { vringFd(SET_VRING_ERR, index, fd); }

    public void setVringEnable(int index, boolean on) throws IOException { sendNoReply(SET_VRING_ENABLE, vringState(index, on ? 1 : 0)); }

    public long getQueueNum() throws IOException { return requestU64(GET_QUEUE_NUM, null); }

    /** GET_CONFIG; returns the config bytes of the reply (the reply's size must equal the request's). */
    public byte[] getConfig(int offset, int size, int flags) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(12 + size).order(ByteOrder.nativeOrder()).putInt(offset).putInt(size).putInt(flags);
        send(GET_CONFIG, VERSION, b.array());
        Message m = receiveReply(GET_CONFIG);
        if (m.payload().length != 12 + size) throw new VhostUserException("GET_CONFIG reply size " + m.payload().length + ", expected " + (12 + size));
        return Arrays.copyOfRange(m.payload(), 12, 12 + size);
    }

    /** GET_CONFIG of the first {@code size} bytes, decoded. */
    public VirtioBlkConfig readConfig(int size) throws IOException {
        return VirtioBlkConfig.decode(getConfig(0, size, 0));
    }

    public void setConfig(int offset, int flags, byte[] data) throws IOException {
        sendNoReply(SET_CONFIG, ByteBuffer.allocate(12 + data.length).order(ByteOrder.nativeOrder())
                .putInt(offset).putInt(data.length).putInt(flags).put(data).array());
    }

    /** Creates a socketpair and sends one end with SET_BACKEND_REQ_FD; the other end is read by {@link #receiveBackendRequest}. */
    public void setBackendReqFd() throws IOException {
        closeBackendPair();
        backendPair = socketPair();
        AFUNIXSocketChannel ours = backendPair[0], theirs = backendPair[1];
        ours.configureBlocking(true);
        backendSock = (AFUNIXSocket) ours.socket();
        backendSock.setAncillaryReceiveBufferSize(1024);
        int fd = FileDescriptorCast.using(theirs.getFileDescriptor()).as(Integer.class);
        sendNoReply(SET_BACKEND_REQ_FD, null, fd);
        // Our copy of the back-end's end stays open until close(): junixsocket's close() also shutdown()s the
        // socket, which would break the copy the back-end received. Hence no EOF on this channel when the
        // back-end goes away; reads end by timeout.
    }

    /** The socketpair end that was sent with SET_BACKEND_REQ_FD (null before); e.g. to find it in the peer's fds. */
    public AFUNIXSocketChannel backendChannelPeer() {
        return backendPair == null ? null : backendPair[1];
    }

    /**
     * A connected pair of unix stream sockets, made by accept/connect on a throw-away abstract-namespace listener:
     * junixsocket 2.11.1's AFUNIXSocketPair.open() leaks two fds per call (the placeholder sockets it opens
     * before socketpair(2) replaces them), which would show up in fd-hygiene tests as a leak of the back-end.
     */
    private static AFUNIXSocketChannel[] socketPair() throws IOException {
        try (AFUNIXServerSocketChannel srv = AFUNIXServerSocketChannel.open()) {
            srv.bind(AFUNIXSocketAddress.inAbstractNamespace("jvhost-fe-" + ProcessHandle.current().pid() + "-" + PAIR_SEQ.incrementAndGet()), 1);
            AFUNIXSocketChannel a = AFUNIXSocketChannel.open(srv.getLocalAddress());
            try {
                AFUNIXSocketChannel b = srv.accept();
                return new AFUNIXSocketChannel[] {a, b};
            } catch (IOException | RuntimeException e) {
                a.close();
                throw e;
            }
        }
    }

    private void closeBackendPair() {
        if (backendPair == null) return;
        for (AFUNIXSocketChannel c : backendPair) {
            try {
                c.close();
            } catch (IOException ignored) {
                // nothing useful to do in a test fixture
            }
        }
        backendPair = null;
    }

    /** SET_BACKEND_REQ_FD with any fd (or none, for malformed-input tests). */
    public void setBackendReqFd(int... fds) throws IOException { sendNoReply(SET_BACKEND_REQ_FD, null, fds); }

    /** Reads one back-end-initiated message (e.g. CONFIG_CHANGE_MSG) from the BACKEND_REQ channel. */
    public Message receiveBackendRequest(Duration timeout) throws IOException {
        if (backendSock == null) throw new IllegalStateException("no backend request channel");
        return readMessage(backendSock, backendSock.getInputStream(), timeout, "back-end request channel");
    }

    /** Answers a back-end request that asked for a reply (need_reply) with a u64. */
    public void replyBackendRequest(Message req, long value) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(20).order(ByteOrder.nativeOrder()).putInt(req.request()).putInt(VERSION | FLAG_REPLY).putInt(8).putLong(value);
        OutputStream os = backendSock.getOutputStream();
        os.write(b.array());
        os.flush();
    }

    public void resetDevice() throws IOException { sendNoReply(RESET_DEVICE, null); }
    public void setStatus(int status) throws IOException { sendNoReply(SET_STATUS, u64(status)); }
    public long getStatus() throws IOException { return requestU64(GET_STATUS, null); }

    // ========================================================================================== sequences

    /**
     * QEMU 7.2's vhost-user-blk sequence. Realize: GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
     * GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_BACKEND_REQ_FD, SET_OWNER, GET_FEATURES, SET_VRING_CALL + SET_VRING_ERR
     * per queue, GET_CONFIG. DRIVER_OK: SET_FEATURES, SET_VRING_CALL per queue, SET_FEATURES, ADD_MEM_REG × regions
     * (or SET_MEM_TABLE), per queue SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, then
     * SET_VRING_ENABLE 1 per queue. Each step only if the features it needs were negotiated.
     */
    public Negotiated handshake(Options o) throws IOException {
        if (!queues.isEmpty()) throw new IllegalStateException("handshake already done on this connection");
        // ---- realize
        long offered = getFeatures();
        long offeredProto = 0, proto = 0, maxQueues = 1, maxSlots = 0;
        boolean pf = (offered & bit(F_PROTOCOL_FEATURES)) != 0;
        if (pf) {
            offeredProto = getProtocolFeatures();
            long want = o.wantedProtocolFeatures;
            if (!o.replyAck) want &= ~bit(PF_REPLY_ACK);
            proto = offeredProto & want;
            setProtocolFeatures(proto);
            setAckAll(o.replyAck);
        }
        if ((proto & bit(PF_MQ)) != 0) maxQueues = getQueueNum();
        if (o.numQueues > maxQueues && (proto & bit(PF_MQ)) != 0) {
            throw new VhostUserException("back-end supports " + maxQueues + " queues, " + o.numQueues + " wanted");
        }
        if ((proto & bit(PF_CONFIGURE_MEM_SLOTS)) != 0) maxSlots = getMaxMemSlots();
        if ((proto & bit(PF_BACKEND_REQ)) != 0 && o.backendReq) setBackendReqFd();
        setOwner();
        long offered2 = getFeatures();
        if (offered2 != offered) throw new VhostUserException(String.format("features changed between GET_FEATURES: 0x%x then 0x%x", offered, offered2));

        boolean reuse = o.reuseQueues != null;
        if (!reuse) {
            for (int i = 0; i < o.numQueues; i++) {
                DriverQueue q = new DriverQueue(mem, i, o.queueSize);
                queues.add(q);
                ownedQueues.add(q);
            }
        } else {
            for (DriverQueue q : o.reuseQueues) {
                if (q.memory() != mem) throw new IllegalArgumentException(q + " lives in another guest memory");
            }
            queues.addAll(o.reuseQueues);
        }
        for (DriverQueue q : queues) {
            if (o.maskedCallAtRealize) {
                EventFd masked = EventFd.create();
                ownedEventFds.add(masked);
                setVringCall(q.index(), masked.fd());
            } else {
                setVringCall(q.index(), q.callFd());
            }
            EventFd err = EventFd.create();
            ownedEventFds.add(err);
            setVringErr(q.index(), err.fd());
        }
        VirtioBlkConfig cfg = null;
        if ((proto & bit(PF_CONFIG)) != 0) cfg = readConfig(o.configSize);

        // ---- DRIVER_OK
        long want = o.wantedFeatures;
        if (!o.eventIdx) want &= ~bit(F_EVENT_IDX);
        if (!o.indirect) want &= ~bit(F_INDIRECT_DESC);
        long features = offered & want;
        if (pf) features |= bit(F_PROTOCOL_FEATURES);
        setFeatures(features);
        for (DriverQueue q : queues) setVringCall(q.index(), q.callFd());
        setFeatures(features);
        if ((proto & bit(PF_CONFIGURE_MEM_SLOTS)) != 0 && o.memSlots) {
            for (GuestMemory.Region r : mem.regions()) addMemReg(r);
        } else {
            setMemTable();
        }
        boolean evIdx = (features & bit(F_EVENT_IDX)) != 0;
        for (DriverQueue q : queues) {
            q.setEventIdx(evIdx);
            q.setKickAlways(o.kickAlways);
        }
        ringsNeedEnable = pf;
        int[] bases = o.vringBases;
        if (bases == null) {
            bases = new int[queues.size()];
            for (int i = 0; i < bases.length; i++) bases[i] = reuse ? queues.get(i).lastUsed() : 0;
        }
        startQueues(bases);
        return new Negotiated(offered, features, offeredProto, proto, maxQueues, maxSlots, cfg);
    }

    /** Per queue SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK; then SET_VRING_ENABLE 1 per queue. */
    private void startQueues(int[] bases) throws IOException {
        if (bases.length != queues.size()) throw new IllegalArgumentException(bases.length + " bases for " + queues.size() + " queues");
        for (int i = 0; i < queues.size(); i++) {
            DriverQueue q = queues.get(i);
            setVringNum(q.index(), q.size());
            setVringBase(q.index(), bases[i]);
            setVringAddr(q);
            setVringKick(q.index(), q.kickFd());
        }
        if (ringsNeedEnable) for (DriverQueue q : queues) setVringEnable(q.index(), true);
    }

    /**
     * Restarts the queues after {@link #stop} (QEMU's stop/cont): SET_VRING_CALL per queue, then the start
     * sequence with these bases (normally what stop returned). Guest memory is not re-sent.
     */
    public void restart(int[] bases) throws IOException {
        for (DriverQueue q : queues) setVringCall(q.index(), q.callFd());
        startQueues(bases);
    }

    /**
     * QEMU's vhost_dev_stop: SET_VRING_ENABLE 0 on every queue (only when PROTOCOL_FEATURES was negotiated, as
     * the message requires), then GET_VRING_BASE on each; returns the bases in queue order.
     */
    public int[] stop() throws IOException {
        if (ringsNeedEnable) {
            for (DriverQueue q : queues) setVringEnable(q.index(), false);
        }
        int[] bases = new int[queues.size()];
        for (int i = 0; i < queues.size(); i++) bases[i] = getVringBase(queues.get(i).index());
        return bases;
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("front-end is closed");
    }

    public boolean isClosed() { return closed; }

    /** Closes the connection, the queues this front-end created and its eventfds. Guest memory stays. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        try {
            sock.close();
        } catch (IOException ignored) {
            // nothing useful to do in a test fixture
        }
        closeBackendPair();
        for (DriverQueue q : ownedQueues) q.close();
        for (EventFd e : ownedEventFds) e.close();
        ownedQueues.clear();
        ownedEventFds.clear();
        queues.clear();
    }
}
