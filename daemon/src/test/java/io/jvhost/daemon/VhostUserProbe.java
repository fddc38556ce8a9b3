package io.jvhost.daemon;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;

/**
 * The smallest vhost-user front-end: connects and asks GET_FEATURES, with a bounded wait. Enough to prove that an
 * export is served by the main loop behind the socket, without depending on the vhost-user module's test code.
 */
final class VhostUserProbe {
    static final int GET_FEATURES = 1;
    static final int FLAG_VERSION_1 = 0x1;
    static final int FLAG_REPLY = 0x4;
    static final long VIRTIO_F_VERSION_1 = 1L << 32;
    static final long VHOST_USER_F_PROTOCOL_FEATURES = 1L << 30;

    private VhostUserProbe() {}

    /** Returns the feature bits the back-end offers. */
    static long getFeatures(Path socket, long timeoutMs) throws IOException {
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            return getFeatures(ch, timeoutMs);
        }
    }

    /** A front-end that stays attached: connected and answered GET_FEATURES (non-blocking channel). */
    static SocketChannel attach(Path socket, long timeoutMs) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            long f = getFeatures(ch, timeoutMs);
            if ((f & VIRTIO_F_VERSION_1) == 0) throw new IOException("no VERSION_1 in " + Long.toHexString(f));
            return ch;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    /** Waits (bounded) until the back-end closes the connection; throws if it sends data or does not close. */
    static void awaitDisconnect(SocketChannel ch, long timeoutMs) throws IOException {
        try (Selector sel = Selector.open()) {
            ch.configureBlocking(false);
            ch.register(sel, SelectionKey.OP_READ);
            ByteBuffer b = ByteBuffer.allocate(64);
            long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
            while (true) {
                long left = (deadline - System.nanoTime()) / 1_000_000L;
                if (left <= 0) throw new IOException("back-end still connected after " + timeoutMs + " ms");
                sel.select(left);
                sel.selectedKeys().clear();
                int n;
                try {
                    n = ch.read(b);
                } catch (IOException reset) {
                    return;     // ECONNRESET: disconnected as well
                }
                if (n < 0) return;
                if (n > 0) throw new IOException("unexpected " + n + " bytes from the back-end");
            }
        }
    }

    private static long getFeatures(SocketChannel ch, long timeoutMs) throws IOException {
        ByteBuffer req = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
        req.putInt(GET_FEATURES).putInt(FLAG_VERSION_1).putInt(0).flip();
        while (req.hasRemaining()) ch.write(req);

        try (Selector sel = Selector.open()) {
            ch.configureBlocking(false);
            ch.register(sel, SelectionKey.OP_READ);
            ByteBuffer reply = ByteBuffer.allocate(20).order(ByteOrder.LITTLE_ENDIAN);
            long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
            while (reply.hasRemaining()) {
                long left = (deadline - System.nanoTime()) / 1_000_000L;
                if (left <= 0) throw new IOException("no GET_FEATURES reply within " + timeoutMs + " ms");
                sel.select(left);
                sel.selectedKeys().clear();
                if (ch.read(reply) < 0) throw new IOException("back-end closed the connection");
            }
            reply.flip();
            int request = reply.getInt();
            int flags = reply.getInt();
            int size = reply.getInt();
            if (request != GET_FEATURES || flags != (FLAG_VERSION_1 | FLAG_REPLY) || size != 8) {
                throw new IOException("bad reply header: request=" + request + " flags=" + flags + " size=" + size);
            }
            return reply.getLong();
        }
    }
}
