package io.jvhost.daemon.bench;

import org.junit.jupiter.api.Test;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BenchOptionsTest {

    @Test
    void defaults() throws Exception {
        BenchOptions o = BenchOptions.parse(new String[] {"--socket", "/tmp/x.sock"});
        assertEquals(Path.of("/tmp/x.sock"), o.socket());
        assertEquals(BenchOptions.Rw.RANDREAD, o.rw());
        assertEquals(4096, o.blockSize());
        assertEquals(32, o.ioDepth());
        assertEquals(1, o.queues());
        assertEquals(10_000_000_000L, o.timeNs());
        assertEquals(2_000_000_000L, o.rampNs());
        assertEquals(BenchOptions.Toggle.AUTO, o.eventIdx());
        assertEquals(BenchOptions.Wait.EVENTFD, o.waitMode());
        assertFalse(o.indirect());
        assertEquals(128, o.effectiveQueueSize()); // 32 requests x 3 descriptors fit in 128
        assertTrue(o.progress());
    }

    @Test
    void everyOptionBothSpellings() throws Exception {
        BenchOptions o = BenchOptions.parse(new String[] {"--socket=/s", "--rw", "randrw", "--rwmixread=70", "--bs", "64KiB",
                "--iodepth=100", "--queues", "3", "--time", "1500ms", "--ramp=0", "--event-idx", "off", "--wait=poll",
                "--indirect", "on", "--size", "1G", "--seed", "42", "--json", "/tmp/r.json", "--label", "a/b/1",
                "--target-pid", "123", "--progress", "off", "--drain-timeout", "2s"});
        assertEquals(BenchOptions.Rw.RANDRW, o.rw());
        assertEquals(70, o.rwMixRead());
        assertEquals(65536, o.blockSize());
        assertEquals(100, o.ioDepth());
        assertEquals(3, o.queues());
        assertEquals(1_500_000_000L, o.timeNs());
        assertEquals(0, o.rampNs());
        assertEquals(BenchOptions.Toggle.OFF, o.eventIdx());
        assertEquals(BenchOptions.Wait.POLL, o.waitMode());
        assertTrue(o.indirect());
        assertEquals(128, o.effectiveQueueSize()); // indirect: one descriptor per request
        assertEquals(1L << 30, o.size());
        assertEquals(42, o.seed());
        assertEquals(Path.of("/tmp/r.json"), o.json());
        assertEquals("a/b/1", o.label());
        assertEquals(123, o.targetPid());
        assertFalse(o.progress());
        assertEquals(2_000_000_000L, o.drainTimeoutNs());
    }

    @Test
    void queueSizeFollowsDepthUnlessGiven() throws Exception {
        assertEquals(512, BenchOptions.parse(new String[] {"--socket", "s", "--iodepth", "128"}).effectiveQueueSize());
        assertEquals(1024, BenchOptions.parse(new String[] {"--socket", "s", "--iodepth", "300"}).effectiveQueueSize());
        assertEquals(256, BenchOptions.parse(new String[] {"--socket", "s", "--queue-size", "256"}).effectiveQueueSize());
        assertEquals(1024, BenchOptions.parse(new String[] {"--socket", "s", "--iodepth", "1024", "--indirect", "on"}).effectiveQueueSize());
    }

    @Test
    void sizesAndDurations() throws Exception {
        assertEquals(4096, BenchOptions.parseSize("4k"));
        assertEquals(4096, BenchOptions.parseSize("4K"));
        assertEquals(4096, BenchOptions.parseSize("4KiB"));
        assertEquals(4096, BenchOptions.parseSize("4096"));
        assertEquals(4096, BenchOptions.parseSize("4096B"));
        assertEquals(3L << 20, BenchOptions.parseSize("3M"));
        assertEquals(8L << 30, BenchOptions.parseSize("8G"));
        assertEquals(2_000_000_000L, BenchOptions.parseDuration("2"));
        assertEquals(2_500_000_000L, BenchOptions.parseDuration("2.5s"));
        assertEquals(250_000_000L, BenchOptions.parseDuration("250ms"));
        assertEquals(120_000_000_000L, BenchOptions.parseDuration("2m"));
        assertThrows(BenchOptions.UsageException.class, () -> BenchOptions.parseSize("4x"));
        assertThrows(BenchOptions.UsageException.class, () -> BenchOptions.parseSize("-1"));
        assertThrows(BenchOptions.UsageException.class, () -> BenchOptions.parseSize("99999999999999999G"));
        assertThrows(BenchOptions.UsageException.class, () -> BenchOptions.parseDuration("soon"));
        assertThrows(BenchOptions.UsageException.class, () -> BenchOptions.parseDuration("-1s"));
    }

    @Test
    void helpAndErrors() throws Exception {
        assertNull(BenchOptions.parse(new String[] {"--socket", "s", "--help"}));
        String[][] bad = {
                {},                                              // no socket
                {"--socket"},                                    // no value
                {"--socket", "s", "--rw", "trim"},
                {"--socket", "s", "--bs", "1000"},               // not a multiple of 512
                {"--socket", "s", "--bs", "2M"},
                {"--socket", "s", "--iodepth", "0"},
                {"--socket", "s", "--iodepth", "lots"},
                {"--socket", "s", "--queues", "65"},
                {"--socket", "s", "--time", "0"},
                {"--socket", "s", "--queue-size", "100"},        // not a power of two
                {"--socket", "s", "--queue-size", "64"},         // 32 requests x 3 descriptors do not fit
                {"--socket", "s", "--iodepth", "400"},           // 1200 descriptors > 1024 without --indirect
                {"--socket", "s", "--size", "1000"},
                {"--socket", "s", "--rwmixread", "101"},
                {"--socket", "s", "--wait", "sometimes"},
                {"--socket", "s", "--indirect", "auto"},
                {"--socket", "s", "--frobnicate", "1"},
                {"--socket", "s", "positional"},
        };
        for (String[] a : bad) {
            assertThrows(BenchOptions.UsageException.class, () -> BenchOptions.parse(a), String.join(" ", a));
        }
    }
}
