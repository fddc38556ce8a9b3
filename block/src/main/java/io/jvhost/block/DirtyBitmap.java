package io.jvhost.block;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Which chunks of a node were written (QEMU's BdrvDirtyBitmap), one bit per {@link #granularity()} bytes.
 * {@link BlockDriverState} sets bits from whatever thread finishes a write, before the write's completion is
 * delivered; readers (a job in its own context) test and clear. All operations are lock-free and thread-safe.
 */
public final class DirtyBitmap {
    private static final VarHandle WORDS = MethodHandles.arrayElementVarHandle(long[].class);

    private final long length;
    private final long granularity;
    private final int shift;
    private final long chunks;
    private final long[] words;
    private final AtomicLong count = new AtomicLong();

    DirtyBitmap(long length, long granularity) {
        if (granularity < 512 || Long.bitCount(granularity) != 1 || granularity > (1L << 30)) {
            throw new IllegalArgumentException("granularity " + granularity + " (a power of two, 512 B to 1 GiB)");
        }
        this.length = length;
        this.granularity = granularity;
        this.shift = Long.numberOfTrailingZeros(granularity);
        this.chunks = (length + granularity - 1) >>> shift;
        if (chunks > (long) Integer.MAX_VALUE * 64) throw new IllegalArgumentException("bitmap too large");
        this.words = new long[(int) ((chunks + 63) >>> 6)];
    }

    public long granularity() {
        return granularity;
    }

    /** Number of chunks (the last one may be partial). */
    public long chunks() {
        return chunks;
    }

    /** Bytes covered by chunk {@code i} (shorter for the last one). */
    public long chunkBytes(long i) {
        long start = i << shift;
        return Math.min(granularity, length - start);
    }

    /** Dirty chunks now. */
    public long count() {
        return count.get();
    }

    /** Dirty bytes now (chunks times granularity, the partial last chunk counted in full). */
    public long dirtyBytes() {
        return count.get() << shift;
    }

    /** Marks the chunks touched by [offset, offset + bytes); parts outside the node are ignored. */
    public void setRange(long offset, long bytes) {
        if (bytes <= 0 || offset < 0 || offset >= length) return;
        long end = Math.min(length, offset + Math.min(bytes, length - offset));
        for (long c = offset >>> shift, last = (end - 1) >>> shift; c <= last; c++) set(c);
    }

    /** Marks every chunk. */
    public void setAll() {
        for (long c = 0; c < chunks; c++) set(c);
    }

    public boolean isDirty(long chunk) {
        checkChunk(chunk);
        return ((long) WORDS.getVolatile(words, (int) (chunk >>> 6)) & (1L << chunk)) != 0;
    }

    /** Clears the chunk; returns whether it was dirty. */
    public boolean clear(long chunk) {
        checkChunk(chunk);
        long bit = 1L << chunk;
        long old = (long) WORDS.getAndBitwiseAnd(words, (int) (chunk >>> 6), ~bit);
        if ((old & bit) == 0) return false;
        count.decrementAndGet();
        return true;
    }

    /** The first dirty chunk at or after {@code from}, or -1. */
    public long nextDirty(long from) {
        if (from < 0) from = 0;
        if (from >= chunks) return -1;
        int w = (int) (from >>> 6);
        long word = (long) WORDS.getVolatile(words, w) & (-1L << from);
        while (true) {
            if (word != 0) {
                long c = ((long) w << 6) + Long.numberOfTrailingZeros(word);
                return c < chunks ? c : -1;
            }
            if (++w >= words.length) return -1;
            word = (long) WORDS.getVolatile(words, w);
        }
    }

    private void set(long chunk) {
        long bit = 1L << chunk;
        long old = (long) WORDS.getAndBitwiseOr(words, (int) (chunk >>> 6), bit);
        if ((old & bit) == 0) count.incrementAndGet();
    }

    private void checkChunk(long chunk) {
        if (chunk < 0 || chunk >= chunks) throw new IndexOutOfBoundsException("chunk " + chunk + " of " + chunks);
    }
}
