package io.jvhost.block;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Limits of a throttle group (QEMU's ThrottleConfig, util/throttle.c): six leaky buckets (bps and iops; total,
 * read, write), each with an average rate, an optional burst rate ({@code -max}) and burst length
 * ({@code -max-length}, seconds), plus {@code iops-size}. Immutable and always valid (QEMU's throttle_is_valid);
 * parsed from {@code --object throttle-group} options, in QEMU's legacy {@code x-iops-total} or QAPI
 * {@code limits.iops-total} spelling, or built from ThrottleLimits members ({@link #of}, {@link #withLimits}).
 */
public final class ThrottleConfig {
    static final int BPS_TOTAL = 0, BPS_READ = 1, BPS_WRITE = 2, OPS_TOTAL = 3, OPS_READ = 4, OPS_WRITE = 5;
    static final String[] NAMES = {"bps-total", "bps-read", "bps-write", "iops-total", "iops-read", "iops-write"};
    /** QEMU's THROTTLE_VALUE_MAX. */
    static final long VALUE_MAX = 1_000_000_000_000_000L;
    /** Burst lengths are C unsigned ints in QEMU. */
    private static final long UINT_MAX = 0xffff_ffffL;

    /** QAPI's ThrottleLimits members, in the schema's order. */
    public static final List<String> LIMIT_NAMES;

    static {
        List<String> l = new ArrayList<>();
        for (String b : new String[] {"iops-total", "iops-read", "iops-write", "bps-total", "bps-read", "bps-write"}) {
            l.add(b);
            l.add(b + "-max");
            l.add(b + "-max-length");
        }
        l.add("iops-size");
        LIMIT_NAMES = List.copyOf(l);
    }

    final long[] avg = new long[6];
    final long[] max = new long[6];
    final long[] burstLength = {1, 1, 1, 1, 1, 1};
    long opSize;

    static boolean isBps(int i) {
        return i <= BPS_WRITE;
    }

    /** Does bucket i apply to reads (write=false) or writes? */
    static boolean applies(int i, boolean write) {
        int kind = i % 3; // 0 total, 1 read, 2 write
        return kind == 0 || (kind == 1) != write;
    }

    boolean isEnabled() {
        for (long a : avg) if (a != 0) return true;
        return false;
    }

    /**
     * Parses the limit keys of {@code opts} (others are left to the caller); every key it uses is removed.
     * Errors use QEMU's wording and name the option.
     */
    static ThrottleConfig parse(Map<String, String> opts, String prefix) throws BlockException {
        ThrottleConfig c = new ThrottleConfig();
        for (int i = 0; i < 6; i++) {
            c.avg[i] = take(opts, NAMES[i], prefix);
            c.max[i] = take(opts, NAMES[i] + "-max", prefix);
            long len = take(opts, NAMES[i] + "-max-length", prefix, -1);
            if (len == 0) throw new BlockException(prefix + "the burst length cannot be 0");
            if (len > 0) c.burstLength[i] = len;
        }
        c.opSize = take(opts, "iops-size", prefix);
        c.validate(prefix);
        return c;
    }

    private static long take(Map<String, String> o, String name, String prefix) throws BlockException {
        return take(o, name, prefix, 0);
    }

    /** Reads x-NAME or limits.NAME (not both), removes it; def when absent. */
    private static long take(Map<String, String> o, String name, String prefix, long def) throws BlockException {
        String legacy = "x-" + name, qapi = "limits." + name;
        String a = o.remove(legacy), b = o.remove(qapi);
        if (a != null && b != null) {
            throw new BlockException(prefix + "options '" + legacy + "' and '" + qapi + "' both set");
        }
        String v = a != null ? a : b;
        String key = a != null ? legacy : qapi;
        if (v == null) return def;
        try {
            if (v.isEmpty() || !v.chars().allMatch(ch -> ch >= '0' && ch <= '9')) throw new NumberFormatException();
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw new BlockException(prefix + "invalid value '" + v + "' for option '" + key + "' (expected a non-negative integer)");
        }
    }

    /** A configuration with just these ThrottleLimits members set (QAPI names; the others unlimited). */
    public static ThrottleConfig of(Map<String, Long> limits) throws BlockException {
        return new ThrottleConfig().withLimits(limits);
    }

    /**
     * QEMU's throttle_limits_to_config: a copy of this configuration with the given ThrottleLimits members (QAPI
     * names, e.g. {@code iops-total}, {@code bps-read-max-length}) changed and the others kept, checked as a whole.
     * An unknown name is a programming error (callers check the schema first).
     */
    public ThrottleConfig withLimits(Map<String, Long> limits) throws BlockException {
        ThrottleConfig c = new ThrottleConfig();
        System.arraycopy(avg, 0, c.avg, 0, 6);
        System.arraycopy(max, 0, c.max, 0, 6);
        System.arraycopy(burstLength, 0, c.burstLength, 0, 6);
        c.opSize = opSize;
        for (Map.Entry<String, Long> e : limits.entrySet()) {
            String n = e.getKey();
            long v = e.getValue();
            if (n.equals("iops-size")) {
                if (v < 0) throw new BlockException("iops-size value must be in the range [0, " + Long.MAX_VALUE + "]");
                c.opSize = v;
                continue;
            }
            int i = bucket(n);
            if (n.endsWith("-max-length")) {
                if (v < 0 || v > UINT_MAX) throw new BlockException(n + " value must be in the range [0, " + UINT_MAX + "]");
                c.burstLength[i] = v;
            } else if (n.endsWith("-max")) {
                c.max[i] = v;
            } else {
                c.avg[i] = v;
            }
        }
        c.validate("");
        return c;
    }

    private static int bucket(String limitName) {
        for (int i = 0; i < 6; i++) {
            if (limitName.equals(NAMES[i]) || limitName.equals(NAMES[i] + "-max") || limitName.equals(NAMES[i] + "-max-length")) return i;
        }
        throw new IllegalArgumentException("not a ThrottleLimits member: " + limitName);
    }

    /** QEMU's throttle_config_to_limits: every ThrottleLimits member, in schema order (qom-get of 'limits'). */
    public Map<String, Long> toLimits() {
        Map<String, Long> m = new LinkedHashMap<>();
        for (String n : LIMIT_NAMES) {
            if (n.equals("iops-size")) {
                m.put(n, opSize);
                continue;
            }
            int i = bucket(n);
            m.put(n, n.endsWith("-max-length") ? burstLength[i] : n.endsWith("-max") ? max[i] : avg[i]);
        }
        return m;
    }

    /** QEMU's throttle_is_valid. */
    private void validate(String prefix) throws BlockException {
        for (int i = 0; i < 6; i++) {
            if (burstLength[i] < 1) throw new BlockException(prefix + "the burst length cannot be 0");
        }
        boolean bpsFlag = avg[BPS_TOTAL] != 0 && (avg[BPS_READ] != 0 || avg[BPS_WRITE] != 0);
        boolean opsFlag = avg[OPS_TOTAL] != 0 && (avg[OPS_READ] != 0 || avg[OPS_WRITE] != 0);
        boolean bpsMax = max[BPS_TOTAL] != 0 && (max[BPS_READ] != 0 || max[BPS_WRITE] != 0);
        boolean opsMax = max[OPS_TOTAL] != 0 && (max[OPS_READ] != 0 || max[OPS_WRITE] != 0);
        if (bpsFlag || opsFlag || bpsMax || opsMax) {
            throw new BlockException(prefix + "bps/iops/max total values and read/write values cannot be used at the same time");
        }
        if (opSize != 0 && avg[OPS_TOTAL] == 0 && avg[OPS_READ] == 0 && avg[OPS_WRITE] == 0) {
            throw new BlockException(prefix + "iops size requires an iops value to be set");
        }
        for (int i = 0; i < 6; i++) {
            // Negative values are huge ones to QEMU (its fields are unsigned).
            if (avg[i] > VALUE_MAX || max[i] > VALUE_MAX || avg[i] < 0 || max[i] < 0) {
                throw new BlockException(prefix + "bps/iops/max values must be within [0, " + VALUE_MAX + "]");
            }
            if (burstLength[i] > 1 && max[i] == 0) {
                throw new BlockException(prefix + "burst length set without burst rate (" + NAMES[i] + "-max-length)");
            }
            if (max[i] != 0 && burstLength[i] > VALUE_MAX / max[i]) {
                throw new BlockException(prefix + "burst length too high for this burst rate (" + NAMES[i] + ")");
            }
            if (max[i] != 0 && avg[i] == 0) {
                throw new BlockException(prefix + "bps_max/iops_max require corresponding bps/iops values (" + NAMES[i] + "-max)");
            }
            if (max[i] != 0 && max[i] < avg[i]) {
                throw new BlockException(prefix + "bps_max/iops_max cannot be lower than bps/iops (" + NAMES[i] + "-max)");
            }
        }
    }

    /** The limits in QAPI spelling (non-zero ones), for query output. */
    Map<String, Long> toMap() {
        Map<String, Long> m = new HashMap<>();
        for (int i = 0; i < 6; i++) {
            if (avg[i] != 0) m.put(NAMES[i], avg[i]);
            if (max[i] != 0) m.put(NAMES[i] + "-max", max[i]);
            if (burstLength[i] != 1) m.put(NAMES[i] + "-max-length", burstLength[i]);
        }
        if (opSize != 0) m.put("iops-size", opSize);
        return m;
    }
}
