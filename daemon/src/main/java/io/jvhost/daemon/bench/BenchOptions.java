package io.jvhost.daemon.bench;

import java.nio.file.Path;
import java.util.Locale;

/**
 * What one benchmark run does (the command line of {@code jvhost-bench}, fio's vocabulary where there is one).
 *
 * @param size        bytes of the device the run touches, from offset 0 (0: the whole capacity from GET_CONFIG)
 * @param queueSize   virtqueue size (0: the smallest power of two that holds iodepth requests, at least 128)
 * @param targetPid   a process (the back-end) whose CPU time and RSS are sampled during the run, or 0
 * @param drainTimeoutNs how long requests may stay in flight after the measured time before the run fails
 */
public record BenchOptions(Path socket, Rw rw, int rwMixRead, int blockSize, int ioDepth, int queues, long timeNs,
                           long rampNs, Toggle eventIdx, Wait waitMode, boolean indirect, int queueSize, long size,
                           long seed, Path json, boolean progress, String label, long targetPid, long drainTimeoutNs) {

    public enum Rw {
        READ, WRITE, RANDREAD, RANDWRITE, RANDRW;

        boolean random() { return this == RANDREAD || this == RANDWRITE || this == RANDRW; }
        boolean writes() { return this == WRITE || this == RANDWRITE || this == RANDRW; }
        String fioName() { return name().toLowerCase(Locale.ROOT); }
    }

    /** on / off / auto (= on when the back-end offers it). */
    public enum Toggle { ON, OFF, AUTO }

    /** How a queue thread waits for completions: blocked on the call eventfd, or spinning on used->idx. */
    public enum Wait { EVENTFD, POLL }

    public static final int MAX_QUEUE_SIZE = 1024;
    public static final int MAX_BLOCK_SIZE = 1 << 20;
    public static final int MAX_QUEUES = 64;
    /** Guest RAM is one region, one ByteBuffer (below Java 17's 2 GiB limit, with room to spare). */
    public static final long MAX_GUEST_RAM = 1L << 30;

    public BenchOptions {
        if (socket == null) throw new IllegalArgumentException("--socket is required");
        if (rwMixRead < 0 || rwMixRead > 100) throw new IllegalArgumentException("--rwmixread must be 0..100");
        if (blockSize < 512 || blockSize > MAX_BLOCK_SIZE || blockSize % 512 != 0) {
            throw new IllegalArgumentException("--bs must be a multiple of 512 from 512 to 1M");
        }
        if (ioDepth < 1 || ioDepth > MAX_QUEUE_SIZE) throw new IllegalArgumentException("--iodepth must be 1.." + MAX_QUEUE_SIZE);
        if (queues < 1 || queues > MAX_QUEUES) throw new IllegalArgumentException("--queues must be 1.." + MAX_QUEUES);
        if (timeNs <= 0) throw new IllegalArgumentException("--time must be positive");
        if (rampNs < 0) throw new IllegalArgumentException("--ramp must not be negative");
        if (queueSize != 0 && (queueSize < 1 || queueSize > MAX_QUEUE_SIZE || Integer.bitCount(queueSize) != 1)) {
            throw new IllegalArgumentException("--queue-size must be a power of two up to " + MAX_QUEUE_SIZE);
        }
        int perRequest = indirect ? 1 : 3;
        if ((long) ioDepth * perRequest > (queueSize != 0 ? queueSize : MAX_QUEUE_SIZE)) {
            throw new IllegalArgumentException("--iodepth " + ioDepth + " needs " + (long) ioDepth * perRequest
                    + " descriptors, more than the queue size " + (queueSize != 0 ? queueSize : MAX_QUEUE_SIZE)
                    + (indirect ? "" : " (--indirect on needs one per request)"));
        }
        if (size < 0 || size % 512 != 0) throw new IllegalArgumentException("--size must be a multiple of 512");
        if (size != 0 && size < blockSize) throw new IllegalArgumentException("--size is smaller than --bs");
        if (targetPid < 0) throw new IllegalArgumentException("--target-pid must be a process id");
        if (drainTimeoutNs <= 0) throw new IllegalArgumentException("--drain-timeout must be positive");
    }

    /** Descriptors one request occupies in the ring: 1 with an indirect table, else header + data + status. */
    int descriptorsPerRequest() {
        return indirect ? 1 : 3;
    }

    /** The ring size used: as given, or the smallest power of two >= max(128, iodepth * descriptors). */
    int effectiveQueueSize() {
        int need = ioDepth * descriptorsPerRequest();
        if (queueSize != 0) return queueSize;
        int q = 128;
        while (q < need && q < MAX_QUEUE_SIZE) q <<= 1;
        return q;
    }

    public static String usage() {
        return String.join("\n",
                "Usage: jvhost-bench --socket PATH [options]",
                "A vhost-user-blk front-end load generator (fio-like): it plays the guest, shares memfd RAM with the",
                "back-end, drives split virtqueues with one thread per queue and reports IOPS, bandwidth and latency",
                "percentiles from per-request timestamps. Works against jvhost and qemu-storage-daemon.",
                "",
                "  --socket PATH          the back-end's vhost-user socket (required)",
                "  --rw MODE              read | write | randread | randwrite | randrw (default: randread)",
                "  --rwmixread N          percentage of reads with randrw (default: 50)",
                "  --bs SIZE              request size, a multiple of 512 up to 1M (default: 4k)",
                "  --iodepth N            requests kept in flight per queue (default: 32)",
                "  --queues N             virtqueues, one thread each (default: 1)",
                "  --time DURATION        measured time (default: 10s); units: s, ms, m",
                "  --ramp DURATION        warm-up before measuring, IOs not counted (default: 2s)",
                "  --event-idx on|off|auto   VIRTIO_RING_F_EVENT_IDX (default: auto = if offered)",
                "  --wait eventfd|poll    block on the call eventfd (default) or spin on used->idx",
                "  --indirect on|off      one indirect descriptor per request instead of a 3-descriptor chain",
                "                         (default: off)",
                "  --queue-size N         virtqueue size, a power of two <= 1024 (default: fits iodepth, >= 128)",
                "  --size SIZE            bytes of the device to use, from offset 0 (default: its capacity)",
                "  --seed N               seed of the random offsets (default: 1)",
                "  --json FILE            write the results (with the latency histogram) as JSON",
                "  --label TEXT           a name stored in the JSON (compare.sh uses scenario/impl/round)",
                "  --target-pid PID       sample this process's CPU time and RSS during the run (the back-end)",
                "  --progress on|off      a progress line per second on stderr (default: on)",
                "  --drain-timeout DURATION  fail if requests are still in flight this long after the run",
                "                         (default: 10s)",
                "  -h, --help             this text",
                "",
                "SIZE takes suffixes k, M, G (binary). The run: handshake, ramp, measured time, then every request",
                "in flight completes and the rings are stopped (SET_VRING_ENABLE 0, GET_VRING_BASE). Exit status:",
                "0 done, 1 bad options, 2 the back-end failed (error status, protocol error, timeout).",
                "");
    }

    /** Thrown for a bad command line; the message is meant for the user. */
    public static final class UsageException extends Exception {
        public UsageException(String msg) { super(msg); }
    }

    /** Returns null for --help. */
    public static BenchOptions parse(String[] args) throws UsageException {
        Path socket = null, json = null;
        Rw rw = Rw.RANDREAD;
        int mix = 50, bs = 4096, depth = 32, queues = 1, qsize = 0;
        long time = 10_000_000_000L, ramp = 2_000_000_000L, size = 0, seed = 1, pid = 0, drain = 10_000_000_000L;
        Toggle evIdx = Toggle.AUTO;
        Wait wait = Wait.EVENTFD;
        boolean indirect = false, progress = true;
        String label = null;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) return null;
            if (!a.startsWith("--")) throw new UsageException("unexpected argument '" + a + "' (see --help)");
            int eq = a.indexOf('=');
            String name = eq < 0 ? a : a.substring(0, eq);
            String v;
            if (eq >= 0) {
                v = a.substring(eq + 1);
            } else {
                if (i + 1 >= args.length) throw new UsageException(name + " needs a value");
                v = args[++i];
            }
            try {
                switch (name) {
                    case "--socket" -> socket = Path.of(v);
                    case "--rw", "--readwrite" -> rw = parseRw(v);
                    case "--rwmixread" -> mix = Integer.parseInt(v);
                    case "--bs" -> bs = (int) Math.min(Integer.MAX_VALUE, parseSize(v));
                    case "--iodepth" -> depth = Integer.parseInt(v);
                    case "--queues" -> queues = Integer.parseInt(v);
                    case "--time", "--runtime" -> time = parseDuration(v);
                    case "--ramp", "--ramp_time" -> ramp = parseDuration(v);
                    case "--event-idx" -> evIdx = parseToggle(v, true);
                    case "--wait" -> wait = switch (v) {
                        case "eventfd" -> Wait.EVENTFD;
                        case "poll", "polling" -> Wait.POLL;
                        default -> throw new UsageException("--wait: eventfd or poll, not '" + v + "'");
                    };
                    case "--indirect" -> indirect = parseToggle(v, false) == Toggle.ON;
                    case "--queue-size" -> qsize = Integer.parseInt(v);
                    case "--size" -> size = parseSize(v);
                    case "--seed" -> seed = Long.parseLong(v);
                    case "--json" -> json = Path.of(v);
                    case "--label" -> label = v;
                    case "--target-pid" -> pid = Long.parseLong(v);
                    case "--progress" -> progress = parseToggle(v, false) == Toggle.ON;
                    case "--drain-timeout" -> drain = parseDuration(v);
                    default -> throw new UsageException("unknown option '" + name + "' (see --help)");
                }
            } catch (NumberFormatException e) {
                throw new UsageException(name + ": not a number: '" + v + "'");
            }
        }
        try {
            return new BenchOptions(socket, rw, mix, bs, depth, queues, time, ramp, evIdx, wait, indirect, qsize,
                    size, seed, json, progress, label, pid, drain);
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }

    static Rw parseRw(String v) throws UsageException {
        for (Rw r : Rw.values()) if (r.fioName().equals(v)) return r;
        throw new UsageException("--rw: read, write, randread, randwrite or randrw, not '" + v + "'");
    }

    static Toggle parseToggle(String v, boolean allowAuto) throws UsageException {
        switch (v) {
            case "on": case "true": case "yes": case "1": return Toggle.ON;
            case "off": case "false": case "no": case "0": return Toggle.OFF;
            case "auto": if (allowAuto) return Toggle.AUTO;
            // fall through
            default: throw new UsageException("expected on or off" + (allowAuto ? " or auto" : "") + ", not '" + v + "'");
        }
    }

    /** "4096", "4k", "4K", "4KiB", "1M", "1G": binary multiples. */
    static long parseSize(String v) throws UsageException {
        String s = v.trim();
        if (s.endsWith("iB") || s.endsWith("ib")) s = s.substring(0, s.length() - 2);
        else if (s.endsWith("B") || s.endsWith("b")) s = s.substring(0, s.length() - 1);
        int shift = 0;
        if (!s.isEmpty()) {
            switch (Character.toLowerCase(s.charAt(s.length() - 1))) {
                case 'k' -> shift = 10;
                case 'm' -> shift = 20;
                case 'g' -> shift = 30;
                case 't' -> shift = 40;
                default -> shift = -1;
            }
            if (shift >= 0) s = s.substring(0, s.length() - 1);
            else shift = 0;
        }
        long n;
        try {
            n = Long.parseLong(s);
        } catch (NumberFormatException e) {
            throw new UsageException("not a size: '" + v + "'");
        }
        if (n < 0 || (shift > 0 && n > (Long.MAX_VALUE >> shift))) throw new UsageException("size out of range: '" + v + "'");
        return n << shift;
    }

    /** "10" (seconds), "10s", "500ms", "2m" to nanoseconds. */
    static long parseDuration(String v) throws UsageException {
        String s = v.trim();
        long unit = 1_000_000_000L;
        if (s.endsWith("ms")) {
            unit = 1_000_000L;
            s = s.substring(0, s.length() - 2);
        } else if (s.endsWith("s")) {
            s = s.substring(0, s.length() - 1);
        } else if (s.endsWith("m")) {
            unit = 60_000_000_000L;
            s = s.substring(0, s.length() - 1);
        }
        double d;
        try {
            d = Double.parseDouble(s);
        } catch (NumberFormatException e) {
            throw new UsageException("not a duration: '" + v + "'");
        }
        if (!(d >= 0) || d * unit > 1e16) throw new UsageException("duration out of range: '" + v + "'");
        return Math.round(d * unit);
    }
}
