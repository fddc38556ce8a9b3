package io.jvhost.vhostuser;

import io.jvhost.block.BlockDevOps;

import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The export's drain callbacks (QEMU's BlockDevOps for vhost-user-blk): while the block backend's tree is drained,
 * every queue of the export stops taking requests from its ring (drain phase 3); at the end they look at their
 * rings again. Called on the draining thread with the graph lock held, so it only flips a counter and schedules
 * bottom halves, never waits. Requests popped in a race with drainedBegin are parked by the backend itself.
 */
final class Quiesce implements BlockDevOps {
    private final AtomicInteger depth = new AtomicInteger();
    private final CopyOnWriteArrayList<BlkQueue> queues = new CopyOnWriteArrayList<>();
    /** The export's reaction to a resize (it posts to the main loop); null: none. */
    private volatile Runnable onResized;

    void setOnResized(Runnable r) {
        onResized = r;
    }

    boolean active() {
        return depth.get() > 0;
    }

    void register(BlkQueue q) {
        queues.add(q);
    }

    void unregister(BlkQueue q) {
        queues.remove(q);
    }

    @Override
    public void drainedBegin() {
        depth.incrementAndGet();
    }

    @Override
    public void drainedEnd() {
        if (depth.decrementAndGet() == 0) {
            for (BlkQueue q : queues) q.wake(); // requests may have piled up in the rings meanwhile
        }
    }

    @Override
    public void resized() {
        Runnable r = onResized;
        if (r != null) r.run();
    }
}
