package io.jvhost.iothread;

import io.netty.channel.IoEventLoop;
import io.netty.channel.IoHandlerFactory;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.uring.IoUring;
import io.netty.channel.uring.IoUringIoHandler;

import java.util.Locale;

/**
 * How an {@link AioContext} watches fds (QEMU's fdmon): the netty IoHandler its loop runs on, and the fd watches
 * it registers there. Iothreads use io_uring where the kernel has it (like QEMU's fdmon-io_uring), so that the
 * file driver's aio=io_uring can share the ring; the main loop stays on epoll. {@code -Djvhost.fdmon=epoll}
 * forces epoll everywhere (troubleshooting, comparisons).
 */
abstract class FdMonitor {
    /** System property: {@code epoll} forces the epoll backend for iothreads too. */
    static final String PROPERTY = "jvhost.fdmon";

    static final FdMonitor EPOLL = new EpollFdMonitor();

    /** The backend for a new context: io_uring for iothreads when available and not disabled, else epoll. */
    static FdMonitor forContext(boolean ioThread) {
        if (!ioThread) return EPOLL;
        String forced = System.getProperty(PROPERTY, "").trim().toLowerCase(Locale.ROOT);
        switch (forced) {
            case "":
            case "auto":
                return IoUring.isAvailable() ? UringFdMonitor.INSTANCE : EPOLL;
            case "epoll":
                return EPOLL;
            case "io_uring":
                IoUring.ensureAvailability(); // explicit request: fail loudly instead of falling back
                return UringFdMonitor.INSTANCE;
            default:
                throw new IllegalArgumentException("-D" + PROPERTY + "=" + forced + ": expected epoll, io_uring or auto");
        }
    }

    /** "epoll" or "io_uring". */
    abstract String name();

    /** The netty IoHandler factory for the context's single-threaded loop. */
    abstract IoHandlerFactory ioHandlerFactory();

    /**
     * Starts watching {@code fd} for readability on {@code loop} and returns the watch. Called on any thread;
     * {@code onReadable} runs on the loop thread.
     */
    abstract FdWatch watch(AioContext ctx, IoEventLoop loop, int fd, Runnable onReadable);

    /** One watched fd. */
    interface FdWatch {
        /**
         * Stops the watch; loop thread only. Afterwards the callback never runs again and the loop never uses the
         * fd number again (closing and reusing it is safe).
         */
        void cancel();
    }

    private static final class EpollFdMonitor extends FdMonitor {
        @Override
        String name() {
            return "epoll";
        }

        @Override
        IoHandlerFactory ioHandlerFactory() {
            return EpollIoHandler.newFactory();
        }

        @Override
        FdWatch watch(AioContext ctx, IoEventLoop loop, int fd, Runnable onReadable) {
            return EpollFdWatch.start(ctx, loop, fd, onReadable);
        }
    }

    /** A borrowed fd for netty: netty must never close it (its FileDescriptor.close would). */
    static io.netty.channel.unix.FileDescriptor borrowed(int fd) {
        return new io.netty.channel.unix.FileDescriptor(fd) {
            @Override
            public void close() {}
        };
    }

    static final class UringFdMonitor extends FdMonitor {
        static final UringFdMonitor INSTANCE = new UringFdMonitor();

        @Override
        String name() {
            return "io_uring";
        }

        @Override
        IoHandlerFactory ioHandlerFactory() {
            return IoUringIoHandler.newFactory();
        }

        @Override
        FdWatch watch(AioContext ctx, IoEventLoop loop, int fd, Runnable onReadable) {
            return UringFdWatch.start(ctx, loop, fd, onReadable);
        }
    }
}
