package io.jvhost.iothread;

import java.util.Objects;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * The bottom-half queue of an {@link AioContext}: many producers, one consumer (the context's thread), FIFO per
 * producer, and no allocation per element in steady state (a ConcurrentLinkedQueue allocates a node per offer,
 * i.e. per block completion). A fixed ring of slots takes the elements; only when it is full do they go to an
 * unbounded overflow queue (allocating), and while the overflow holds anything every new element goes there too,
 * so one producer's elements never overtake each other. The consumer empties the ring before the overflow.
 */
final class BhQueue {
    /** A removed element: the consumer skips it. */
    private static final Runnable TOMBSTONE = () -> {};

    private final AtomicReferenceArray<Runnable> slots;
    private final int mask;
    /** Next index a producer claims. */
    private final AtomicLong tail = new AtomicLong();
    /** Next index the consumer takes; written by the consumer only. */
    private volatile long head;
    private final ConcurrentLinkedQueue<Runnable> overflow = new ConcurrentLinkedQueue<>();

    /** @param capacity ring slots, a power of two */
    BhQueue(int capacity) {
        if (capacity <= 0 || Integer.bitCount(capacity) != 1) throw new IllegalArgumentException("capacity " + capacity);
        slots = new AtomicReferenceArray<>(capacity);
        mask = capacity - 1;
    }

    /** Appends r (any thread). */
    void offer(Runnable r) {
        Objects.requireNonNull(r, "r");
        if (overflow.isEmpty()) {
            long t;
            while ((t = tail.get()) - head < slots.length()) {
                if (tail.compareAndSet(t, t + 1)) {
                    // The slot was cleared by the consumer before it moved head past t - capacity.
                    slots.set((int) (t & mask), r);
                    return;
                }
            }
        }
        overflow.offer(r);
    }

    /**
     * Takes the next element, or null. Consumer thread only. Null also while the producer that claimed the head
     * slot has not written it yet: that producer then still finds its element queued and schedules the consumer
     * as usual, so nothing is stranded.
     */
    Runnable poll() {
        while (true) {
            long h = head;
            if (h != tail.get()) {
                int i = (int) (h & mask);
                if (slots.get(i) == null) return null; // claimed, not yet written
                Runnable r = slots.getAndSet(i, null);
                head = h + 1;
                if (r == TOMBSTONE) continue;
                return r;
            }
            return overflow.poll();
        }
    }

    /** True when nothing is queued (claimed but unwritten slots count as queued). */
    boolean isEmpty() {
        return head == tail.get() && overflow.isEmpty();
    }

    /**
     * Removes r if it is still queued (any thread; for a producer whose consumer went away). Exactly one of this
     * and the consumer's {@link #poll} gets a given element.
     */
    boolean remove(Runnable r) {
        if (overflow.remove(r)) return true;
        for (int i = 0; i < slots.length(); i++) {
            if (slots.get(i) == r && slots.compareAndSet(i, r, TOMBSTONE)) return true;
        }
        return false;
    }
}
