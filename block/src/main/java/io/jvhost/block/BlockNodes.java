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
 * them by node-name, together with the throttle groups of {@code --object throttle-group}. Drivers: {@code file}
 * (aio=threads or io_uring), {@code null-co}, and the filters {@code raw} and {@code throttle}, whose {@code file} option names
 * an existing node (as in QEMU: {@code --blockdev driver=raw,node-name=r,file=f}).
 */
public final class BlockNodes {
    private static final Set<String> COMMON = Set.of("driver", "node-name", "read-only", "cache.direct", "force-share");
    private static final Set<String> FILE_OPTS = Set.of("filename", "aio", "locking");
    private static final Set<String> NULL_OPTS = Set.of("size", "read-zeroes", "latency-ns");
    private static final Set<String> RAW_OPTS = Set.of("file", "offset", "size");
    private static final Set<String> THROTTLE_OPTS = Set.of("file", "throttle-group");

    private final Map<String, BlockDriverState> nodes = new LinkedHashMap<>();
    private final Map<String, ThrottleGroup> groups = new LinkedHashMap<>();
    private final AioPool pool = AioPool.acquire();
    private boolean closed;

    public BlockNodes() {}

    /**
     * Opens a node, e.g. {@code {driver=file, node-name=disk0, filename=/x.img, read-only=on, cache.direct=off,
     * aio=threads}}, {@code {driver=null-co, node-name=n0, size=1G, read-zeroes=on, latency-ns=100000}},
     * {@code {driver=raw, node-name=r, file=disk0, offset=1M, size=512M}} or
     * {@code {driver=throttle, node-name=t, throttle-group=g0, file=r}}. A child must already exist.
     *
     * <p>A {@code file} node takes QEMU's image locks unless {@code locking=off} ({@code auto}, the default, is
     * {@code on} wherever the kernel has OFD locks): a writer holds consistent-read and write and shares everything
     * but write; a reader holds consistent-read and also does not share write, unless {@code force-share=on}
     * (read-only nodes only). So a second writer, or a writer and a plain reader, are refused with QEMU's
     * "Failed to get ... lock. Is another process using the image [...]?", within this process or across processes
     * (QEMU and qemu-img included). A {@code locking=off} node neither takes nor checks anything.
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
            case "raw":
                specific = RAW_OPTS;
                break;
            case "throttle":
                specific = THROTTLE_OPTS;
                break;
            default:
                throw new BlockException("blockdev: unknown driver '" + driver + "'");
        }
        for (Map.Entry<String, String> e : o.entrySet()) {
            if (!COMMON.contains(e.getKey()) && !specific.contains(e.getKey())) {
                if (e.getKey().startsWith("file.") && specific.contains("file")) {
                    throw new BlockException("blockdev: option '" + e.getKey() + "': inline child definitions are not"
                            + " supported; create the child with its own --blockdev and give its node-name in 'file'");
                }
                throw new BlockException("blockdev: unknown option '" + e.getKey() + "' for driver '" + driver + "'");
            }
            if (e.getValue() == null) throw new BlockException("blockdev: option '" + e.getKey() + "' has no value");
        }
        boolean readOnly = bool(o, "read-only", false);
        boolean direct = bool(o, "cache.direct", false);
        // QEMU's force-share: share every permission with other openers of the image (file: take no "not shared"
        // lock bytes), so a reader coexists with a writer. Meaningless, and refused, on a writable node.
        boolean forceShare = bool(o, "force-share", false);
        if (forceShare && !readOnly) throw new BlockException("blockdev: force-share=on can only be used with read-only images");

        BlockDriver drv;
        BlockDriverState child = null;
        switch (driver) {
            case "file": {
                String filename = require(o, "filename");
                if (filename.isEmpty()) throw new BlockException("blockdev: option 'filename' is empty");
                String aio = o.getOrDefault("aio", "threads");
                boolean uring = aio.equals("io_uring");
                if (!aio.equals("threads") && !uring) {
                    if (aio.equals("native")) {
                        // QEMU's aio=native needs cache.direct=on; we have no libaio engine at all.
                        throw new BlockException("blockdev: aio 'native' is not supported (use aio=threads or aio=io_uring)");
                    }
                    throw new BlockException("blockdev: invalid value '" + aio + "' for option 'aio'");
                }
                ImageLock.Mode locking = ImageLock.Mode.parse(o.getOrDefault("locking", "auto"));
                drv = FileDriver.open(filename, readOnly, direct, locking, forceShare, uring);
                break;
            }
            case "null-co": {
                String size = o.get("size");
                if (size == null) throw new BlockException("blockdev: option 'size' is required for driver 'null-co'");
                long len = parseSize("size", size);
                boolean readZeroes = bool(o, "read-zeroes", false);
                long latency = parseLong("latency-ns", o.getOrDefault("latency-ns", "0"));
                drv = new NullDriver(len, readZeroes, latency);
                break;
            }
            case "raw": {
                child = child(o, nodeName, readOnly);
                long real = child.getLength();
                long offset = o.containsKey("offset") ? parseSize("offset", o.get("offset")) : 0;
                if (offset > real) {
                    throw new BlockException("blockdev: offset (" + offset + ") cannot be greater than the size of the"
                            + " containing node '" + child.nodeName() + "' (" + real + ")");
                }
                long size = real - offset;
                if (o.containsKey("size")) {
                    size = parseSize("size", o.get("size"));
                    if (size > real - offset) {
                        throw new BlockException("blockdev: the sum of offset (" + offset + ") and size (" + size + ") has to"
                                + " be smaller or equal to the size of the containing node '" + child.nodeName() + "' (" + real + ")");
                    }
                    if (size % 512 != 0) throw new BlockException("blockdev: size (" + size + ") is not a multiple of 512");
                }
                drv = new RawDriver(offset, size, offset != 0 || o.containsKey("size"));
                break;
            }
            default: { // throttle
                String g = require(o, "throttle-group");
                ThrottleGroup group = groups.get(g);
                if (group == null) throw new BlockException("blockdev: option 'throttle-group': no throttle group '" + g + "'");
                child = child(o, nodeName, readOnly);
                drv = new ThrottleDriver(group, child.getLength());
                break;
            }
        }
        BlockDriverState bs = new BlockDriverState(nodeName, drv, readOnly, pool);
        if (child != null) {
            BdrvChild edge = bs.attachChild("file", child);
            if (drv instanceof RawDriver) {
                ((RawDriver) drv).setFile(edge);
            } else {
                ThrottleDriver t = (ThrottleDriver) drv;
                t.setFile(edge);
                t.group().members++;
            }
        }
        nodes.put(nodeName, bs);
        return bs;
    }

    /** The node named by option 'file' (must exist); a writable filter needs a writable child. */
    private BlockDriverState child(Map<String, String> o, String nodeName, boolean readOnly) throws BlockException {
        String name = require(o, "file");
        BlockDriverState c = nodes.get(name);
        if (c == null) throw new BlockException("blockdev: option 'file': no node named '" + name + "'");
        if (!readOnly && c.isReadOnly()) {
            throw new BlockException("blockdev: node '" + name + "' is read-only; '" + nodeName + "' needs read-only=on");
        }
        return c;
    }

    /**
     * Creates a throttle group from {@code --object throttle-group} options: {@code id} plus limits, e.g.
     * {@code {id=g0, x-iops-total=1000, x-bps-write=10M}} or QAPI spelling {@code limits.iops-total=1000}.
     * {@code qom-type}, if present, must be {@code throttle-group}.
     */
    public synchronized ThrottleGroup addThrottleGroup(Map<String, String> opts) throws BlockException {
        if (closed) throw new IllegalStateException("BlockNodes closed");
        Map<String, String> o = new HashMap<>(opts);
        String type = o.remove("qom-type");
        if (type != null && !type.equals("throttle-group")) {
            throw new BlockException("object: type '" + type + "' is not a throttle-group");
        }
        String id = o.remove("id");
        if (id == null) throw new BlockException("object: option 'id' is required");
        if (!isWellFormed(id)) throw new BlockException("object: invalid id '" + id + "'");
        if (groups.containsKey(id)) throw new BlockException("object: duplicate id '" + id + "'");
        for (Map.Entry<String, String> e : o.entrySet()) {
            if (e.getValue() == null) throw new BlockException("object: option '" + e.getKey() + "' has no value");
        }
        ThrottleConfig cfg = ThrottleConfig.parse(o, "object: ");
        if (!o.isEmpty()) {
            throw new BlockException("object: unknown option '" + o.keySet().iterator().next() + "' for throttle-group");
        }
        ThrottleGroup g = new ThrottleGroup(id, cfg);
        groups.put(id, g);
        return g;
    }

    /** The throttle group with this id, or null. */
    public synchronized ThrottleGroup throttleGroup(String id) {
        return groups.get(id);
    }

    /** Deletes a throttle group that no throttle node uses (object-del). */
    public synchronized void removeThrottleGroup(String id) throws BlockException {
        ThrottleGroup g = groups.get(id);
        if (g == null) throw new BlockException("object: no throttle group '" + id + "'");
        if (g.members > 0) throw new BlockException("object: throttle group '" + id + "' is in use by " + g.members + " node(s)");
        groups.remove(id);
    }

    /**
     * Deletes a node (blockdev-del): refused while anything uses it (a backend, a parent node, a job). Its own
     * child edges are dropped, so its children may be deleted next.
     */
    public void remove(String nodeName) throws BlockException {
        BlockDriverState bs;
        synchronized (this) {
            bs = nodes.get(nodeName);
            if (bs == null) throw new BlockException("blockdev: no node named '" + nodeName + "'");
            List<BdrvChild> users = bs.parentEdges();
            if (!users.isEmpty()) {
                StringBuilder sb = new StringBuilder();
                for (BdrvChild c : users) sb.append(sb.length() == 0 ? "" : ", ").append(c.parent().parentName());
                throw new BlockException("blockdev: node '" + nodeName + "' is in use by " + sb);
            }
            nodes.remove(nodeName);
            if (bs.driver() instanceof ThrottleDriver) ((ThrottleDriver) bs.driver()).group().members--;
        }
        bs.close();
    }

    /** The node with this name, or null. */
    public synchronized BlockDriverState get(String nodeName) {
        return nodes.get(nodeName);
    }

    /** A snapshot of all nodes, in creation order. */
    public synchronized Collection<BlockDriverState> all() {
        return List.copyOf(nodes.values());
    }

    /**
     * Closes every node, users before the nodes they use (each waits, bounded, for its in-flight requests), and
     * releases the worker pool.
     */
    public void close() {
        List<BlockDriverState> toClose;
        synchronized (this) {
            if (closed) return;
            closed = true;
            toClose = new ArrayList<>(nodes.values());
            java.util.Collections.reverse(toClose); // children are always created before their parents
            nodes.clear();
            groups.clear();
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

    private static void checkNodeName(String n) throws BlockException {
        if (!isWellFormed(n)) throw new BlockException("blockdev: invalid node-name '" + n + "'");
    }

    /** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'; at most 31 characters. */
    public static boolean isWellFormed(String n) {
        boolean ok = n != null && !n.isEmpty() && n.length() <= 31 && isAsciiLetter(n.charAt(0));
        for (int i = 1; ok && i < n.length(); i++) {
            char c = n.charAt(i);
            ok = isAsciiLetter(c) || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
        }
        return ok;
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
