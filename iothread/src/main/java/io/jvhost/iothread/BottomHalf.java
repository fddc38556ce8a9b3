package io.jvhost.iothread;

import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A reusable, coalescing bottom half (QEMU's QEMUBH): {@link #schedule} from any thread runs the callback once
 * on the owning context; scheduling again before it ran does nothing. No allocation per schedule.
 */
public final class BottomHalf implements Runnable {
    private final AioContext ctx;
    private final Runnable cb;
    private final AtomicBoolean scheduled = new AtomicBoolean();

    BottomHalf(AioContext ctx, Runnable cb) {
        this.ctx = ctx;
        this.cb = cb;
    }

    public void schedule() {
        if (scheduled.compareAndSet(false, true)) {
            ctx.execute(this);
        }
    }

    public boolean isScheduled() {
        return scheduled.get();
    }

    @Override
    public void run() {
        scheduled.set(false);
        cb.run();
    }

    public AioContext context() {
        return ctx;
    }
}
