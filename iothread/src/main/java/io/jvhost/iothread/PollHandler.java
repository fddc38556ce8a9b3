package io.jvhost.iothread;

/**
 * A source of work that an iothread can find by looking instead of waiting for an fd event (QEMU's
 * {@code io_poll}): a virtqueue whose avail ring the loop reads while it polls. All three methods run on the
 * context's thread, in the order begin, poll*, end, begin, ... Registered with {@link AioContext#addPollHandler}.
 */
public interface PollHandler {
    /** Polling starts: suppress the notifications this source would otherwise send (virtqueue: guest kicks). */
    void pollBegin();

    /** Looks for work and does it; returns true if there was any. Must be cheap when there is none. */
    boolean poll();

    /**
     * Polling ends because the loop is about to sleep: re-enable the notifications, then look once more (work that
     * arrived while they were off sent none). Returns true if work was done, and then the loop does not sleep.
     */
    boolean pollEnd();
}
