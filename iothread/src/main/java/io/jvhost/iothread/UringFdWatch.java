package io.jvhost.iothread;

import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.uring.IoUringIoEvent;
import io.netty.channel.uring.IoUringIoHandle;
import io.netty.channel.uring.IoUringIoOps;

import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * An fd watched on a netty io_uring loop with one multishot {@code IORING_OP_POLL_ADD}: each readiness event is
 * a CQE carrying {@code IORING_CQE_F_MORE} while the poll stays armed; a CQE without it means the kernel dropped
 * the poll (overflow, cancellation), and it is armed again.
 *
 * <p>Unlike the epoll backend this is <b>edge-triggered</b>: the callback runs once per readiness event (every
 * new eventfd write is one), not again for data a handler left unread. The kernel refuses
 * {@code IORING_POLL_ADD_LEVEL} together with multishot (-EINVAL, checked on 6.18), and a one-shot poll re-armed
 * per event would cost an SQE object per kick. Iothread handlers drain their eventfd before processing
 * (BlkQueue.onKick), so nothing is lost; sockets stay on the main loop, which is epoll.
 *
 * <p>Removal ({@link #cancel}, loop thread): sets {@code removed} so no later CQE runs the callback, submits
 * {@code IORING_OP_POLL_REMOVE} for the armed poll and cancels the netty registration (netty drops it once the
 * outstanding CQEs came back). The kernel's poll holds the open file, not the fd number, so closing the fd
 * right after and reusing its number cannot route events of the new file here.
 */
final class UringFdWatch implements IoUringIoHandle, FdMonitor.FdWatch {
    private static final Logger LOG = Logger.getLogger(UringFdWatch.class.getName());

    // From io_uring.h / poll.h (netty keeps its copies package-private).
    static final byte IORING_OP_POLL_ADD = 6, IORING_OP_POLL_REMOVE = 7;
    static final int IORING_POLL_ADD_MULTI = 1;
    static final int IORING_CQE_F_MORE = 1 << 1;
    static final int POLLIN = 0x1, POLLERR = 0x8, POLLHUP = 0x10, POLLRDHUP = 0x2000;
    static final int ECANCELED = 125;

    /** userData of our two SQE kinds: small, so netty's fast path carries them (no pending-op entry). */
    private static final short UD_POLL = 1, UD_REMOVE = 2;

    private final AioContext ctx;
    private final int fd;
    private final Runnable onReadable;
    private IoRegistration registration;
    // Loop thread only.
    private boolean armed;
    private boolean removed;
    private long pollUserData;
    private int failures;

    private UringFdWatch(AioContext ctx, int fd, Runnable onReadable) {
        this.ctx = ctx;
        this.fd = fd;
        this.onReadable = onReadable;
    }

    static UringFdWatch start(AioContext ctx, IoEventLoop loop, int fd, Runnable onReadable) {
        UringFdWatch w = new UringFdWatch(ctx, fd, onReadable);
        w.registration = AioContext.join(loop.register(w));
        // SQEs are only queued from the loop thread (netty would otherwise hop there anyway, per SQE).
        if (loop.inEventLoop()) {
            w.arm();
        } else {
            AioContext.join(loop.submit(() -> {
                w.arm();
                return null;
            }));
        }
        return w;
    }

    private void arm() {
        long id = registration.submit(new IoUringIoOps(IORING_OP_POLL_ADD, (byte) 0, (short) 0, fd, 0L, 0L,
                IORING_POLL_ADD_MULTI, POLLIN | POLLRDHUP, UD_POLL, (short) 0, (short) 0, 0, 0L));
        if (id == 0) return; // netty's INVALID_ID: the registration is cancelled (loop shutting down)
        pollUserData = id;
        armed = true;
    }

    @Override
    public void handle(IoRegistration r, IoEvent e) {
        // The event object is netty's, reused for every CQE of this registration: copy what we need first.
        IoUringIoEvent ev = (IoUringIoEvent) e;
        int res = ev.res();
        int flags = ev.flags();
        long ud = ev.userData();
        if (ud != UD_POLL) return; // the POLL_REMOVE's own CQE
        boolean more = (flags & IORING_CQE_F_MORE) != 0;
        if (!more) armed = false;
        if (removed) return;
        if (res >= 0) {
            failures = 0;
            try {
                onReadable.run();
            } catch (Throwable t) {
                LOG.log(Level.SEVERE, ctx.name() + ": fd handler for fd " + fd + " failed", t);
            }
        } else if (res != -ECANCELED && ++failures >= 3) {
            LOG.severe(ctx.name() + ": io_uring poll on fd " + fd + " keeps failing (res " + res + "); fd no longer watched");
            return;
        }
        if (!armed && !removed) arm();
    }

    @Override
    public void cancel() {
        if (removed) return;
        removed = true;
        if (armed) {
            registration.submit(new IoUringIoOps(IORING_OP_POLL_REMOVE, (byte) 0, (short) 0, -1, 0L, pollUserData,
                    0, 0, UD_REMOVE, (short) 0, (short) 0, 0, 0L));
        }
        registration.cancel();
    }

    /**
     * The loop shuts down with the watch still registered: remove the poll, or netty's final IO_DRAIN would wait
     * for this never-ending multishot poll (its 200 ms timeout) on every iothread close.
     */
    @Override
    public void close() {
        cancel();
    }
}
