package io.jvhost.vhostuser.frontend;

import io.jvhost.iothread.AioContext;

/**
 * The test guest's "interrupt controller": one shared event loop that watches every driver queue's call eventfd
 * (like KVM's irqfd) so a waiting test thread can block on a semaphore with a timeout instead of polling or
 * sleeping. Reference counted: the loop thread exists only while some queue uses it, so test JVMs can exit.
 */
final class IrqThread {
    private static AioContext ctx;
    private static int users;

    private IrqThread() {}

    static synchronized AioContext acquire() {
        if (users++ == 0) ctx = AioContext.newMainLoop("vhost-fe-irq");
        return ctx;
    }

    static synchronized void release() {
        if (users <= 0) throw new IllegalStateException("IrqThread released more often than acquired");
        if (--users == 0) {
            AioContext c = ctx;
            ctx = null;
            c.close();
        }
    }
}
