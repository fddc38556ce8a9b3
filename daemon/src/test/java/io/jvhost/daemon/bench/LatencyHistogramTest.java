package io.jvhost.daemon.bench;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LatencyHistogramTest {

    @Test
    void bucketsTileTheValueRangeWithoutGapsOrOverlap() {
        assertEquals(0, LatencyHistogram.lowest(0));
        for (int i = 0; i + 1 < LatencyHistogram.BUCKETS; i++) {
            long lo = LatencyHistogram.lowest(i), hi = LatencyHistogram.highest(i);
            assertTrue(lo <= hi, "bucket " + i);
            assertEquals(hi + 1, LatencyHistogram.lowest(i + 1), "gap after bucket " + i);
            assertEquals(i, LatencyHistogram.index(lo));
            assertEquals(i, LatencyHistogram.index(hi));
        }
        assertEquals(LatencyHistogram.BUCKETS - 1, LatencyHistogram.index(Long.MAX_VALUE));
        assertEquals(Long.MAX_VALUE, LatencyHistogram.highest(LatencyHistogram.BUCKETS - 1));
    }

    @Test
    void everyBucketIsNarrowerThanOnePercentOfItsValues() {
        SplittableRandom r = new SplittableRandom(7);
        for (int k = 0; k < 100_000; k++) {
            long v = r.nextLong(1L << r.nextInt(1, 62));
            int i = LatencyHistogram.index(v);
            long lo = LatencyHistogram.lowest(i), hi = LatencyHistogram.highest(i);
            assertTrue(lo <= v && v <= hi, v + " outside its bucket [" + lo + ", " + hi + "]");
            assertTrue(hi - lo <= Math.max(0, lo / 128), "bucket of " + v + " too wide: [" + lo + ", " + hi + "]");
        }
    }

    @Test
    void percentilesOfAKnownDistribution() {
        LatencyHistogram h = new LatencyHistogram();
        for (long v = 1; v <= 100_000; v++) h.record(v * 10); // 10 ns .. 1 ms, uniform
        assertEquals(100_000, h.count());
        assertEquals(10, h.min());
        assertEquals(1_000_000, h.max());
        assertEquals(500_005, h.mean(), 0.001);
        for (double p : new double[] {1, 25, 50, 90, 99, 99.9, 99.99}) {
            double exact = p / 100 * 1_000_000;
            long got = h.valueAtPercentile(p);
            assertTrue(got >= exact && got <= exact * 1.01, "p" + p + ": " + got + " vs " + exact);
        }
        assertEquals(10, h.valueAtPercentile(0));
        assertEquals(1_000_000, h.valueAtPercentile(100));
    }

    @Test
    void mergeEqualsRecordingEverythingInOne() {
        SplittableRandom r = new SplittableRandom(3);
        LatencyHistogram a = new LatencyHistogram(), b = new LatencyHistogram(), all = new LatencyHistogram();
        for (int k = 0; k < 50_000; k++) {
            long v = r.nextLong(1, 50_000_000);
            (k % 3 == 0 ? a : b).record(v);
            all.record(v);
        }
        a.add(b);
        assertEquals(all.count(), a.count());
        assertEquals(all.min(), a.min());
        assertEquals(all.max(), a.max());
        assertEquals(all.mean(), a.mean(), 1e-6);
        List<long[]> x = new ArrayList<>(), y = new ArrayList<>();
        a.forEachBucket((lo, hi, n) -> x.add(new long[] {lo, hi, n}));
        all.forEachBucket((lo, hi, n) -> y.add(new long[] {lo, hi, n}));
        assertEquals(y.size(), x.size());
        for (int i = 0; i < x.size(); i++) assertEquals(java.util.Arrays.toString(y.get(i)), java.util.Arrays.toString(x.get(i)));
    }

    @Test
    void emptyAndNegativeAndReset() {
        LatencyHistogram h = new LatencyHistogram();
        assertEquals(0, h.valueAtPercentile(50));
        assertEquals(0, h.min());
        h.record(-5); // a clock that went backwards counts as 0, never as a crash
        assertEquals(1, h.count());
        assertEquals(0, h.max());
        h.reset();
        assertEquals(0, h.count());
        h.record(1234);
        assertEquals(1234, h.valueAtPercentile(50));
    }
}
