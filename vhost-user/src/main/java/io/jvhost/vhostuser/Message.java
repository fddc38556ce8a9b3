package io.jvhost.vhostuser;

import io.jvhost.iothread.sys.Libc;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** One received vhost-user message. Owns its fds until a handler {@link #takeFd takes} them. */
final class Message {
    final int request;
    final int flags;
    final ByteBuffer payload; // little-endian, position 0, limit = size
    private final int[] fds;

    Message(int request, int flags, ByteBuffer payload, int[] fds) {
        this.request = request;
        this.flags = flags;
        this.payload = payload.order(ByteOrder.LITTLE_ENDIAN);
        this.fds = fds;
    }

    int size() {
        return payload.limit();
    }

    boolean needReply() {
        return (flags & Proto.FLAG_NEED_REPLY) != 0;
    }

    int fdCount() {
        int n = 0;
        for (int fd : fds) if (fd >= 0) n++;
        return n;
    }

    /** Hands fd number i to the caller (who must close it); -1 if absent. */
    int takeFd(int i) {
        if (i >= fds.length) return -1;
        int fd = fds[i];
        fds[i] = -1;
        return fd;
    }

    /** Closes every fd no handler took (extra or unexpected fds must not leak). */
    void closeFds() {
        for (int i = 0; i < fds.length; i++) {
            if (fds[i] >= 0) {
                Libc.close(fds[i]);
                fds[i] = -1;
            }
        }
    }

    long u64(int off) throws ProtocolException {
        need(off + 8);
        return payload.getLong(off);
    }

    int u32(int off) throws ProtocolException {
        need(off + 4);
        return payload.getInt(off);
    }

    /** Requires the payload to be exactly {@code n} bytes (the spec fixes the size of most messages). */
    void expectSize(int n) throws ProtocolException {
        if (size() != n) throw new ProtocolException(Proto.name(request) + ": payload size " + size() + ", expected " + n);
    }

    void expectMinSize(int n) throws ProtocolException {
        if (size() < n) throw new ProtocolException(Proto.name(request) + ": payload size " + size() + ", expected at least " + n);
    }

    private void need(int end) throws ProtocolException {
        if (end > size()) throw new ProtocolException(Proto.name(request) + ": payload too short (" + size() + " bytes)");
    }

    @Override
    public String toString() {
        return Proto.name(request) + "(size=" + size() + ", fds=" + fdCount() + ")";
    }
}
