package io.jvhost.testvm;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Predicate;

/**
 * An append-only list of items produced by a reader thread (serial console lines, QMP events) that
 * other threads wait on. Waiting blocks on a condition signalled by {@link #append}; nothing polls.
 * A cursor makes successive {@link #awaitNext} calls consume the log in order.
 */
final class EventLog<T> {
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final List<T> items = new ArrayList<>();
    private boolean closed;
    private Throwable closeCause;
    private int cursor;

    void append(T item) {
        lock.lock();
        try {
            items.add(item);
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** No more items will come (end of stream). Waiters return empty once they have seen everything. */
    void close(Throwable cause) {
        lock.lock();
        try {
            closed = true;
            closeCause = cause;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    boolean isClosed() {
        lock.lock();
        try {
            return closed;
        } finally {
            lock.unlock();
        }
    }

    Throwable closeCause() {
        lock.lock();
        try {
            return closeCause;
        } finally {
            lock.unlock();
        }
    }

    List<T> snapshot() {
        lock.lock();
        try {
            return List.copyOf(items);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Waits for the first item after the cursor that matches, moves the cursor past it and returns it.
     * Returns empty if the timeout expires or the log is closed without a match (the cursor then
     * stays where it was, so a later call with another predicate still sees the skipped items).
     */
    Optional<T> awaitNext(Predicate<? super T> match, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        lock.lock();
        try {
            int scanned = cursor;
            while (true) {
                for (; scanned < items.size(); scanned++) {
                    T item = items.get(scanned);
                    if (match.test(item)) {
                        cursor = scanned + 1;
                        return Optional.of(item);
                    }
                }
                if (closed) {
                    return Optional.empty();
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return Optional.empty();
                }
                changed.awaitNanos(left);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Moves the cursor past every item so far: later {@link #awaitNext} calls see only newer items. */
    void skipAll() {
        lock.lock();
        try {
            cursor = items.size();
        } finally {
            lock.unlock();
        }
    }

    /** Waits until the log is closed (reader reached end of stream), or the timeout expires. */
    boolean awaitClosed(Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        lock.lock();
        try {
            while (!closed) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                changed.await(left, TimeUnit.NANOSECONDS);
            }
            return true;
        } finally {
            lock.unlock();
        }
    }
}
