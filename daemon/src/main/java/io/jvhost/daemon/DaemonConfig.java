package io.jvhost.daemon;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * A parsed and cross-checked command line (see {@link Options#parse}). Everything here has been validated except
 * what only the block layer knows (driver-specific --blockdev options) and what only the system knows (files,
 * sockets, inherited fds).
 */
public record DaemonConfig(
        Action action,
        List<Map<String, String>> blockdevs,    // in command-line order, flat dotted keys, "driver" included
        List<IothreadSpec> iothreads,
        List<Map<String, String>> throttleGroups, // --object throttle-group, flat keys incl. "id" (block layer checks limits)
        List<ExportSpec> exports,
        List<MonitorSpec> monitors,              // QMP monitors (--chardev + --monitor)
        Path pidfile,                            // null: none
        DemoSpec demo) {                         // null: not --demo

    public DaemonConfig {
        blockdevs = List.copyOf(blockdevs);
        iothreads = List.copyOf(iothreads);
        throttleGroups = List.copyOf(throttleGroups);
        exports = List.copyOf(exports);
        monitors = List.copyOf(monitors);
    }

    public enum Action { RUN, HELP, VERSION }

    static DaemonConfig of(Action action) {
        return new DaemonConfig(action, List.of(), List.of(), List.of(), List.of(), List.of(), null, null);
    }

    /**
     * {@code --object iothread,id=ID[,poll-max-ns=N]...} or QMP object-add: adaptive polling as in QEMU
     * (poll-max-ns defaults to QEMU's 32768; 0 turns polling off); aio-max-batch is accepted and reported only.
     */
    public record IothreadSpec(String id, long pollMaxNs, long pollGrow, long pollShrink, long aioMaxBatch) {
        /** QEMU's default poll-max-ns for iothreads. */
        public static final long DEFAULT_POLL_MAX_NS = 32_768;

        public IothreadSpec(String id) {
            this(id, DEFAULT_POLL_MAX_NS, 0, 0, 0);
        }
    }

    /** {@code --chardev socket,id=C,path=P,server=on,wait=off --monitor chardev=C}: a QMP monitor socket. */
    public record MonitorSpec(String chardev, String socketPath) {}

    /** {@code --export type=vhost-user-blk,...}. */
    public record ExportSpec(
            String id,
            String nodeName,
            String socketPath,          // null when listenFd >= 0
            int listenFd,               // -1 unless addr.type=fd
            int numQueues,
            int logicalBlockSize,
            boolean writable,
            String serial,              // null: the device's default
            List<String> iothreads) {   // empty: each queue gets its own new iothread

        public ExportSpec {
            iothreads = List.copyOf(iothreads);
        }

        /** The --object iothread serving queue {@code q}, or null when the queue gets its own iothread. */
        public String iothreadOf(int q) {
            return iothreads.isEmpty() ? null : iothreads.get(q % iothreads.size());
        }

        /** Name of the iothread created for queue {@code q} when no iothread option was given. */
        public String ownIothreadName(int q) {
            return id + "-vq" + q;
        }

        /** Where the export listens, for messages. */
        public String address() {
            return socketPath != null ? socketPath : "fd " + listenFd;
        }
    }

    /** {@code --demo [DIR]}: the image to create if absent and where the demo export listens. */
    public record DemoSpec(Path image, long imageSize, String socketPath, int numQueues) {}
}
