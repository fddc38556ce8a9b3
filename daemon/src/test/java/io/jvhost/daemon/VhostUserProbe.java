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
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
             Selector sel = Selector.open()) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            ByteBuffer req = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
            req.putInt(GET_FEATURES).putInt(FLAG_VERSION_1).putInt(0).flip();
            while (req.hasRemaining()) ch.write(req);

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
