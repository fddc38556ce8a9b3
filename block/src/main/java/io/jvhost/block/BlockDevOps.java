package io.jvhost.block;

/**
 * Callbacks from a {@link BlockBackend} to the device (export) attached to it, QEMU's BlockDevOps. Called on the
 * thread that drains (main thread, test thread or an iothread), with the block graph lock held: implementations
 * must not block or wait for another thread, only flag or post work (e.g. post "stop popping the virtqueue" to
 * the queue's iothread). Requests the device still submits while drained are parked by the backend anyway.
 */
public interface BlockDevOps {
    /** The backend's tree is being drained: stop taking new requests from the guest. */
    void drainedBegin();

    /** The drained section ended: resume taking requests. Parked requests restart right after this returns. */
    void drainedEnd();

    /**
     * The backend's length changed ({@link BlockDriverState#truncate}); called after the drained section ended,
     * on the resizing (management) thread without the graph lock. Must not block: post the work (e.g. tell the
     * front-end about the new capacity) to the device's own thread.
     */
    default void resized() {}
}
