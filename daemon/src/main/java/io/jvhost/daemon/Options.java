package io.jvhost.daemon;

import io.jvhost.daemon.DaemonConfig.Action;
import io.jvhost.daemon.DaemonConfig.DemoSpec;
import io.jvhost.daemon.DaemonConfig.ExportSpec;
import io.jvhost.daemon.DaemonConfig.IothreadSpec;
import io.jvhost.daemon.DaemonConfig.MonitorSpec;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The command line, parsed like qemu-storage-daemon's for the options the two share: {@code --opt value} and
 * {@code --opt=value}, keyval arguments, and the first {@code --help}/{@code --version} wins over later arguments
 * (errors in earlier ones still count, as with getopt).
 */
public final class Options {
    public static final int MAX_QUEUES = 64;
    public static final int MIN_BLOCK_SIZE = 512;
    public static final int MAX_BLOCK_SIZE = 64 << 10;     // QEMU allows 2M; the device (BlkExportConfig) 64k
    public static final int MAX_SERIAL_BYTES = 20;         // VIRTIO_BLK_ID_BYTES
    public static final int MAX_SOCKET_PATH_BYTES = 107;   // sun_path minus the NUL
    public static final long DEMO_IMAGE_SIZE = 1L << 30;
    public static final String DEMO_IMAGE_NAME = "jvhost-demo.img";
    public static final String DEMO_SOCKET_NAME = "jvhost-demo.sock";
    public static final String DEMO_DEFAULT_SOCKET = "/tmp/" + DEMO_SOCKET_NAME;
    public static final int DEMO_QUEUES = 2;

    private Options() {}

    public static String usage() {
        return String.join("\n",
                "Usage: jvhost [options]",
                "jvhost: a vhost-user-blk back-end in Java. The options are those of qemu-storage-daemon(1) that",
                "jvhost supports; a qemu-storage-daemon command line limited to them works unchanged.",
                "",
                "  -h, --help             display this help and exit",
                "  -V, --version          output version information and exit",
                "",
                "  --blockdev [driver=]file,node-name=<node>,filename=<path>[,read-only=on|off]",
                "             [,cache.direct=on|off][,aio=threads|io_uring][,locking=auto|on|off]",
                "                         open a raw image file (or block device) as block node <node>;",
                "                         aio=io_uring: reads, writes and flushes from iothreads go",
                "                         through each iothread's io_uring (default: aio=threads)",
                "  --blockdev [driver=]null-co,node-name=<node>,size=<bytes>[,read-zeroes=on|off]",
                "             [,latency-ns=<ns>][,read-only=on|off]",
                "                         create a block node that discards writes (and reads zeroes",
                "                         with read-zeroes=on); sizes take suffixes k, M, G, T",
                "  --blockdev [driver=]raw,node-name=<node>,file=<child-node>[,offset=<bytes>][,size=<bytes>]",
                "                         a raw view of node <child-node> (optionally a window of it)",
                "  --blockdev [driver=]throttle,node-name=<node>,throttle-group=<group>,file=<child-node>",
                "                         a filter that limits I/O to <child-node> by the budget of <group>",
                "",
                "  --object throttle-group,id=<group>[,x-iops-total=<n>][,x-iops-read=<n>][,x-iops-write=<n>]",
                "           [,x-bps-total=<n>][,x-bps-read=<n>][,x-bps-write=<n>][,x-<limit>-max=<n>]",
                "           [,x-<limit>-max-length=<s>][,x-iops-size=<bytes>]   (also limits.iops-total=... etc.)",
                "                         an I/O budget shared by every throttle node bound to it",
                "",
                "  --object iothread,id=<id>[,poll-max-ns=<ns>][,poll-grow=<n>][,poll-shrink=<n>]",
                "                         create an iothread (an event loop thread) for exports to use;",
                "                         adaptive polling as in QEMU: before sleeping, the thread polls",
                "                         its virtqueues for up to poll-max-ns (default 32768, 0: off),",
                "                         self-tuned by poll-grow (0: double) and poll-shrink (0: reset);",
                "                         aio-max-batch is accepted for compatibility and ignored",
                "",
                "  --export [type=]vhost-user-blk,id=<id>,node-name=<node>,",
                "           addr.type=unix,addr.path=<socket-path>[,<export options>]",
                "                         export block node <node> as a vhost-user-blk device on a UNIX",
                "                         domain socket (created with mode 0600, a stale file is replaced)",
                "  --export [type=]vhost-user-blk,id=<id>,node-name=<node>,",
                "           addr.type=fd,addr.str=<fd>[,<export options>]",
                "                         the same on an inherited, already listening socket <fd>",
                "         export options:",
                "           writable=on|off        let the guest write (default: off)",
                "           num-queues=<n>         number of virtqueues, 1.." + MAX_QUEUES + " (default: 1)",
                "           logical-block-size=<b> a power of two from 512 to 64k (default: 512)",
                "           iothread=<id>          serve all queues in iothread <id>",
                "           iothread.<i>=<id>      a list of iothreads: queue q runs in iothread.<q mod n>",
                "                                  (default: a new iothread per queue, '<export-id>-vq<q>')",
                "           serial=<string>        the disk's serial number, at most 20 bytes",
                "                                  (default: jvhost)",
                "           writethrough=off       accepted for compatibility (on is not supported yet)",
                "           fixed-iothread=on|off  accepted for compatibility: queues always run in the",
                "                                  iothreads given",
                "",
                "  --chardev socket,id=<id>,path=<socket-path>,server=on[,wait=off]",
                "                         a UNIX domain socket for a QMP monitor (created with mode 0600,",
                "                         a stale socket file is replaced); jvhost never waits for a client",
                "  --monitor [chardev=]<id>[,mode=control][,pretty=off]",
                "                         serve QMP (the QEMU Machine Protocol: JSON commands and events,",
                "                         e.g. block-export-add, query-block-exports, quit) on chardev <id>,",
                "                         one client at a time; any number of monitors may be given",
                "",
                "  --pidfile <path>       write the process ID to <path> once every export and monitor",
                "                         listens; the file is removed at exit",
                "",
                "  --demo [<dir>]         try it out: create (if absent) a sparse 1 GiB image " + DEMO_IMAGE_NAME,
                "                         in <dir> (default: the current directory), export it writable",
                "                         with " + DEMO_QUEUES + " queues on " + DEMO_DEFAULT_SOCKET
                        + " (<dir>/" + DEMO_SOCKET_NAME + " when <dir>",
                "                         is given) and print the QEMU command line that attaches a VM",
                "",
                "Any number of --blockdev, --object and --export options may be given. A block node may be",
                "exported writable by one export only. Readiness: one line per export on stdout,",
                "'jvhost: export <id> listening on <address> (<n> queues)', and one per monitor,",
                "'jvhost: QMP monitor <chardev-id> listening on <path>'. SIGTERM, SIGINT and the QMP command",
                "quit stop all exports and exit with status 0; a second signal exits at once with status 1.",
                "Bad options print one line on stderr and exit with status 1.",
                "",
                "Environment: JVHOST_JAVA_OPTS adds JVM options (bin/jvhost; JVHOST_DEFAULT_JAVA_OPTS replaces",
                "its small-footprint defaults);",
                "-Djvhost.log.level=FINE|INFO|WARNING sets the log level (default: INFO, on stderr).",
                "");
    }

    /** Parses and cross-checks {@code args}. Performs no I/O. */
    public static DaemonConfig parse(String[] args) throws UsageException {
        List<Map<String, String>> blockdevs = new ArrayList<>();
        List<IothreadSpec> iothreads = new ArrayList<>();
        List<Map<String, String>> throttleGroups = new ArrayList<>();
        java.util.Set<String> objectIds = new java.util.HashSet<>();   // iothreads and throttle groups share QOM ids
        List<ExportSpec> exports = new ArrayList<>();
        Map<String, String> chardevs = new LinkedHashMap<>();     // id -> socket path
        List<String[]> monitorRequests = new ArrayList<>();       // {chardev id}
        Map<String, Boolean> nodeReadOnly = new LinkedHashMap<>();
        Path pidfile = null;
        DemoSpec demo = null;

        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.equals("-h")) return DaemonConfig.of(Action.HELP);
            if (arg.equals("-V")) return DaemonConfig.of(Action.VERSION);
            if (!arg.startsWith("--") || arg.equals("--")) {
                if (arg.startsWith("-") && arg.length() > 1) {
                    throw new UsageException(null, "unknown option '" + arg + "'");
                }
                throw new UsageException(null, "unexpected argument '" + arg + "' (options start with --; see --help)");
            }
            int eq = arg.indexOf('=');
            String name = eq < 0 ? arg : arg.substring(0, eq);
            String inline = eq < 0 ? null : arg.substring(eq + 1);
            switch (name) {
                case "--help", "--version" -> {
                    if (inline != null) throw new UsageException(null, "option '" + name + "' doesn't allow an argument");
                    return DaemonConfig.of(name.equals("--help") ? Action.HELP : Action.VERSION);
                }
                case "--blockdev" -> {
                    String v = inline != null ? inline : requireArg(args, ++i, name);
                    Map<String, String> opts = parseBlockdev(v, nodeReadOnly);
                    blockdevs.add(opts);
                }
                case "--object" -> {
                    String v = inline != null ? inline : requireArg(args, ++i, name);
                    KeyValue kv = keyval("--object", v, "qom-type");
                    if ("throttle-group".equals(kv.get("qom-type"))) {
                        // Limits are checked by the block layer (QEMU's throttle_is_valid rules).
                        Map<String, String> tg = new LinkedHashMap<>(kv.asMap());
                        tg.remove("qom-type");
                        String id = tg.get("id");
                        if (id == null) throw new UsageException(name, "parameter 'id' is missing");
                        checkId(name, id);
                        if (!objectIds.add(id)) throw new UsageException(name, "id '" + id + "' is already in use");
                        throttleGroups.add(tg);
                        continue;
                    }
                    IothreadSpec t = objectSpec(kv);
                    if (!objectIds.add(t.id())) throw new UsageException(name, "id '" + t.id() + "' is already in use");
                    iothreads.add(t);
                }
                case "--export" -> {
                    String v = inline != null ? inline : requireArg(args, ++i, name);
                    exports.add(parseExport(v));
                }
                case "--chardev" -> {
                    String v = inline != null ? inline : requireArg(args, ++i, name);
                    String[] c = parseChardev(v);
                    if (chardevs.putIfAbsent(c[0], c[1]) != null) {
                        throw new UsageException(name, "id '" + c[0] + "' is already in use");
                    }
                }
                case "--monitor" -> {
                    String v = inline != null ? inline : requireArg(args, ++i, name);
                    monitorRequests.add(new String[] {parseMonitor(v)});
                }
                case "--pidfile" -> {
                    String v = inline != null ? inline : requireArg(args, ++i, name);
                    if (v.isEmpty()) throw new UsageException(name, "empty path");
                    if (pidfile != null) throw new UsageException(name, "given more than once");
                    pidfile = Path.of(v);
                }
                case "--demo" -> {
                    if (demo != null) throw new UsageException(name, "given more than once");
                    String dir = inline;
                    // The directory is optional: take the next word unless it is another option.
                    if (dir == null && i + 1 < args.length && !args[i + 1].startsWith("-")) dir = args[++i];
                    if (dir != null && dir.isEmpty()) throw new UsageException(name, "empty directory");
                    demo = demoSpec(dir);
                    Map<String, String> node = new LinkedHashMap<>();
                    node.put("driver", "file");
                    node.put("node-name", "jvhost-demo");
                    node.put("filename", demo.image().toString());
                    if (nodeReadOnly.containsKey("jvhost-demo")) {
                        throw new UsageException(name, "node name 'jvhost-demo' is already in use");
                    }
                    nodeReadOnly.put("jvhost-demo", false);
                    blockdevs.add(node);
                    exports.add(new ExportSpec("jvhost-demo", "jvhost-demo", demo.socketPath(), -1, demo.numQueues(),
                            MIN_BLOCK_SIZE, true, null, List.of()));
                }
                default -> throw new UsageException(null, "unknown option '" + name + "'");
            }
        }

        List<MonitorSpec> monitors = monitors(chardevs, monitorRequests);
        crossCheck(iothreads, exports, monitors, nodeReadOnly);
        if (exports.isEmpty() && monitors.isEmpty()) {
            throw new UsageException(null, "nothing to do: give at least one --export or --monitor (or --demo); see --help");
        }
        return new DaemonConfig(Action.RUN, blockdevs, iothreads, throttleGroups, exports, monitors, pidfile, demo);
    }

    private static String requireArg(String[] args, int i, String name) throws UsageException {
        if (i >= args.length) throw new UsageException(null, "option '" + name + "' requires an argument");
        return args[i];
    }

    private static KeyValue keyval(String option, String text, String impliedKey) throws UsageException {
        if (text.startsWith("{")) {
            throw new UsageException(option, "JSON arguments are not supported; use key=value,...");
        }
        try {
            return KeyValue.parse(text, impliedKey);
        } catch (KeyValueException e) {
            throw new UsageException(option, e.getMessage());
        }
    }

    private static Map<String, String> parseBlockdev(String text, Map<String, Boolean> nodeReadOnly) throws UsageException {
        KeyValue kv = keyval("--blockdev", text, "driver");
        // Driver-specific options are the block layer's to check; we need only what exports refer to.
        if (kv.get("driver") == null) throw new UsageException("--blockdev", "parameter 'driver' is missing");
        String node = kv.get("node-name");
        if (node == null) throw new UsageException("--blockdev", "parameter 'node-name' is missing");
        if (nodeReadOnly.containsKey(node)) {
            throw new UsageException("--blockdev", "node name '" + node + "' is already in use");
        }
        String ro = kv.get("read-only");
        Boolean readOnly = ro == null ? Boolean.FALSE : parseBoolOrNull(ro);
        nodeReadOnly.put(node, readOnly != null && readOnly);   // a bad value is reported by the block layer
        return kv.asMap();
    }

    private static IothreadSpec parseObject(String text) throws UsageException {
        return objectSpec(keyval("--object", text, "qom-type"));
    }

    /**
     * {@code --object} and QMP {@code object-add}: an iothread with QEMU's adaptive-polling knobs (aio-max-batch
     * is checked and reported only).
     */
    static IothreadSpec objectSpec(KeyValue kv) throws UsageException {
        String opt = "--object";
        Params p = new Params(opt, kv);
        String type = p.take("qom-type");
        if (type == null) throw new UsageException(opt, "parameter 'qom-type' is missing");
        if (!type.equals("iothread")) throw new UsageException(opt, unsupportedObjectType(type));
        String id = p.required("id");
        checkId(opt, id);
        long[] knobs = {IothreadSpec.DEFAULT_POLL_MAX_NS, 0, 0, 0};
        String[] names = {"poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch"};
        for (int i = 0; i < names.length; i++) {
            String v = p.take(names[i]);
            if (v != null) knobs[i] = parseUnsigned(opt, names[i], v, Long.MAX_VALUE);
        }
        p.finish();
        return new IothreadSpec(id, knobs[0], knobs[1], knobs[2], knobs[3]);
    }

    static String unsupportedObjectType(String type) {
        return "object type '" + type + "' is not supported (only 'iothread' and 'throttle-group')";
    }

    static String unsupportedExportType(String type) {
        return "export type '" + type + "' is not supported (only 'vhost-user-blk')";
    }

    static String unsupportedAddressType(String type) {
        return "addr.type '" + type + "' is not supported (only 'unix' and 'fd')";
    }

    private static ExportSpec parseExport(String text) throws UsageException {
        return exportSpec(keyval("--export", text, "type"));
    }

    /**
     * {@code --export} and QMP {@code block-export-add}: one export, checked on its own. What it refers to (node,
     * iothreads, other exports) is checked by {@link #checkExport}.
     */
    static ExportSpec exportSpec(KeyValue kv) throws UsageException {
        String opt = "--export";
        Params p = new Params(opt, kv);
        String type = p.take("type");
        if (type == null) throw new UsageException(opt, "parameter 'type' is missing");
        if (!type.equals("vhost-user-blk")) throw new UsageException(opt, unsupportedExportType(type));
        String id = p.required("id");
        checkId(opt, id);
        String node = p.required("node-name");

        String addrType = p.required("addr.type");
        String socketPath = null;
        int fd = -1;
        switch (addrType) {
            case "unix" -> {
                socketPath = p.required("addr.path");
                checkSocketPath(opt, "addr.path", socketPath);
            }
            case "fd" -> {
                String s = p.required("addr.str");
                fd = (int) parseUnsigned(opt, "addr.str", s, Integer.MAX_VALUE);
            }
            default -> throw new UsageException(opt, unsupportedAddressType(addrType));
        }

        String w = p.take("writable");
        boolean writable = w != null && parseBool(opt, "writable", w);

        String nq = p.take("num-queues");
        int numQueues = nq == null ? 1 : (int) parseUnsigned(opt, "num-queues", nq, Integer.MAX_VALUE);
        if (numQueues < 1 || numQueues > MAX_QUEUES) {
            throw new UsageException(opt, "parameter 'num-queues' must be between 1 and " + MAX_QUEUES + ", not " + nq);
        }

        String lbs = p.take("logical-block-size");
        int blockSize = MIN_BLOCK_SIZE;
        if (lbs != null) {
            long b = parseSize(opt, "logical-block-size", lbs);
            if (b < MIN_BLOCK_SIZE || b > MAX_BLOCK_SIZE || Long.bitCount(b) != 1) {
                throw new UsageException(opt, "parameter 'logical-block-size' must be a power of two from 512 to 64k, not " + lbs);
            }
            blockSize = (int) b;
        }

        List<String> threads = new ArrayList<>();
        List<String> list = p.takeList("iothread");
        if (list != null) {
            threads.addAll(list);
        } else {
            String t = p.take("iothread");
            if (t != null) threads.add(t);
        }

        String wt = p.take("writethrough");
        if (wt != null && parseBool(opt, "writethrough", wt)) {
            // The device applies the guest's write cache setting per connection; a fixed writethrough mode
            // needs the device to start with its cache off (a vhost-user hook).
            throw new UsageException(opt, "writethrough=on is not supported yet");
        }
        String fixed = p.take("fixed-iothread");
        if (fixed != null) parseBool(opt, "fixed-iothread", fixed);   // queues never move, so both hold

        String serial = p.take("serial");
        if (serial != null) {
            if (serial.getBytes(StandardCharsets.UTF_8).length > MAX_SERIAL_BYTES) {
                throw new UsageException(opt, "parameter 'serial' is longer than " + MAX_SERIAL_BYTES + " bytes");
            }
        }
        p.finish();
        return new ExportSpec(id, node, socketPath, fd, numQueues, blockSize, writable, serial, threads);
    }

    /** What a new export is checked against: the nodes, iothreads, exports and monitors that exist (or will). */
    interface State {
        /** Whether the node is read-only; null when there is no such node. */
        Boolean nodeReadOnly(String node);

        boolean hasIothread(String id);

        Collection<ExportSpec> exports();

        Collection<MonitorSpec> monitors();
    }

    /** The checks of one export against the others, shared by the command line and QMP block-export-add. */
    static void checkExport(ExportSpec e, State s) throws UsageException {
        String opt = "--export";
        for (ExportSpec other : s.exports()) {
            if (other.id().equals(e.id())) throw new UsageException(opt, "export id '" + e.id() + "' is already in use");
        }
        Boolean readOnly = s.nodeReadOnly(e.nodeName());
        if (readOnly == null) throw new UsageException(opt, "node '" + e.nodeName() + "' not found");
        for (String t : e.iothreads()) {
            if (!s.hasIothread(t)) throw new UsageException(opt, "iothread '" + t + "' not found");
        }
        if (e.writable()) {
            if (readOnly) throw new UsageException(opt, "node '" + e.nodeName() + "' is read-only, it cannot be exported writable");
            for (ExportSpec other : s.exports()) {
                if (other.writable() && other.nodeName().equals(e.nodeName())) {
                    throw new UsageException(opt, "node '" + e.nodeName() + "' is already exported writable by '" + other.id() + "'");
                }
            }
        }
        String where = addressKey(e);
        for (ExportSpec other : s.exports()) {
            if (addressKey(other).equals(where)) {
                throw new UsageException(opt, "export '" + e.id() + "' listens on " + e.address() + " like export '" + other.id() + "'");
            }
        }
        if (e.socketPath() != null) {
            for (MonitorSpec m : s.monitors()) {
                if (normalPath(m.socketPath()).equals(where)) {
                    throw new UsageException(opt, "export '" + e.id() + "' listens on " + e.address()
                            + " like QMP monitor '" + m.chardev() + "'");
                }
            }
        }
    }

    /** The same socket whatever the spelling (relative, "//", "/./"). */
    private static String addressKey(ExportSpec e) {
        return e.socketPath() != null ? normalPath(e.socketPath()) : "fd " + e.listenFd();
    }

    static String normalPath(String p) {
        return Path.of(p).toAbsolutePath().normalize().toString();
    }

    private static void crossCheck(List<IothreadSpec> iothreads, List<ExportSpec> exports, List<MonitorSpec> monitors,
                                   Map<String, Boolean> nodeReadOnly) throws UsageException {
        Set<String> iothreadIds = new HashSet<>();
        for (IothreadSpec t : iothreads) iothreadIds.add(t.id());
        List<ExportSpec> before = new ArrayList<>();
        State s = new State() {
            @Override
            public Boolean nodeReadOnly(String node) {
                return nodeReadOnly.get(node);
            }

            @Override
            public boolean hasIothread(String id) {
                return iothreadIds.contains(id);
            }

            @Override
            public Collection<ExportSpec> exports() {
                return before;
            }

            @Override
            public Collection<MonitorSpec> monitors() {
                return monitors;
            }
        };
        // Each export against those before it: the first of two clashing ones is the one named as taken.
        for (ExportSpec e : exports) {
            checkExport(e, s);
            before.add(e);
        }
    }

    /** {@code --chardev socket,id=C,path=P,server=on,wait=off}: returns {id, path}. */
    private static String[] parseChardev(String text) throws UsageException {
        String opt = "--chardev";
        Params p = new Params(opt, keyval(opt, text, "backend"));
        String backend = p.take("backend");
        if (backend == null) throw new UsageException(opt, "parameter 'backend' is missing");
        if (!backend.equals("socket")) {
            throw new UsageException(opt, "chardev backend '" + backend + "' is not supported (only 'socket')");
        }
        String id = p.required("id");
        checkId(opt, id);
        String path = p.required("path");
        checkSocketPath(opt, "path", path);
        String server = p.take("server");
        if (server == null || !parseBool(opt, "server", server)) {
            throw new UsageException(opt, "only server=on is supported (jvhost listens for QMP clients)");
        }
        String wait = p.take("wait");
        if (wait != null && parseBool(opt, "wait", wait)) {
            throw new UsageException(opt, "wait=on is not supported (jvhost does not wait for a client); use wait=off");
        }
        p.finish();
        return new String[] {id, path};
    }

    /** {@code --monitor [chardev=]C[,mode=control][,pretty=off][,id=...]}: returns the chardev id. */
    private static String parseMonitor(String text) throws UsageException {
        String opt = "--monitor";
        Params p = new Params(opt, keyval(opt, text, "chardev"));
        String chardev = p.required("chardev");
        String mode = p.take("mode");
        if (mode != null && !mode.equals("control")) {
            throw new UsageException(opt, "mode '" + mode + "' is not supported (only 'control', i.e. QMP)");
        }
        String pretty = p.take("pretty");
        if (pretty != null && parseBool(opt, "pretty", pretty)) throw new UsageException(opt, "pretty=on is not supported");
        String id = p.take("id");
        if (id != null) checkId(opt, id);
        p.finish();
        return chardev;
    }

    private static List<MonitorSpec> monitors(Map<String, String> chardevs, List<String[]> requests) throws UsageException {
        List<MonitorSpec> out = new ArrayList<>();
        Set<String> used = new HashSet<>();
        for (String[] r : requests) {
            String chardev = r[0];
            String path = chardevs.get(chardev);
            if (path == null) throw new UsageException("--monitor", "chardev '" + chardev + "' not found");
            if (!used.add(chardev)) throw new UsageException("--monitor", "chardev '" + chardev + "' is already used by another monitor");
            for (MonitorSpec m : out) {
                if (normalPath(m.socketPath()).equals(normalPath(path))) {
                    throw new UsageException("--chardev", "chardevs '" + m.chardev() + "' and '" + chardev + "' have the same path " + path);
                }
            }
            out.add(new MonitorSpec(chardev, path));
        }
        for (String id : chardevs.keySet()) {
            if (!used.contains(id)) {
                throw new UsageException("--chardev", "chardev '" + id + "' is not used by any --monitor"
                        + " (jvhost uses chardevs only for QMP monitors)");
            }
        }
        return out;
    }

    private static void checkSocketPath(String opt, String key, String path) throws UsageException {
        if (path.isEmpty()) throw new UsageException(opt, "parameter '" + key + "' is empty");
        if (path.indexOf('\0') >= 0) throw new UsageException(opt, "parameter '" + key + "' contains a NUL character");
        int bytes = path.getBytes(StandardCharsets.UTF_8).length;
        if (bytes > MAX_SOCKET_PATH_BYTES) {
            throw new UsageException(opt, "socket path is " + bytes + " bytes long, the limit is "
                    + MAX_SOCKET_PATH_BYTES + ": '" + path + "'");
        }
    }

    private static DemoSpec demoSpec(String dir) {
        Path base = Path.of(dir == null ? "" : dir).toAbsolutePath().normalize();
        Path image = base.resolve(DEMO_IMAGE_NAME);
        String socket = DEMO_DEFAULT_SOCKET;
        if (dir != null) {
            String inDir = base.resolve(DEMO_SOCKET_NAME).toString();
            // A deep directory would exceed sun_path; then /tmp it is.
            if (inDir.getBytes(StandardCharsets.UTF_8).length <= MAX_SOCKET_PATH_BYTES) socket = inDir;
        }
        return new DemoSpec(image, DEMO_IMAGE_SIZE, socket, DEMO_QUEUES);
    }

    /** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
    static void checkId(String opt, String id) throws UsageException {
        boolean ok = !id.isEmpty() && Character.isLetter(id.charAt(0)) && id.charAt(0) < 128;
        for (int i = 1; ok && i < id.length(); i++) {
            char c = id.charAt(i);
            ok = c < 128 && (Character.isLetterOrDigit(c) || c == '-' || c == '.' || c == '_');
        }
        if (!ok) {
            throw new UsageException(opt, "invalid id '" + id + "' (a letter, then letters, digits, '-', '.', '_')");
        }
    }

    private static Boolean parseBoolOrNull(String v) {
        return switch (v) {
            case "on", "yes", "true", "y" -> Boolean.TRUE;
            case "off", "no", "false", "n" -> Boolean.FALSE;
            default -> null;
        };
    }

    static boolean parseBool(String opt, String key, String v) throws UsageException {
        Boolean b = parseBoolOrNull(v);
        if (b == null) throw new UsageException(opt, "parameter '" + key + "' expects 'on' or 'off', not '" + v + "'");
        return b;
    }

    /** A non-negative integer: decimal, 0x hex or 0 octal, as QEMU's qemu_strtou64(base 0). */
    static long parseUnsigned(String opt, String key, String v, long max) throws UsageException {
        long n = parseNumber(v);
        if (n < 0) throw new UsageException(opt, "parameter '" + key + "' expects a non-negative integer, not '" + v + "'");
        if (n > max) throw new UsageException(opt, "parameter '" + key + "' is too large: " + v);
        return n;
    }

    /** Returns -1 when {@code v} is not a number or does not fit in a long. */
    private static long parseNumber(String v) {
        int radix = 10;
        String digits = v;
        if (v.length() > 2 && (v.startsWith("0x") || v.startsWith("0X"))) {
            radix = 16;
            digits = v.substring(2);
        } else if (v.length() > 1 && v.startsWith("0")) {
            radix = 8;
            digits = v.substring(1);
        }
        if (digits.isEmpty()) return -1;
        for (int i = 0; i < digits.length(); i++) {
            if (Character.digit(digits.charAt(i), radix) < 0) return -1;
        }
        try {
            return Long.parseLong(digits, radix);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /** A size: an integer with an optional suffix b, k, M, G, T (powers of 1024), as QEMU's size type. */
    static long parseSize(String opt, String key, String v) throws UsageException {
        String number = v;
        int shift = 0;
        if (!v.isEmpty()) {
            char last = v.charAt(v.length() - 1);
            int s = switch (Character.toLowerCase(last)) {
                case 'b' -> 0;
                case 'k' -> 10;
                case 'm' -> 20;
                case 'g' -> 30;
                case 't' -> 40;
                default -> -1;
            };
            // 'b' is also a hex digit: in a 0x number it is not a suffix.
            if (s == 0 && v.toLowerCase(Locale.ROOT).startsWith("0x")) s = -1;
            if (s >= 0) {
                shift = s;
                number = v.substring(0, v.length() - 1);
            }
        }
        long n = number.isEmpty() ? -1 : parseNumber(number);
        if (n < 0 || (shift > 0 && n > (Long.MAX_VALUE >> shift))) {
            throw new UsageException(opt, "parameter '" + key + "' expects a size (e.g. 4096 or 4k), not '" + v + "'");
        }
        return n << shift;
    }

    /** The parameters of one option: tracks which were used so that leftovers are reported as unknown. */
    private static final class Params {
        private final String option;
        private final KeyValue kv;
        private final Set<String> taken = new HashSet<>();

        Params(String option, KeyValue kv) {
            this.option = option;
            this.kv = kv;
        }

        String take(String key) {
            taken.add(key);
            return kv.get(key);
        }

        String required(String key) throws UsageException {
            String v = take(key);
            if (v == null) {
                if (kv.hasChildren(key)) throw new UsageException(option, "parameter '" + key + "' expects a string");
                throw new UsageException(option, "parameter '" + key + "' is missing");
            }
            return v;
        }

        List<String> takeList(String key) throws UsageException {
            try {
                List<String> l = kv.list(key);
                if (l != null) {
                    for (int i = 0; i < l.size(); i++) taken.add(key + "." + i);
                }
                return l;
            } catch (KeyValueException e) {
                throw new UsageException(option, e.getMessage());
            }
        }

        void finish() throws UsageException {
            for (String k : kv.keys()) {
                if (!taken.contains(k)) throw new UsageException(option, "unknown parameter '" + k + "'");
            }
        }
    }
}
