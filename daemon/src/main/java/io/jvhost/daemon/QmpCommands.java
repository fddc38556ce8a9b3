package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.jvhost.block.BlockDriverState;
import io.jvhost.daemon.qmp.Json;
import io.jvhost.daemon.qmp.Qapi;
import io.jvhost.daemon.qmp.QmpCommand;
import io.jvhost.daemon.qmp.QmpException;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executor;

import static io.jvhost.daemon.qmp.Qapi.BOOL;
import static io.jvhost.daemon.qmp.Qapi.INT;
import static io.jvhost.daemon.qmp.Qapi.SIZE;
import static io.jvhost.daemon.qmp.Qapi.STR;
import static io.jvhost.daemon.qmp.Qapi.UINT16;
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
 * <p>Only what works is registered, so query-commands lists only that. Not here yet, for want of block-layer API:
 * blockdev-del (no node removal), block_resize, block-set-io-throttle and throttle groups, query-blockstats,
 * blockdev-mirror and the job commands.
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
                    "null-co", struct(optional("size", INT), optional("latency-ns", UINT64), optional("read-zeroes", BOOL))),
            d -> "driver '" + d + "' is not supported (only 'file' and 'null-co')");

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

    static final Qapi.Type OBJECT_OPTIONS = union(
            struct(required("qom-type", STR), required("id", STR)),
            "qom-type",
            branches("iothread", struct(optional("poll-max-ns", INT), optional("poll-grow", INT),
                    optional("poll-shrink", INT), optional("aio-max-batch", INT))),
            Options::unsupportedObjectType);

    private static final Qapi.Type NO_ARGS = struct();

    static List<QmpCommand> of(Daemon d) {
        Executor main = d.mainLoop();
        return List.of(
                QmpCommand.sync("quit", NO_ARGS, null, a -> Json.object()).withAfterReply(d::quit),

                QmpCommand.sync("blockdev-add", BLOCKDEV_OPTIONS, main, a -> {
                    shared(() -> d.addBlockdev(a));
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

                QmpCommand.sync("object-add", OBJECT_OPTIONS, main, a -> {
                    shared(() -> d.addIothread(Options.objectSpec(keyValue(a))));
                    return Json.object();
                }),
                QmpCommand.async("object-del", struct(required("id", STR)), main,
                        a -> d.deleteIothread(a.get("id")).thenApply(v -> (JsonNode) Json.object())),
                QmpCommand.sync("query-iothreads", NO_ARGS, main, a -> iothreads(d)));
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
            x.put("node-name", e.spec.nodeName());
            x.put("shutting-down", e.shuttingDown);
        }
        return out;
    }

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
