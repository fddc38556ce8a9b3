package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockException;
import io.jvhost.block.ThrottleConfig;
import io.jvhost.block.ThrottleGroup;
import io.jvhost.block.job.MirrorJob;
import io.jvhost.daemon.qmp.Json;
import io.jvhost.daemon.qmp.Qapi;
import io.jvhost.daemon.qmp.QmpCommand;
import io.jvhost.daemon.qmp.QmpException;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Executor;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;

import static io.jvhost.daemon.qmp.Qapi.ANY;
import static io.jvhost.daemon.qmp.Qapi.BOOL;
import static io.jvhost.daemon.qmp.Qapi.INT;
import static io.jvhost.daemon.qmp.Qapi.SIZE;
import static io.jvhost.daemon.qmp.Qapi.STR;
import static io.jvhost.daemon.qmp.Qapi.UINT16;
import static io.jvhost.daemon.qmp.Qapi.UINT32;
import static io.jvhost.daemon.qmp.Qapi.UINT64;
import static io.jvhost.daemon.qmp.Qapi.enumOf;
import static io.jvhost.daemon.qmp.Qapi.optional;
import static io.jvhost.daemon.qmp.Qapi.required;
import static io.jvhost.daemon.qmp.Qapi.struct;
import static io.jvhost.daemon.qmp.Qapi.union;

/**
 * The daemon's QMP commands. Arguments follow QEMU's QAPI schema for these commands (BlockdevOptions,
 * BlockExportOptions, ObjectOptions, ...) restricted to what jvhost implements; a member we do not implement is
 * "unexpected", as an unknown one is. Values are then checked by the command-line code ({@link Options}), and the
 * work is done by the {@link Daemon} methods that the command line uses, on the main loop.
 *
 * <p>Only what works is registered, so query-commands lists only that. Not here: block-set-io-throttle (it names
 * a BlockBackend by device or qdev id; as in qemu-storage-daemon, the exports' backends are anonymous, so limits
 * live in throttle groups, changed with qom-set), the block-job-* verbs (the job-* ones are here) and
 * block-job-set-speed (no rate limit).
 */
final class QmpCommands {
    private QmpCommands() {}

    static final Qapi.Type BLOCKDEV_OPTIONS = union(
            struct(required("driver", STR), required("node-name", STR), optional("read-only", BOOL),
                    optional("cache", struct(optional("direct", BOOL)))),
            "driver",
            branches("file", struct(required("filename", STR),
                            optional("aio", enumOf("threads", "native", "io_uring")),
                            optional("locking", enumOf("auto", "on", "off"))),
                    "null-co", struct(optional("size", INT), optional("latency-ns", UINT64), optional("read-zeroes", BOOL)),
                    "raw", struct(required("file", Qapi.nodeRef()), optional("offset", INT), optional("size", INT)),
                    "throttle", struct(required("throttle-group", STR), required("file", Qapi.nodeRef()))),
            d -> "driver '" + d + "' is not supported (only 'file', 'null-co', 'raw' and 'throttle')");

    static final Qapi.Type SOCKET_ADDRESS = union(
            struct(required("type", STR)),
            "type",
            branches("unix", struct(required("path", STR)), "fd", struct(required("str", STR))),
            t -> t.equals("inet") || t.equals("vsock") ? Options.unsupportedAddressType(t)
                    : "Parameter 'addr.type' does not accept value '" + t + "'");

    static final Qapi.Type BLOCK_EXPORT_OPTIONS = union(
            struct(required("type", STR), required("id", STR), required("node-name", STR), optional("writable", BOOL),
                    optional("writethrough", BOOL), optional("iothread", Qapi.strOrStrList()), optional("fixed-iothread", BOOL)),
            "type",
            branches("vhost-user-blk", struct(required("addr", SOCKET_ADDRESS), optional("logical-block-size", SIZE),
                    optional("num-queues", UINT16), optional("serial", STR))),
            Options::unsupportedExportType);

    /** QAPI's ThrottleLimits: the six buckets, each with its -max and -max-length, then iops-size. */
    private static final Qapi.Struct THROTTLE_LIMITS;

    static {
        List<Qapi.Member> limits = new java.util.ArrayList<>();
        for (String n : ThrottleConfig.LIMIT_NAMES) limits.add(optional(n, INT));
        THROTTLE_LIMITS = struct(limits.toArray(new Qapi.Member[0]));
    }

    /** ThrottleGroupProperties: {@code limits} (ThrottleLimits) and the legacy {@code x-<limit>} members. */
    private static Qapi.Struct throttleGroupProperties() {
        List<Qapi.Member> members = new java.util.ArrayList<>();
        members.add(optional("limits", THROTTLE_LIMITS));
        for (String n : ThrottleConfig.LIMIT_NAMES) members.add(optional("x-" + n, INT));
        return struct(members.toArray(new Qapi.Member[0]));
    }

    static final Qapi.Type OBJECT_OPTIONS = union(
            struct(required("qom-type", STR), required("id", STR)),
            "qom-type",
            branches("iothread", struct(optional("poll-max-ns", INT), optional("poll-grow", INT),
                            optional("poll-shrink", INT), optional("aio-max-batch", INT)),
                    "throttle-group", throttleGroupProperties()),
            Options::unsupportedObjectType);

    private static final Qapi.Type ON_ERROR = enumOf("report", "ignore", "enospc", "stop", "auto");

    /** QEMU's blockdev-mirror arguments. */
    static final Qapi.Type BLOCKDEV_MIRROR = struct(
            optional("job-id", STR), required("device", STR), required("target", STR), optional("replaces", STR),
            required("sync", enumOf("top", "full", "none", "incremental", "bitmap")),
            optional("speed", INT), optional("granularity", UINT32), optional("buf-size", INT),
            optional("on-source-error", ON_ERROR), optional("on-target-error", ON_ERROR),
            optional("filter-node-name", STR), optional("copy-mode", enumOf("background", "write-blocking")),
            optional("auto-finalize", BOOL), optional("auto-dismiss", BOOL));

    static final Qapi.Type QOM_GET = struct(required("path", STR), required("property", STR));
    static final Qapi.Type QOM_SET = struct(required("path", STR), required("property", STR), required("value", ANY));

    private static final Qapi.Type JOB_ID = struct(required("id", STR));

    private static final Qapi.Type NO_ARGS = struct();

    static final Qapi.Type BLOCK_RESIZE = struct(optional("device", STR), optional("node-name", STR), required("size", INT));

    /**
     * block_resize drains the node, which waits for its requests: never on the main loop (the exports' message
     * handling and completions may need it). Daemon threads, so a resize stuck on a hung disk does not keep the
     * process alive at quit.
     */
    private static final ExecutorService RESIZE = Executors.newCachedThreadPool(new java.util.concurrent.ThreadFactory() {
        private final AtomicInteger n = new AtomicInteger();

        @Override
        public Thread newThread(Runnable r) {
            Thread t = new Thread(r, "jvhost-resize-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        }
    });

    static List<QmpCommand> of(Daemon d) {
        Executor main = d.mainLoop();
        return List.of(
                QmpCommand.sync("quit", NO_ARGS, null, a -> Json.object()).withAfterReply(d::quit),

                QmpCommand.sync("blockdev-add", BLOCKDEV_OPTIONS, main, a -> {
                    shared(() -> d.addBlockdev(a));
                    return Json.object();
                }),
                QmpCommand.sync("blockdev-del", struct(required("node-name", STR)), main, a -> {
                    d.deleteBlockdev(a.get("node-name"));
                    return Json.object();
                }),
                QmpCommand.sync("query-named-block-nodes", struct(optional("flat", BOOL)), main, a -> namedBlockNodes(d)),

                QmpCommand.sync("block-export-add", BLOCK_EXPORT_OPTIONS, main, a -> {
                    shared(() -> d.addExport(Options.exportSpec(keyValue(a))));
                    return Json.object();
                }),
                QmpCommand.sync("block-export-del", struct(required("id", STR), optional("mode", enumOf("safe", "hard"))), main,
                        a -> {
                            d.deleteExport(a.get("id"));
                            return Json.object();
                        }),
                QmpCommand.sync("query-block-exports", NO_ARGS, main, a -> blockExports(d)),
                QmpCommand.async("block_resize", BLOCK_RESIZE, main, a -> blockResize(d, a)),
                QmpCommand.sync("query-blockstats", struct(optional("query-nodes", BOOL)), main, a -> blockStats(d)),

                QmpCommand.sync("object-add", OBJECT_OPTIONS, main, a -> {
                    if ("throttle-group".equals(a.get("qom-type"))) {
                        Map<String, String> tg = throttleGroupOptions(a);
                        shared(() -> d.addThrottleGroup(tg));
                    } else {
                        shared(() -> d.addIothread(Options.objectSpec(keyValue(a))));
                    }
                    return Json.object();
                }),
                QmpCommand.async("object-del", struct(required("id", STR)), main,
                        a -> d.deleteObject(a.get("id")).thenApply(v -> (JsonNode) Json.object())),
                QmpCommand.sync("query-iothreads", NO_ARGS, main, a -> iothreads(d)),
                QmpCommand.sync("qom-set", QOM_SET, main, a -> {
                    qomSet(d, a);
                    return Json.object();
                }),
                QmpCommand.sync("qom-get", QOM_GET, main, a -> qomGet(d, a)),

                QmpCommand.sync("blockdev-mirror", BLOCKDEV_MIRROR, main, a -> {
                    mirror(d, a);
                    return Json.object();
                }),
                QmpCommand.sync("query-jobs", NO_ARGS, main, a -> d.jobs().queryJobs()),
                QmpCommand.sync("query-block-jobs", NO_ARGS, main, a -> d.jobs().queryBlockJobs()),
                QmpCommand.sync("job-pause", JOB_ID, main, a -> {
                    d.jobs().pause(a.get("id"));
                    return Json.object();
                }),
                QmpCommand.sync("job-resume", JOB_ID, main, a -> {
                    d.jobs().resume(a.get("id"));
                    return Json.object();
                }),
                QmpCommand.sync("job-cancel", JOB_ID, main, a -> {
                    d.jobs().cancel(a.get("id"));
                    return Json.object();
                }),
                QmpCommand.sync("job-complete", JOB_ID, main, a -> {
                    d.jobs().complete(a.get("id"));
                    return Json.object();
                }),
                QmpCommand.sync("job-dismiss", JOB_ID, main, a -> {
                    d.jobs().dismiss(a.get("id"));
                    return Json.object();
                }));
    }

    /**
     * object-add throttle-group: the id and the limits, flat as the command line has them ({@code limits.iops-total},
     * {@code x-iops-total}), for the block layer, which applies QEMU's validity rules. Negative values are
     * refused here with QEMU's words (the block layer reads only digits).
     */
    private static Map<String, String> throttleGroupOptions(Map<String, String> a) throws QmpException {
        Map<String, String> o = new LinkedHashMap<>(a);
        o.remove("qom-type");
        String id = o.get("id");
        try {
            Options.checkId("--object", id);
        } catch (UsageException e) {
            throw new QmpException(e.detail());
        }
        for (Map.Entry<String, String> e : o.entrySet()) {
            if (e.getKey().equals("id") || !e.getValue().startsWith("-")) continue;
            throw new QmpException(e.getKey().startsWith("x-") ? "Property values cannot be negative"
                    : "bps/iops/max values must be within [0, 1000000000000000]");
        }
        return o;
    }

    /**
     * The throttle group that a QOM path names: its id ({@code tg0}, a partial path QEMU resolves uniquely here) or
     * {@code /objects/tg0}. Other objects (iothreads) have no properties that jvhost exposes. QEMU's words:
     * DeviceNotFound for a path that names nothing.
     */
    private static ThrottleGroup qomThrottleGroup(Daemon d, String path, String property) throws QmpException {
        String id = path.startsWith("/objects/") ? path.substring("/objects/".length()) : path;
        ThrottleGroup g = id.isEmpty() || id.contains("/") ? null : d.nodes().throttleGroup(id);
        if (g != null) return g;
        for (Daemon.Iothread t : d.iothreadList()) {
            if (t.spec().id().equals(id)) throw new QmpException("Property 'iothread." + property + "' not found");
        }
        throw new QmpException("DeviceNotFound", "Device '" + path + "' not found");
    }

    /** A throttle-group property: {@code limits} or one of its members as {@code x-<member>}; null if neither. */
    private static String limitOf(String property) {
        if (property.startsWith("x-") && ThrottleConfig.LIMIT_NAMES.contains(property.substring(2))) return property.substring(2);
        return null;
    }

    /**
     * qom-get of a throttle group's {@code limits} (every ThrottleLimits member, as QEMU's throttle_config_to_limits
     * fills it) or of one {@code x-} property (an integer).
     */
    private static JsonNode qomGet(Daemon d, Map<String, String> a) throws QmpException {
        String property = a.get("property");
        ThrottleGroup g = qomThrottleGroup(d, a.get("path"), property);
        Map<String, Long> limits = g.config().toLimits();
        if (property.equals("limits")) {
            ObjectNode o = Json.object();
            limits.forEach(o::put);
            return o;
        }
        String member = limitOf(property);
        if (member == null) throw new QmpException("Property 'throttle-group." + property + "' not found");
        return Json.NODES.numberNode(limits.get(member));
    }

    /**
     * qom-set of a throttle group's {@code limits} (QEMU's throttle_group_set_limits): the members given change,
     * the others stay, the result is checked as a whole and applies to queued requests at once. The single
     * {@code x-} properties are refused as QEMU refuses them once the object exists (limits change in one
     * transaction, since some combinations are only valid together).
     */
    private static void qomSet(Daemon d, Map<String, String> a) throws QmpException {
        String property = a.get("property");
        ThrottleGroup g = qomThrottleGroup(d, a.get("path"), property);
        if (limitOf(property) != null) throw new QmpException("Property cannot be set after initialization");
        if (!property.equals("limits")) throw new QmpException("Property 'throttle-group." + property + "' not found");
        JsonNode value;
        try {
            byte[] text = a.get("value").getBytes(java.nio.charset.StandardCharsets.UTF_8);
            value = Json.parse(text, 0, text.length);
        } catch (java.io.IOException e) {
            throw new IllegalStateException("re-parsing a value the monitor parsed", e);
        }
        Map<String, Long> changes = new LinkedHashMap<>();
        for (Map.Entry<String, String> e : Qapi.flatten(THROTTLE_LIMITS, "limits", value).entrySet()) {
            changes.put(e.getKey(), Long.parseLong(e.getValue()));
        }
        try {
            g.updateLimits(changes);
        } catch (BlockException e) {
            throw new QmpException(e.getMessage());
        }
    }

    /** MirrorJob's bound on its copy buffers (parallel copies x granularity). */
    private static final long MAX_BUF_SIZE = 256L << 20;

    /**
     * blockdev-mirror: refuses what jvhost's mirror does not do, with the option's name, then hands over to
     * {@link Daemon#startMirror}. QEMU's defaults: sync only 'full' here, errors 'report', copy-mode 'background',
     * auto-finalize and auto-dismiss on. buf-size (bytes of copies in flight) becomes the number of parallel copies.
     */
    private static void mirror(Daemon d, Map<String, String> a) throws QmpException {
        String device = a.get("device"), target = a.get("target");
        String sync = a.get("sync");
        if (!sync.equals("full")) throw new QmpException("Sync mode '" + sync + "' is not supported (only 'full')");
        long speed = Long.parseLong(a.getOrDefault("speed", "0"));
        if (speed < 0) throw new QmpException("Invalid parameter 'speed'");
        if (speed != 0) throw new QmpException("speed limits are not supported (only 0, unlimited)");
        for (String k : new String[] {"on-source-error", "on-target-error"}) {
            String v = a.getOrDefault(k, "report");
            if (!v.equals("report")) throw new QmpException(k + " '" + v + "' is not supported (only 'report')");
        }
        String mode = a.getOrDefault("copy-mode", "background");
        if (!mode.equals("background")) throw new QmpException("copy-mode '" + mode + "' is not supported (only 'background')");
        if (!isOn(a.getOrDefault("auto-finalize", "on"))) {
            throw new QmpException("auto-finalize=false is not supported (jobs always finalize on their own)");
        }
        if (a.containsKey("filter-node-name")) {
            throw new QmpException("filter-node-name is not supported (jvhost's mirror inserts no filter node)");
        }
        String replaces = a.get("replaces");
        if (replaces != null && !replaces.equals(device)) {
            throw new QmpException("replaces is not supported (the mirror replaces its source, '" + device + "')");
        }
        long granularity = Long.parseLong(a.getOrDefault("granularity", "0"));
        if (granularity == 0) granularity = MirrorJob.DEFAULT_GRANULARITY;
        if (granularity < 512 || granularity > (64L << 20)) {
            throw new QmpException("Parameter 'granularity' expects a value in range [512B, 64MB]");
        }
        if (Long.bitCount(granularity) != 1) throw new QmpException("Parameter 'granularity' expects a power of 2");
        long bufSize = Long.parseLong(a.getOrDefault("buf-size", "0"));
        if (bufSize < 0) throw new QmpException("Invalid parameter 'buf-size'");
        if (bufSize > MAX_BUF_SIZE) throw new QmpException("Parameter 'buf-size' expects a value in range [0, 256MB]");
        long ops = bufSize == 0 ? Math.min(MirrorJob.DEFAULT_MAX_OPS, MAX_BUF_SIZE / granularity)
                : (bufSize + granularity - 1) / granularity;
        int maxOps = (int) Math.max(1, Math.min(256, ops));
        d.startMirror(a.get("job-id"), device, target, granularity, maxOps, isOn(a.getOrDefault("auto-dismiss", "on")));
    }

    private static Map<String, Qapi.Struct> branches(Object... nameThenStruct) {
        Map<String, Qapi.Struct> m = new LinkedHashMap<>();
        for (int i = 0; i < nameThenStruct.length; i += 2) m.put((String) nameThenStruct[i], (Qapi.Struct) nameThenStruct[i + 1]);
        return m;
    }

    private interface SharedStep {
        void run() throws UsageException, KeyValueException;
    }

    /** The command-line checks answer in QMP terms: the message without the option name. */
    private static void shared(SharedStep s) throws QmpException {
        try {
            s.run();
        } catch (UsageException e) {
            throw new QmpException(e.detail());
        } catch (KeyValueException e) {
            throw new QmpException(e.getMessage());
        }
    }

    /**
     * QEMU's qmp_block_resize: the node by bdrv_lookup_bs (device names a backend; this daemon's backends are the
     * exports' and have no name, as in qemu-storage-daemon, so only node-name can match), a negative size is
     * refused, then the node is truncated on a management thread and the reply comes when it is done.
     */
    private static CompletableFuture<JsonNode> blockResize(Daemon d, Map<String, String> a) throws QmpException {
        String device = a.get("device"), nodeName = a.get("node-name");
        BlockDriverState bs = nodeName == null ? null : d.nodes().get(nodeName);
        if (bs == null) {
            throw new QmpException("Cannot find device='" + (device == null ? "" : device) + "' nor node-name='"
                    + (nodeName == null ? "" : nodeName) + "'");
        }
        long size = Long.parseLong(a.get("size"));
        if (size < 0) throw new QmpException("Parameter 'size' expects a >0 size");
        return CompletableFuture.supplyAsync(() -> {
            try {
                bs.truncate(size);
            } catch (io.jvhost.block.BlockException e) {
                throw new CompletionException(new QmpException(e.getMessage()));
            }
            return Json.object();
        }, RESIZE);
    }

    private static KeyValue keyValue(Map<String, String> flat) throws KeyValueException {
        return KeyValue.of(flat);
    }

    /** BlockDeviceInfo, as far as it applies to our nodes (no backing files, no throttling yet). */
    private static ArrayNode namedBlockNodes(Daemon d) {
        ArrayNode out = Json.array();
        for (BlockDriverState bs : d.nodes().all()) {
            Map<String, String> opts = d.nodeOptions(bs.nodeName());
            String drv = bs.driverName();
            String file = "file".equals(drv) ? opts.getOrDefault("filename", "") : drv + "://";
            ObjectNode n = out.addObject();
            n.put("file", file);
            n.put("node-name", bs.nodeName());
            n.put("ro", bs.isReadOnly());
            n.put("drv", drv);
            n.put("backing_file_depth", 0);
            n.put("encrypted", false);
            n.put("detect_zeroes", "off");
            for (String k : new String[] {"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"}) n.put(k, 0);
            ObjectNode image = n.putObject("image");
            image.put("filename", file);
            image.put("format", drv);
            image.put("virtual-size", bs.getLength());
            ObjectNode cache = n.putObject("cache");
            cache.put("writeback", true);
            cache.put("direct", isOn(opts.get("cache.direct")));
            cache.put("no-flush", false);
            n.put("write_threshold", 0);
        }
        return out;
    }

    private static boolean isOn(String v) {
        return v != null && (v.equals("on") || v.equals("yes") || v.equals("true") || v.equals("y"));
    }

    private static ArrayNode blockExports(Daemon d) {
        ArrayNode out = Json.array();
        for (Daemon.ExportEntry e : d.exportList()) {
            ObjectNode x = out.addObject();
            x.put("type", "vhost-user-blk");
            x.put("id", e.spec.id());
            x.put("node-name", e.nodeName());
            x.put("shutting-down", e.shuttingDown);
        }
        return out;
    }

    /**
     * query-blockstats: one BlockStats per export ("device" = export id), QEMU's BlockDeviceStats summed over the
     * export's virtqueues (write-zeroes accounted as writes, discard as unmap, as QEMU's virtio-blk does), and
     * our extension "x-queues" with the same counters per virtqueue. Counters live across front-end sessions.
     */
    private static ArrayNode blockStats(Daemon d) {
        ArrayNode out = Json.array();
        for (Daemon.ExportEntry e : d.exportList()) {
            ObjectNode x = out.addObject();
            x.put("device", e.spec.id());
            x.put("node-name", e.nodeName());
            x.put("qdev", "");
            List<io.jvhost.vhostuser.QueueStats> qs = e.export.queueStats();
            deviceStats(x.putObject("stats"), qs);
            ArrayNode per = x.putArray("x-queues");
            for (io.jvhost.vhostuser.QueueStats q : qs) deviceStats(per.addObject(), List.of(q));
        }
        return out;
    }

    private static void deviceStats(ObjectNode s, List<io.jvhost.vhostuser.QueueStats> qs) {
        long[] v = new long[16];
        for (io.jvhost.vhostuser.QueueStats q : qs) {
            int i = 0;
            for (io.jvhost.vhostuser.QueueStats.Kind[] kinds : STAT_KINDS) {
                for (io.jvhost.vhostuser.QueueStats.Kind k : kinds) {
                    v[i] += q.bytes(k);
                    v[i + 1] += q.operations(k);
                    v[i + 2] += q.totalTimeNs(k);
                    v[i + 3] += q.failed(k);
                }
                i += 4;
            }
        }
        String[] names = {"rd", "wr", "flush", "unmap"};
        for (int n = 0; n < names.length; n++) {
            if (n != 2) s.put(names[n] + "_bytes", v[n * 4]);
            s.put(names[n] + "_operations", v[n * 4 + 1]);
            s.put(names[n] + "_total_time_ns", v[n * 4 + 2]);
            s.put("failed_" + names[n] + "_operations", v[n * 4 + 3]);
        }
        s.put("rd_merged", 0);
        s.put("wr_merged", 0);
        s.put("account_invalid", false);
        s.put("account_failed", true);
        s.putArray("timed_stats");
    }

    private static final io.jvhost.vhostuser.QueueStats.Kind[][] STAT_KINDS = {
            {io.jvhost.vhostuser.QueueStats.Kind.READ},
            {io.jvhost.vhostuser.QueueStats.Kind.WRITE, io.jvhost.vhostuser.QueueStats.Kind.WRITE_ZEROES},
            {io.jvhost.vhostuser.QueueStats.Kind.FLUSH},
            {io.jvhost.vhostuser.QueueStats.Kind.DISCARD}};

    private static ArrayNode iothreads(Daemon d) {
        ArrayNode out = Json.array();
        for (Daemon.Iothread t : d.iothreadList()) {
            ObjectNode x = out.addObject();
            x.put("id", t.spec().id());
            x.put("thread-id", t.threadId());
            x.put("poll-max-ns", t.spec().pollMaxNs());
            x.put("poll-grow", t.spec().pollGrow());
            x.put("poll-shrink", t.spec().pollShrink());
            x.put("aio-max-batch", t.spec().aioMaxBatch());
        }
        return out;
    }
}
