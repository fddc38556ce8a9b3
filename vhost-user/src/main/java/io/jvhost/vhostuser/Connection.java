package io.jvhost.vhostuser;

import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.sys.Libc;
import org.newsclub.net.unix.AFUNIXSocketChannel;
import org.newsclub.net.unix.FileDescriptorCast;

import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The framing of one front-end connection, on the main loop: reads exactly a 12-byte header, then exactly
 * {@code size} payload bytes, without ever blocking the loop (a stalled or hostile front-end cannot hold up other
 * exports). Fds arrive with whichever read returns them; they are dup'ed into fds we own and the originals are
 * closed at once, so junixsocket's close-on-disconnect can never hit a reused fd number.
 */
final class Connection {
    private static final Logger LOG = Logger.getLogger(Connection.class.getName());
    private static final int F_DUPFD_CLOEXEC = 1030;

    interface Handler {
        void onMessage(Connection c, Message m);

        void onClosed(Connection c);
    }

    private final String name;
    private final AFUNIXSocketChannel ch;
    private final AioContext mainLoop;
    private final Handler handler;
    private final int rawFd;
    private final ByteBuffer hdr = ByteBuffer.allocate(Proto.HDR_SIZE).order(ByteOrder.LITTLE_ENDIAN);
    private ByteBuffer payload;
    private int request, flags;
    private int[] fds = new int[0];
    private AioContext.FdHandler fdHandler;
    private boolean paused;
    private boolean closed;

    Connection(String name, AFUNIXSocketChannel ch, AioContext mainLoop, Handler handler) throws IOException {
        this.name = name;
        this.ch = ch;
        this.mainLoop = mainLoop;
        this.handler = handler;
        ch.configureBlocking(false);
        ch.setAncillaryReceiveBufferSize(1024); // default 0 silently drops fds
        enlargeAncillaryBuffer(ch);
        this.rawFd = FileDescriptorCast.using(ch.getFileDescriptor()).as(Integer.class);
    }

    /** CMSG_SPACE(SCM_MAX_FD * 4): room for the most fds the kernel lets one sendmsg carry (253). */
    static final int ANCILLARY_BYTES = 1032;
    private static volatile boolean warnedAncillary;

    /**
     * junixsocket 2.11.1 clamps the ancillary receive buffer to 256 bytes (60 fds), and when a message carries
     * more, its recvmsg fails with ENOBUFS (MSG_CTRUNC) without handing over the 60 fds the kernel has already
     * installed in this process: a hostile front-end could leak 60 fds per connection until the process runs out
     * (found by VhostUserMessageFuzzTest). A buffer for 253 fds means truncation cannot happen; junixsocket's own
     * unclamped setter is package-private, hence reflection. If that stops working (another junixsocket), the
     * export still works and says once that the leak is possible.
     */
    static void enlargeAncillaryBuffer(AFUNIXSocketChannel ch) {
        try {
            java.lang.reflect.Field sock = org.newsclub.net.unix.AFSocketChannel.class.getDeclaredField("afSocket");
            sock.setAccessible(true);
            java.lang.reflect.Field impl = org.newsclub.net.unix.AFSocket.class.getDeclaredField("impl");
            impl.setAccessible(true);
            java.lang.reflect.Field anc = org.newsclub.net.unix.AFSocketImpl.class.getDeclaredField("ancillaryDataSupport");
            anc.setAccessible(true);
            Object support = anc.get(impl.get(sock.get(ch)));
            java.lang.reflect.Method set = support.getClass().getDeclaredMethod("setAncillaryReceiveBufferSize0", int.class);
            set.setAccessible(true);
            set.invoke(support, ANCILLARY_BYTES);
        } catch (ReflectiveOperationException | RuntimeException e) {
            // checked below
        }
        if (ch.getAncillaryReceiveBufferSize() < ANCILLARY_BYTES && !warnedAncillary) {
            warnedAncillary = true;
            LOG.warning("cannot enlarge junixsocket's ancillary receive buffer (" + ch.getAncillaryReceiveBufferSize()
                    + " bytes): a front-end sending more than 60 fds with one message would leak them");
        }
    }

    void start() {
        fdHandler = mainLoop.setFdHandler(rawFd, this::onReadable);
    }

    String name() {
        return name;
    }

    boolean isClosed() {
        return closed;
    }

    /** Stops reading until {@link #resume}: used while a reply waits for iothreads (e.g. a ring draining). */
    void pause() {
        if (paused || closed) return;
        paused = true;
        if (fdHandler != null) {
            fdHandler.remove();
            fdHandler = null;
        }
    }

    void resume() {
        mainLoop.assertInContextThread("Connection.resume");
        if (!paused || closed) return;
        paused = false;
        fdHandler = mainLoop.setFdHandler(rawFd, this::onReadable);
        // Bytes that arrived while paused are picked up by the level-triggered handler.
    }

    private void onReadable() {
        // Handle at most a few messages per wake-up so one busy front-end cannot starve the loop.
        for (int i = 0; i < 16 && !paused && !closed; i++) {
            try {
                if (!readMessage()) return;
            } catch (FatalProtocolException e) {
                LOG.warning(name + ": " + e.getMessage() + "; closing connection");
                close();
                return;
            } catch (IOException e) {
                if (!closed) LOG.info(name + ": front-end disconnected (" + e.getMessage() + ")");
                close();
                return;
            }
        }
    }

    /** Returns true when a full message was read and dispatched. */
    private boolean readMessage() throws IOException, FatalProtocolException {
        if (payload == null) {
            if (!fill(hdr)) return false;
            hdr.flip();
            request = hdr.getInt(0);
            flags = hdr.getInt(4);
            int size = hdr.getInt(8);
            hdr.clear();
            if ((flags & Proto.FLAG_VERSION_MASK) != Proto.VERSION) {
                throw new FatalProtocolException(Proto.name(request) + ": bad version in flags 0x" + Integer.toHexString(flags));
            }
            if (size < 0 || size > Proto.MAX_PAYLOAD) {
                throw new FatalProtocolException(Proto.name(request) + ": payload size " + Integer.toUnsignedString(size) + " exceeds " + Proto.MAX_PAYLOAD);
            }
            payload = ByteBuffer.allocate(size);
        }
        if (!fill(payload)) return false;
        payload.flip();
        int[] msgFds = fds;
        fds = new int[0];
        Message m = new Message(request, flags, payload, msgFds);
        payload = null;
        try {
            handler.onMessage(this, m);
        } finally {
            m.closeFds();
        }
        return true;
    }

    /** Reads into buf until full or EAGAIN; returns whether full. EOF throws. */
    private boolean fill(ByteBuffer buf) throws IOException {
        while (buf.hasRemaining()) {
            int n = ch.read(buf);
            collectFds();
            if (n < 0) throw new IOException("EOF");
            if (n == 0) return false;
        }
        return true;
    }

    private void collectFds() throws IOException {
        FileDescriptor[] got = ch.getReceivedFileDescriptors();
        if (got == null || got.length == 0) return;
        for (FileDescriptor fd : got) {
            // More fds than any message may carry are closed without keeping a copy.
            boolean keep = fds.length < Proto.MAX_FDS;
            int own = keep ? Libc.fcntl(FileDescriptorCast.using(fd).as(Integer.class), F_DUPFD_CLOEXEC, 0) : -1;
            int err = keep && own < 0 ? Libc.errno() : 0; // close-on-exec dup: guest fds never leak to children
            // Close the original through Java so junixsocket forgets it (see class comment).
            try (FileInputStream in = new FileInputStream(fd)) {
                // closed by try-with-resources
            }
            if (own < 0) {
                if (keep) LOG.warning(name + ": dup of received fd failed: errno " + err);
                continue;
            }
            fds = Arrays.copyOf(fds, fds.length + 1);
            fds[fds.length - 1] = own;
        }
    }

    /** Sends a reply for {@code req}. Replies are small; a front-end that does not read them is dropped. */
    void reply(int req, ByteBuffer body) {
        if (closed) return;
        ByteBuffer out = ByteBuffer.allocate(Proto.HDR_SIZE + body.remaining()).order(ByteOrder.LITTLE_ENDIAN);
        out.putInt(req).putInt(Proto.VERSION | Proto.FLAG_REPLY).putInt(body.remaining()).put(body).flip();
        try {
            int stalls = 0;
            while (out.hasRemaining()) {
                int n = ch.write(out);
                if (n == 0 && ++stalls > 1000) throw new IOException("front-end does not read replies");
            }
        } catch (IOException e) {
            LOG.warning(name + ": cannot send " + Proto.name(req) + " reply: " + e.getMessage() + "; closing connection");
            close();
        }
    }

    void replyU64(int req, long v) {
        ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v);
        b.flip();
        reply(req, b);
    }

    void close() {
        if (closed) return;
        closed = true;
        if (fdHandler != null) {
            fdHandler.remove();
            fdHandler = null;
        }
        for (int fd : fds) Libc.close(fd);
        fds = new int[0];
        try {
            ch.close();
        } catch (IOException e) {
            LOG.log(Level.FINE, "close", e);
        }
        handler.onClosed(this);
    }
}
