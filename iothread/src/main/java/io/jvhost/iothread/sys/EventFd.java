package io.jvhost.iothread.sys;

import java.io.IOException;

/** A non-blocking eventfd (kick and call notifiers). Not thread-safe for {@link #drain}; {@link #signal} is. */
public final class EventFd implements AutoCloseable {
    private final int fd;
    private final boolean owned;
    private final long[] buf = new long[1];

    private EventFd(int fd, boolean owned) {
        this.fd = fd;
        this.owned = owned;
    }

    public static EventFd create() throws IOException {
        int fd = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (fd < 0) throw new IOException("eventfd failed: errno " + Libc.errno());
        return new EventFd(fd, true);
    }

    /** Wraps an fd received from a peer; closing this object closes it. */
    public static EventFd adopt(int fd) {
        return new EventFd(fd, true);
    }

    public int fd() {
        return fd;
    }

    /** Adds 1 to the counter; returns false if the write failed (peer closed it, counter full). */
    public boolean signal() {
        return Libc.eventfd_write(fd, 1L) == 0;
    }

    /** Reads and resets the counter; returns 0 when it was already zero (EAGAIN) or on error. */
    public long drain() {
        long n = Libc.read(fd, buf, 8);
        return n == 8 ? buf[0] : 0;
    }

    @Override
    public void close() {
        if (owned) Libc.close(fd);
    }

    @Override
    public String toString() {
        return "eventfd(" + fd + ")";
    }
}
