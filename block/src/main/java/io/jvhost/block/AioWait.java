package io.jvhost.block;

import io.jvhost.iothread.AioContext;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.BooleanSupplier;

/**
 * Waiting for block-layer progress without running other threads' handlers (QEMU's AIO_WAIT_WHILE, built the way
 * the seed asks: nodes report progress to waiters). Whatever can end a wait (an in-flight counter dropping, a
 * backend's or a job's work finishing) calls {@link #kick}.
 *
 * <ul>
 *   <li>A thread without an AioContext (the main thread, a test thread) waits remotely on a condition that
 *       kick signals. It never polls or runs an iothread's loop.
 *   <li>A context's own thread (an iothread, or the main loop) polls its own context (nested
 *       {@link AioContext#poll}), because completions it waits for may be bottom halves queued there; kick
 *       wakes its blocking poll.
 * </ul>
 *
 * Kick costs one volatile read while nobody waits.
 */
final class AioWait {
    private AioWait() {}

    private static final AtomicInteger WAITERS = new AtomicInteger();
    private static final ReentrantLock LOCK = new ReentrantLock();
    private static final Condition PROGRESS = LOCK.newCondition();
    /** Contexts whose thread is waiting in a nested poll, with their nesting depth. */
    private static final ConcurrentHashMap<AioContext, Integer> POLLERS = new ConcurrentHashMap<>();

    /** Reports progress: wakes every waiter so it re-evaluates its condition. Any thread. */
    static void kick() {
        // Publishing the state change happened before this read (a volatile/atomic write by the caller), and a
        // waiter registers before its first check: one of the two always sees the other.
        if (WAITERS.get() == 0) return;
        LOCK.lock();
        try {
            PROGRESS.signalAll();
        } finally {
            LOCK.unlock();
        }
        for (AioContext c : POLLERS.keySet()) c.wakeup();
    }

    /**
     * Waits while {@code busy} is true, at most timeoutNs (Long.MAX_VALUE: no bound). Returns false on timeout.
     * {@code busy} must only read state (it runs under the wait lock for remote waiters). Interrupts do not end
     * the wait; the interrupt status is kept.
     */
    static boolean waitWhile(BooleanSupplier busy, long timeoutNs) {
        if (!busy.getAsBoolean()) return true;
        long start = System.nanoTime();
        AioContext ctx = AioContext.current();
        WAITERS.incrementAndGet();
        boolean interrupted = false;
        try {
            if (ctx != null) {
                POLLERS.merge(ctx, 1, Integer::sum);
                try {
                    while (busy.getAsBoolean()) {
                        long left = left(start, timeoutNs);
                        if (left <= 0) return false;
                        ctx.poll(left, java.util.concurrent.TimeUnit.NANOSECONDS);
                    }
                    return true;
                } finally {
                    POLLERS.computeIfPresent(ctx, (k, v) -> v == 1 ? null : v - 1);
                }
            }
            LOCK.lock();
            try {
                while (busy.getAsBoolean()) {
                    long left = left(start, timeoutNs);
                    if (left <= 0) return false;
                    try {
                        PROGRESS.awaitNanos(left);
                    } catch (InterruptedException e) {
                        interrupted = true;
                    }
                }
                return true;
            } finally {
                LOCK.unlock();
            }
        } finally {
            WAITERS.decrementAndGet();
            if (interrupted) Thread.currentThread().interrupt();
        }
    }

    private static long left(long start, long timeoutNs) {
        if (timeoutNs == Long.MAX_VALUE) return Long.MAX_VALUE;
        return timeoutNs - (System.nanoTime() - start);
    }
}
