package io.jvhost.daemon.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The numbers of one run: throughput and latency over the measured window (completions whose reap time falls
 * inside it), what the bench itself cost, what the back-end cost (with --target-pid), and the negotiation.
 * {@link #toJson} is the machine-readable form (schema "jvhost-bench/1"); {@link #summary} the human one.
 */
public final class BenchResult {
    /** Percentiles reported in the JSON (the plot draws the full histogram). */
    static final double[] PERCENTILES = {1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100};

    public record QueueStats(int index, long ios, long reads, long writes, long kicks, long waits, long submitBatches,
                             long reapBatches, long cpuNs, long allocatedBytes, long callFdResets) {}

    public final BenchOptions options;
    public final BenchRun.Negotiated negotiated;
    public final long regionBytes;
    public final long windowNs;
    public final LatencyHistogram latency = new LatencyHistogram();
    public final long ios, reads, writes;
    public final List<QueueStats> queues = new ArrayList<>();
    /** The bench's own cost over the window: whole process (/proc/self/stat, 10 ms ticks) and its queue threads. */
    public final long benchProcessCpuNs, benchQueueThreadsCpuNs, benchAllocatedBytes, gcCount, gcTimeMs;
    /**
     * The whole machine over the window (/proc/stat): busy CPU time and its steal part (time the hypervisor gave
     * to other guests). Busy minus bench minus back-end is what everything else ran: on a shared machine, the noise.
     */
    public final long systemBusyNs, systemStealNs;
    /** The back-end's cost over the window (-1 without --target-pid or when unreadable). */
    public final long targetCpuNs, targetRssMax, targetRssMean, targetRssPeak;

    private BenchResult(BenchOptions o, BenchRun.Negotiated neg, long region, BenchQueue[] qs, BenchRun.Sample before,
                        BenchRun.Sample after, long windowNs, long rssMax, long rssMean) {
        this.options = o;
        this.negotiated = neg;
        this.regionBytes = region;
        this.windowNs = windowNs;
        long r = 0, w = 0, cpu = 0, alloc = 0;
        boolean cpuKnown = true, allocKnown = true;
        for (BenchQueue q : qs) {
            latency.add(q.hist);
            r += q.reads;
            w += q.writes;
            long qc = q.cpuStartNs >= 0 && q.cpuEndNs >= 0 ? q.cpuEndNs - q.cpuStartNs : -1;
            long qa = q.allocStart >= 0 && q.allocEnd >= 0 ? q.allocEnd - q.allocStart : -1;
            if (qc < 0) cpuKnown = false;
            if (qa < 0) allocKnown = false;
            cpu += Math.max(0, qc);
            alloc += Math.max(0, qa);
            queues.add(new QueueStats(q.index, q.reads + q.writes, q.reads, q.writes, q.windowKicks, q.windowWaits,
                    q.windowSubmitBatches, q.windowReapBatches, qc, qa, q.callFdResets));
        }
        this.reads = r;
        this.writes = w;
        this.ios = r + w;
        this.benchQueueThreadsCpuNs = cpuKnown ? cpu : -1;
        this.benchAllocatedBytes = allocKnown ? alloc : -1;
        this.benchProcessCpuNs = before.selfCpuNs >= 0 && after.selfCpuNs >= 0 ? after.selfCpuNs - before.selfCpuNs : -1;
        this.gcCount = after.gcCount - before.gcCount;
        this.gcTimeMs = after.gcTimeMs - before.gcTimeMs;
        this.systemBusyNs = before.systemBusyNs >= 0 && after.systemBusyNs >= 0 ? after.systemBusyNs - before.systemBusyNs : -1;
        this.systemStealNs = before.systemStealNs >= 0 && after.systemStealNs >= 0 ? after.systemStealNs - before.systemStealNs : -1;
        this.targetCpuNs = before.targetCpuNs >= 0 && after.targetCpuNs >= 0 ? after.targetCpuNs - before.targetCpuNs : -1;
        this.targetRssMax = rssMax;
        this.targetRssMean = rssMean;
        this.targetRssPeak = o.targetPid() != 0 ? ProcStat.statusBytes(o.targetPid(), "VmHWM") : -1;
    }

    static BenchResult build(BenchOptions o, BenchRun.Negotiated neg, long region, BenchQueue[] qs, BenchRun.Sample before,
                             BenchRun.Sample after, long windowNs, long rssMax, long rssMean) {
        return new BenchResult(o, neg, region, qs, before, after, windowNs, rssMax, rssMean);
    }

    public double seconds() { return windowNs / 1e9; }
    public double iops() { return ios / seconds(); }
    public long bytes() { return ios * options.blockSize(); }
    public double mibPerSecond() { return bytes() / seconds() / (1024.0 * 1024.0); }
    public double mbPerSecond() { return bytes() / seconds() / 1e6; }

    /** CPU time per second of the window (1.0 = one core busy), or -1. */
    static double cores(long cpuNs, long windowNs) {
        return cpuNs < 0 ? -1 : (double) cpuNs / windowNs;
    }

    /** CPU microseconds per completed request, or -1. */
    double usPerIo(long cpuNs) {
        return cpuNs < 0 || ios == 0 ? -1 : cpuNs / 1e3 / ios;
    }

    // ------------------------------------------------------------------------------------------------ JSON

    public ObjectNode toJson(ObjectMapper m) {
        ObjectNode root = m.createObjectNode();
        root.put("schema", "jvhost-bench/1");
        if (options.label() != null) root.put("label", options.label());
        root.put("socket", options.socket().toString());
        ObjectNode opt = root.putObject("options");
        opt.put("rw", options.rw().fioName());
        opt.put("rwmixread", options.rwMixRead());
        opt.put("bs", options.blockSize());
        opt.put("iodepth", options.ioDepth());
        opt.put("queues", options.queues());
        opt.put("timeSeconds", options.timeNs() / 1e9);
        opt.put("rampSeconds", options.rampNs() / 1e9);
        opt.put("eventIdx", options.eventIdx().name().toLowerCase(Locale.ROOT));
        opt.put("wait", options.waitMode().name().toLowerCase(Locale.ROOT));
        opt.put("indirect", options.indirect());
        opt.put("queueSize", options.effectiveQueueSize());
        opt.put("size", regionBytes);
        opt.put("seed", options.seed());
        if (options.targetPid() != 0) opt.put("targetPid", options.targetPid());

        ObjectNode neg = root.putObject("negotiated");
        neg.put("offeredFeatures", hex(negotiated.offeredFeatures()));
        neg.put("features", hex(negotiated.features()));
        neg.put("offeredProtocolFeatures", hex(negotiated.offeredProtocolFeatures()));
        neg.put("protocolFeatures", hex(negotiated.protocolFeatures()));
        neg.put("eventIdx", negotiated.eventIdx());
        neg.put("maxQueues", negotiated.maxQueues());
        neg.put("capacityBytes", negotiated.capacityBytes());
        neg.put("logicalBlockSize", negotiated.blockSize());
        neg.put("memory", negotiated.memoryMessage());

        ObjectNode res = root.putObject("result");
        res.put("seconds", seconds());
        res.put("ios", ios);
        res.put("reads", reads);
        res.put("writes", writes);
        res.put("bytes", bytes());
        res.put("iops", iops());
        res.put("mibPerSecond", mibPerSecond());
        res.put("mbPerSecond", mbPerSecond());
        ObjectNode lat = res.putObject("latencyNs");
        lat.put("min", latency.min());
        lat.put("mean", latency.mean());
        lat.put("p50", latency.valueAtPercentile(50));
        lat.put("p90", latency.valueAtPercentile(90));
        lat.put("p99", latency.valueAtPercentile(99));
        lat.put("p99.9", latency.valueAtPercentile(99.9));
        lat.put("p99.99", latency.valueAtPercentile(99.99));
        lat.put("max", latency.max());
        ArrayNode pct = res.putArray("percentiles");
        for (double p : PERCENTILES) {
            ObjectNode e = pct.addObject();
            e.put("percentile", p);
            e.put("ns", latency.valueAtPercentile(p));
        }
        // Non-empty buckets [lowest ns, highest ns, count]: enough to redraw any percentile or CDF.
        ArrayNode hist = res.putArray("histogram");
        latency.forEachBucket((lo, hi, n) -> hist.addArray().add(lo).add(hi).add(n));

        ObjectNode cpu = root.putObject("benchCost");
        cpu.put("processCpuSeconds", benchProcessCpuNs / 1e9);
        cpu.put("processCores", cores(benchProcessCpuNs, windowNs));
        cpu.put("processUsPerIo", usPerIo(benchProcessCpuNs));
        cpu.put("queueThreadsCpuSeconds", benchQueueThreadsCpuNs / 1e9);
        cpu.put("queueThreadsCores", cores(benchQueueThreadsCpuNs, windowNs));
        cpu.put("queueThreadsUsPerIo", usPerIo(benchQueueThreadsCpuNs));
        cpu.put("queueThreadsAllocatedBytes", benchAllocatedBytes);
        cpu.put("gcCount", gcCount);
        cpu.put("gcTimeMs", gcTimeMs);

        if (options.targetPid() != 0) {
            ObjectNode t = root.putObject("target");
            t.put("pid", options.targetPid());
            t.put("cpuSeconds", targetCpuNs / 1e9);
            t.put("cores", cores(targetCpuNs, windowNs));
            t.put("usPerIo", usPerIo(targetCpuNs));
            t.put("rssMaxBytes", targetRssMax);
            t.put("rssMeanBytes", targetRssMean);
            t.put("vmHwmBytes", targetRssPeak);
        }

        ObjectNode sys = root.putObject("system");
        sys.put("cpus", Runtime.getRuntime().availableProcessors());
        sys.put("busyCores", cores(systemBusyNs, windowNs));
        sys.put("stealCores", cores(systemStealNs, windowNs));
        sys.put("otherCores", otherCores());
        double[] load = loadAverage();
        if (load != null) sys.put("loadAverage1m", load[0]);

        ArrayNode qa = root.putArray("queues");
        for (QueueStats q : queues) {
            ObjectNode e = qa.addObject();
            e.put("queue", q.index());
            e.put("ios", q.ios());
            e.put("iops", q.ios() / seconds());
            e.put("kicks", q.kicks());
            e.put("waits", q.waits());
            e.put("submitBatches", q.submitBatches());
            e.put("reapBatches", q.reapBatches());
            e.put("cpuSeconds", q.cpuNs() / 1e9);
            e.put("allocatedBytes", q.allocatedBytes());
            e.put("callFdMadeBlocking", q.callFdResets());
        }
        return root;
    }

    public void writeJson(Path file) throws IOException {
        ObjectMapper m = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        m.writeValue(tmp.toFile(), toJson(m));
        Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    }

    /** Cores busy with neither the bench nor the back-end during the window (-1 if unknown). */
    double otherCores() {
        if (systemBusyNs < 0 || benchProcessCpuNs < 0) return -1;
        long other = systemBusyNs - benchProcessCpuNs - Math.max(0, targetCpuNs);
        return Math.max(0, cores(other, windowNs));
    }

    private static double[] loadAverage() {
        try {
            String[] f = Files.readString(Path.of("/proc/loadavg")).trim().split(" ");
            return new double[] {Double.parseDouble(f[0])};
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    private static String hex(long v) {
        return "0x" + Long.toHexString(v);
    }

    // ----------------------------------------------------------------------------------------------- text

    static String si(double v) {
        if (v >= 1e6) return String.format(Locale.ROOT, "%.2fM", v / 1e6);
        if (v >= 1e3) return String.format(Locale.ROOT, "%.1fk", v / 1e3);
        return String.format(Locale.ROOT, "%.0f", v);
    }

    private static String us(long ns) {
        return String.format(Locale.ROOT, "%.1f", ns / 1e3);
    }

    private static String mib(long bytes) {
        return bytes < 0 ? "?" : String.format(Locale.ROOT, "%.1f MiB", bytes / (1024.0 * 1024.0));
    }

    public String summary() {
        StringBuilder b = new StringBuilder();
        BenchOptions o = options;
        b.append(String.format(Locale.ROOT, "jvhost-bench: %s bs=%d iodepth=%d queues=%d wait=%s event-idx=%s indirect=%s queue-size=%d time=%.1fs ramp=%.1fs%n",
                o.rw().fioName() + (o.rw() == BenchOptions.Rw.RANDRW ? "(" + o.rwMixRead() + "% reads)" : ""), o.blockSize(),
                o.ioDepth(), o.queues(), o.waitMode().name().toLowerCase(Locale.ROOT), negotiated.eventIdx() ? "on" : "off",
                o.indirect() ? "on" : "off", o.effectiveQueueSize(), seconds(), o.rampNs() / 1e9));
        b.append(String.format(Locale.ROOT, "  device: %s, %d bytes used of %s; features 0x%x, protocol features 0x%x, memory by %s%n",
                o.socket(), regionBytes, negotiated.capacityBytes() < 0 ? "unknown capacity" : negotiated.capacityBytes() + " bytes",
                negotiated.features(), negotiated.protocolFeatures(), negotiated.memoryMessage()));
        b.append(String.format(Locale.ROOT, "  IOPS %s (%d ios: %d reads, %d writes)   %.1f MiB/s (%.1f MB/s)%n",
                si(iops()), ios, reads, writes, mibPerSecond(), mbPerSecond()));
        b.append(String.format(Locale.ROOT, "  latency (us): min %s  p50 %s  p90 %s  p99 %s  p99.9 %s  p99.99 %s  max %s  mean %.1f%n",
                us(latency.min()), us(latency.valueAtPercentile(50)), us(latency.valueAtPercentile(90)),
                us(latency.valueAtPercentile(99)), us(latency.valueAtPercentile(99.9)), us(latency.valueAtPercentile(99.99)),
                us(latency.max()), latency.mean() / 1e3));
        b.append(String.format(Locale.ROOT, "  bench cost: process %.2f cores (%.2f us CPU/IO), queue threads %.2f cores (%.2f us/IO), allocated %s B/IO, GCs %d%n",
                cores(benchProcessCpuNs, windowNs), usPerIo(benchProcessCpuNs), cores(benchQueueThreadsCpuNs, windowNs),
                usPerIo(benchQueueThreadsCpuNs), benchAllocatedBytes < 0 || ios == 0 ? "?" : String.format(Locale.ROOT, "%.2f", (double) benchAllocatedBytes / ios), gcCount));
        if (o.targetPid() != 0) {
            b.append(String.format(Locale.ROOT, "  back-end pid %d: %.2f cores (%.2f us CPU/IO), RSS max %s, mean %s, peak (VmHWM) %s%n",
                    o.targetPid(), cores(targetCpuNs, windowNs), usPerIo(targetCpuNs), mib(targetRssMax), mib(targetRssMean), mib(targetRssPeak)));
        }
        if (systemBusyNs >= 0) {
            b.append(String.format(Locale.ROOT, "  machine: %d CPUs, %.2f cores busy (%.2f steal), %.2f cores used by other processes%s%n",
                    Runtime.getRuntime().availableProcessors(), cores(systemBusyNs, windowNs), cores(systemStealNs, windowNs),
                    otherCores(), o.targetPid() == 0 ? " (or the back-end: no --target-pid)" : ""));
        }
        for (QueueStats q : queues) {
            b.append(String.format(Locale.ROOT, "  queue %d: %s IOPS, %.2f kicks/IO, %.2f waits/IO, %.1f requests per submit, %.1f per reap%n",
                    q.index(), si(q.ios() / seconds()), ratio(q.kicks(), q.ios()), ratio(q.waits(), q.ios()),
                    ratio(q.ios(), q.submitBatches()), ratio(q.ios(), q.reapBatches())));
        }
        return b.toString();
    }

    private static double ratio(long a, long b) {
        return b == 0 ? 0 : (double) a / b;
    }
}
