package io.jvhost.iothread;

import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.epoll.EpollIoEvent;
import io.netty.channel.epoll.EpollIoHandle;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;

import java.util.logging.Level;
import java.util.logging.Logger;

/** An fd watched with level-triggered EPOLLIN on a netty epoll loop. */
final class EpollFdWatch implements EpollIoHandle, FdMonitor.FdWatch {
    private static final Logger LOG = Logger.getLogger(EpollFdWatch.class.getName());

    private final AioContext ctx;
    private final FileDescriptor fd;
    private final Runnable onReadable;
    private IoRegistration registration;

    private EpollFdWatch(AioContext ctx, int fd, Runnable onReadable) {
        this.ctx = ctx;
        this.fd = FdMonitor.borrowed(fd);
        this.onReadable = onReadable;
    }

    static EpollFdWatch start(AioContext ctx, IoEventLoop loop, int fd, Runnable onReadable) {
        EpollFdWatch w = new EpollFdWatch(ctx, fd, onReadable);
        IoRegistration reg = AioContext.join(loop.register(w));
        reg.submit(EpollIoOps.EPOLLIN);
        w.registration = reg;
        return w;
    }

    @Override
    public FileDescriptor fd() {
        return fd;
    }

    @Override
    public void handle(IoRegistration r, IoEvent e) {
        EpollIoEvent ev = (EpollIoEvent) e;
        if (ev.ops().contains(EpollIoOps.EPOLLIN) || ev.ops().contains(EpollIoOps.EPOLLERR)
                || ev.ops().contains(EpollIoOps.EPOLLRDHUP)) {
            try {
                onReadable.run();
            } catch (Throwable t) {
                LOG.log(Level.SEVERE, ctx.name() + ": fd handler for fd " + fd.intValue() + " failed", t);
            }
        }
    }

    @Override
    public void close() {}

    @Override
    public void cancel() {
        // epoll_ctl(DEL) happens right here on the loop thread: the fd number is out of the epoll set on return.
        registration.cancel();
    }
}
