package io.jvhost.block;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Creates nodes from QEMU {@code --blockdev} option maps (flattened, dotted keys, string values) and keeps
 * them by node-name. Drivers: {@code file} (aio=threads) and {@code null-co}.
 */
public final class BlockNodes {
    private static final Set<String> COMMON = Set.of("driver", "node-name", "read-only", "cache.direct");
    private static final Set<String> FILE_OPTS = Set.of("filename", "aio", "locking");
    private static final Set<String> NULL_OPTS = Set.of("size", "read-zeroes", "latency-ns");

    private final Map<String, BlockDriverState> nodes = new LinkedHashMap<>();
    private final AioPool pool = AioPool.acquire();
    private boolean closed;

    public BlockNodes() {}

    /**
     * Opens a node, e.g. {@code {driver=file, node-name=disk0, filename=/x.img, read-only=on, cache.direct=off,
     * aio=threads}} or {@code {driver=null-co, node-name=n0, size=1G, read-zeroes=on, latency-ns=100000}}.
     */
    public synchronized BlockDriverState add(Map<String, String> opts) throws BlockException {
        if (closed) throw new IllegalStateException("BlockNodes closed");
        Map<String, String> o = new HashMap<>(opts);
        String driver = require(o, "driver");
        String nodeName = require(o, "node-name");
        checkNodeName(nodeName);
        if (nodes.containsKey(nodeName)) throw new BlockException("blockdev: duplicate node name '" + nodeName + "'");

        Set<String> specific;
        switch (driver) {
            case "file":
                specific = FILE_OPTS;
                break;
            case "null-co":
                specific = NULL_OPTS;
                break;
            default:
                throw new BlockException("blockdev: unknown driver '" + driver + "'");
        }
        for (Map.Entry<String, String> e : o.entrySet()) {
            if (!COMMON.contains(e.getKey()) && !specific.contains(e.getKey())) {
                throw new BlockException("blockdev: unknown option '" + e.getKey() + "' for driver '" + driver + "'");
            }
            if (e.getValue() == null) throw new BlockException("blockdev: option '" + e.getKey() + "' has no value");
        }
        boolean readOnly = bool(o, "read-only", false);
        boolean direct = bool(o, "cache.direct", false);

        BlockDriver drv;
        if (driver.equals("file")) {
            String filename = require(o, "filename");
            if (filename.isEmpty()) throw new BlockException("blockdev: option 'filename' is empty");
            String aio = o.getOrDefault("aio", "threads");
            if (!aio.equals("threads")) {
                if (aio.equals("native") || aio.equals("io_uring")) {
                    throw new BlockException("blockdev: aio '" + aio + "' is not supported yet (use aio=threads)");
                }
                throw new BlockException("blockdev: invalid value '" + aio + "' for option 'aio'");
            }
            String locking = o.getOrDefault("locking", "auto");
            if (!locking.equals("auto") && !locking.equals("on") && !locking.equals("off")) {
                throw new BlockException("blockdev: invalid value '" + locking + "' for option 'locking' (expected on, off or auto)");
            }
            drv = FileDriver.open(filename, readOnly, direct);
        } else {
            String size = o.get("size");
            if (size == null) throw new BlockException("blockdev: option 'size' is required for driver 'null-co'");
            long len = parseSize("size", size);
            boolean readZeroes = bool(o, "read-zeroes", false);
            long latency = parseLong("latency-ns", o.getOrDefault("latency-ns", "0"));
            drv = new NullDriver(len, readZeroes, latency);
        }
        BlockDriverState bs = new BlockDriverState(nodeName, drv, readOnly, pool);
        nodes.put(nodeName, bs);
        return bs;
    }

    /** The node with this name, or null. */
    public synchronized BlockDriverState get(String nodeName) {
        return nodes.get(nodeName);
    }

    /** A snapshot of all nodes, in creation order. */
    public synchronized Collection<BlockDriverState> all() {
        return List.copyOf(nodes.values());
    }

    /** Closes every node (each waits, bounded, for its in-flight requests) and releases the worker pool. */
    public void close() {
        List<BlockDriverState> toClose;
        synchronized (this) {
            if (closed) return;
            closed = true;
            toClose = new ArrayList<>(nodes.values());
            nodes.clear();
        }
        try {
            for (BlockDriverState bs : toClose) bs.close();
        } finally {
            pool.release();
        }
    }

    // ------------------------------------------------------------------------------------------ parsing

    private static String require(Map<String, String> o, String key) throws BlockException {
        String v = o.get(key);
        if (v == null) throw new BlockException("blockdev: option '" + key + "' is required");
        return v;
    }

    /** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'; at most 31 characters. */
    private static void checkNodeName(String n) throws BlockException {
        boolean ok = !n.isEmpty() && n.length() <= 31 && isAsciiLetter(n.charAt(0));
        for (int i = 1; ok && i < n.length(); i++) {
            char c = n.charAt(i);
            ok = isAsciiLetter(c) || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
        }
        if (!ok) throw new BlockException("blockdev: invalid node-name '" + n + "'");
    }

    private static boolean isAsciiLetter(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }

    /** QEMU's boolean option values. */
    static boolean bool(Map<String, String> o, String key, boolean def) throws BlockException {
        String v = o.get(key);
        if (v == null) return def;
        switch (v) {
            case "on": case "yes": case "true": case "y":
                return true;
            case "off": case "no": case "false": case "n":
                return false;
            default:
                throw new BlockException("blockdev: invalid value '" + v + "' for option '" + key + "' (expected on or off)");
        }
    }

    static long parseLong(String key, String v) throws BlockException {
        try {
            long n = Long.parseLong(v);
            if (n < 0) throw new NumberFormatException();
            return n;
        } catch (NumberFormatException e) {
            throw new BlockException("blockdev: invalid value '" + v + "' for option '" + key + "' (expected a non-negative integer)");
        }
    }

    /** Bytes with an optional QEMU size suffix: B, K, M, G, T, P, E (powers of 1024, either case). */
    static long parseSize(String key, String v) throws BlockException {
        int shift = 0;
        String digits = v;
        if (!v.isEmpty()) {
            int s = "bkmgtpe".indexOf(Character.toLowerCase(v.charAt(v.length() - 1)));
            if (s >= 0) {
                shift = 10 * s;
                digits = v.substring(0, v.length() - 1);
            }
        }
        long n;
        try {
            if (digits.isEmpty() || !digits.chars().allMatch(c -> c >= '0' && c <= '9')) throw new NumberFormatException();
            n = Long.parseLong(digits);
        } catch (NumberFormatException e) {
            throw new BlockException("blockdev: invalid value '" + v + "' for option '" + key + "' (expected a size such as 512, 64K, 1G)");
        }
        if (shift > 0 && n > (Long.MAX_VALUE >> shift)) {
            throw new BlockException("blockdev: value '" + v + "' for option '" + key + "' is too large");
        }
        return n << shift;
    }
}
