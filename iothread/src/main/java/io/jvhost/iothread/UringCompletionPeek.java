package io.jvhost.iothread;

import io.netty.channel.IoHandler;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.logging.Logger;

/**
 * Whether a netty io_uring loop has completions waiting: one volatile read of the completion ring's tail in
 * shared memory (QEMU's fdmon-io_uring poll does the same). The poller needs it to reap file I/O completions
 * while it polls; calling the handler's {@code run} to find out would cost an allocation per call (netty passes
 * a fresh {@code this::handle} each time). netty keeps the ring package-private, so this reaches it by
 * reflection once per loop (netty is pinned at 4.2.18); if that ever fails, polling just does not reap.
 */
final class UringCompletionPeek {
    private static final Logger LOG = Logger.getLogger(UringCompletionPeek.class.getName());
    private static volatile boolean warned;

    private final MethodHandle hasCompletions;

    private UringCompletionPeek(MethodHandle hasCompletions) {
        this.hasCompletions = hasCompletions;
    }

    /** A peek for netty's IoUringIoHandler {@code h}, or null when its ring cannot be reached. */
    static UringCompletionPeek of(IoHandler h) {
        try {
            Field rbf = h.getClass().getDeclaredField("ringBuffer");
            rbf.setAccessible(true);
            Object rb = rbf.get(h);
            Method cqm = rb.getClass().getDeclaredMethod("ioUringCompletionQueue");
            cqm.setAccessible(true);
            Object cq = cqm.invoke(rb);
            Method hc = cq.getClass().getDeclaredMethod("hasCompletions");
            hc.setAccessible(true);
            MethodHandle mh = MethodHandles.lookup().unreflect(hc).bindTo(cq).asType(MethodType.methodType(boolean.class));
            boolean probe = (boolean) mh.invokeExact(); // fail here, not on the loop's first poll
            return new UringCompletionPeek(mh);
        } catch (Throwable t) {
            if (!warned) {
                warned = true;
                LOG.warning("cannot read netty's io_uring completion ring (" + t + "): adaptive polling will not reap"
                        + " io_uring completions; they wait until polling ends (at most poll-max-ns)");
            }
            return null;
        }
    }

    /** Loop thread only. */
    boolean ready() {
        try {
            return (boolean) hasCompletions.invokeExact();
        } catch (Throwable t) {
            return true; // let the handler's run() look (and report) instead
        }
    }
}
