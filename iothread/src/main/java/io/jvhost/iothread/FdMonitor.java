package io.jvhost.iothread;

import io.netty.channel.IoEventLoop;
import io.netty.channel.IoHandlerFactory;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.uring.IoUring;
import io.netty.channel.uring.IoUringIoHandler;

import java.util.Locale;

/**
 * How an {@link AioContext} watches fds (QEMU's fdmon): the netty IoHandler its loop runs on, and the fd watches
 * it registers there. The main loop is always epoll. An iothread runs on io_uring when its creator asks for it
 * (the daemon does once an aio=io_uring node exists, so that the file driver can share the ring, like QEMU's
 * fdmon-io_uring) and the kernel has it, else on epoll: netty's io_uring loop allocates a small object per loop
 * pass, its epoll loop nothing, and for kicks alone the two measured the same. {@code -Djvhost.fdmon=} epoll
 * (never io_uring), io_uring (always; fails if unavailable) or auto (io_uring where available) overrides.
 */
abstract class FdMonitor {
    /** System property: {@code epoll} forces the epoll backend for iothreads too. */
    static final String PROPERTY = "jvhost.fdmon";

    static final FdMonitor EPOLL = new EpollFdMonitor();

    /** The backend for a new context: see the class comment. */
    static FdMonitor forContext(boolean ioThread, boolean preferIoUring) {
        if (!ioThread) return EPOLL;
        String forced = System.getProperty(PROPERTY, "").trim().toLowerCase(Locale.ROOT);
        switch (forced) {
            case "":
                return preferIoUring && IoUring.isAvailable() ? UringFdMonitor.INSTANCE : EPOLL;
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
