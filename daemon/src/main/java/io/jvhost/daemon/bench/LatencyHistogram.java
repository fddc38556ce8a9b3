package io.jvhost.daemon.bench;

import java.util.Arrays;

/**
 * A log-linear latency histogram in the style of HdrHistogram, with no dependency and no allocation on
 * {@link #record}: values below 2^SUB_BITS nanoseconds get a bucket each, every power-of-two range above that is
 * split into 2^(SUB_BITS-1) equal buckets, so a bucket is never wider than 1/128 (0.8 %) of its values. Covers
 * 0 .. Long.MAX_VALUE ns in a fixed array of {@value #BUCKETS} counters (58 KiB).
 *
 * <p>Single writer; {@link #add} merges per-thread histograms after the threads have ended.
 */
public final class LatencyHistogram {
    static final int SUB_BITS = 8;
    static final int SUB = 1 << SUB_BITS;          // 256 exact buckets for 0..255 ns
    static final int HALF = SUB >> 1;              // 128 buckets per power-of-two range above
    /** Index of the highest value (msb 62: shift = 62 - (SUB_BITS - 1) = 55) plus one. */
    static final int BUCKETS = (62 - (SUB_BITS - 1)) * HALF + SUB;

    private final long[] counts = new long[BUCKETS];
    private long total;
    private long sum;
    private long min = Long.MAX_VALUE;
    private long max;

    /** Bucket of {@code v} (v >= 0). */
    static int index(long v) {
        if (v < SUB) return (int) v;
        int msb = 63 - Long.numberOfLeadingZeros(v);
        int shift = msb - (SUB_BITS - 1);           // v >>> shift lies in [HALF, SUB)
        return shift * HALF + (int) (v >>> shift);
    }

    /** Smallest value that falls in bucket {@code i}. */
    static long lowest(int i) {
        if (i < SUB) return i;
        int shift = i / HALF - 1;
        long mantissa = i - (long) shift * HALF;
        return mantissa << shift;
    }

    /** Largest value that falls in bucket {@code i}. */
    static long highest(int i) {
        return i + 1 >= BUCKETS ? Long.MAX_VALUE : lowest(i + 1) - 1;
    }

    /** Records one latency in nanoseconds (negative values, from a misbehaving clock, count as 0). */
    public void record(long ns) {
        if (ns < 0) ns = 0;
        counts[index(ns)]++;
        total++;
        sum += ns;
        if (ns < min) min = ns;
        if (ns > max) max = ns;
    }

    public void add(LatencyHistogram o) {
        for (int i = 0; i < BUCKETS; i++) counts[i] += o.counts[i];
        total += o.total;
        sum += o.sum;
        if (o.total > 0) {
            min = Math.min(min, o.min);
            max = Math.max(max, o.max);
        }
    }

    public void reset() {
        Arrays.fill(counts, 0);
        total = sum = max = 0;
        min = Long.MAX_VALUE;
    }

    public long count() { return total; }
    public long min() { return total == 0 ? 0 : min; }
    public long max() { return max; }
    public double mean() { return total == 0 ? 0 : (double) sum / total; }

    /**
     * The value at percentile {@code p} (0..100): the highest value of the bucket holding the ceil(p% * count)-th
     * smallest sample (like HdrHistogram's highest-equivalent value), but never above the recorded maximum nor
     * below the minimum. 0 when empty.
     */
    public long valueAtPercentile(double p) {
        if (total == 0) return 0;
        if (p <= 0) return min;
        long rank = (long) Math.ceil(Math.min(p, 100.0) / 100.0 * total);
        if (rank < 1) rank = 1;
        long seen = 0;
        for (int i = 0; i < BUCKETS; i++) {
            seen += counts[i];
            if (seen >= rank) return Math.max(min, Math.min(max, highest(i)));
        }
        return max;
    }

    /** Calls {@code v} for every non-empty bucket in increasing order: lowest value, highest value, count. */
    public void forEachBucket(BucketVisitor v) {
        for (int i = 0; i < BUCKETS; i++) {
            if (counts[i] != 0) v.bucket(lowest(i), Math.min(highest(i), max), counts[i]);
        }
    }

    @FunctionalInterface
    public interface BucketVisitor {
        void bucket(long lowestNs, long highestNs, long count);
    }
}
