package io.jvhost.virtqueue;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.atomic.LongAdder;

/**
 * A private, thread-safe set of guest page numbers that counts its distinct members: jvhost's own record of which
 * pages it has ever marked in a {@link DirtyLog} (the shared log cannot tell, the front-end clears it while it
 * copies). Sparse: 1 GiB of guest-physical space per lazily created chunk (32 KiB each), 256 TiB in all; pages
 * beyond that are not recorded. Nothing is allocated until the first {@link #add}.
 */
public final class DirtyPageSet {
    private static final int CHUNK_SHIFT = 18;          // pages per chunk: 2^18 * 4 KiB = 1 GiB
    private static final int CHUNKS = 1 << 18;          // 2^36 pages = 256 TiB
    private static final long LIMIT = (long) CHUNKS << CHUNK_SHIFT;

    private static final VarHandle WORD = MethodHandles.arrayElementVarHandle(long[].class);

    private volatile AtomicReferenceArray<long[]> chunks;
    private final LongAdder count = new LongAdder();

    /** Adds {@code page}; true if it was not in the set before (the 0 to 1 transition, counted once). */
    public boolean add(long page) {
        if (Long.compareUnsigned(page, LIMIT) >= 0) return false;
        long[] c = chunk((int) (page >>> CHUNK_SHIFT), true);
        int bit = (int) (page & ((1 << CHUNK_SHIFT) - 1));
        long mask = 1L << (bit & 63);
        int w = bit >>> 6;
        // Already there: no atomic write needed for a set that only grows.
        if (((long) WORD.getAcquire(c, w) & mask) != 0) return false;
        if (((long) WORD.getAndBitwiseOr(c, w, mask) & mask) != 0) return false;
        count.increment();
        return true;
    }

    public boolean contains(long page) {
        if (Long.compareUnsigned(page, LIMIT) >= 0) return false;
        long[] c = chunk((int) (page >>> CHUNK_SHIFT), false);
        if (c == null) return false;
        int bit = (int) (page & ((1 << CHUNK_SHIFT) - 1));
        return ((long) WORD.getAcquire(c, bit >>> 6) & (1L << (bit & 63))) != 0;
    }

    /** Number of distinct pages added so far. */
    public long count() {
        return count.sum();
    }

    private long[] chunk(int i, boolean create) {
        AtomicReferenceArray<long[]> top = chunks;
        if (top == null) {
            if (!create) return null;
            synchronized (this) {
                if (chunks == null) chunks = new AtomicReferenceArray<>(CHUNKS);
                top = chunks;
            }
        }
        long[] c = top.get(i);
        if (c == null && create) {
            long[] fresh = new long[1 << (CHUNK_SHIFT - 6)];
            c = top.compareAndExchange(i, null, fresh);
            if (c == null) c = fresh; // ours won; otherwise another thread's chunk is used by everyone
        }
        return c;
    }
}
