package io.jvhost.vhostuser;

/**
 * What one vhost-user-blk export serves, as given by {@code --export type=vhost-user-blk,...}.
 *
 * @param socketPath unix socket path to listen on, or null when {@code listenFd >= 0}
 * @param listenFd an inherited, already listening socket ({@code addr.type=fd}), or -1
 * @param serial GET_ID answer (at most 20 bytes are sent); null means "jvhost"
 * @param writethrough start every front-end session with the write cache off (QEMU's export option of that name);
 *     the driver may still turn it on through the config space's writeback field
 */
public record BlkExportConfig(String id, String socketPath, int listenFd, int numQueues, int logicalBlockSize,
                              boolean writable, String serial, boolean writethrough) {
    /** As QEMU's default (writethrough=off): the device starts with its write cache on. */
    public BlkExportConfig(String id, String socketPath, int listenFd, int numQueues, int logicalBlockSize,
                           boolean writable, String serial) {
        this(id, socketPath, listenFd, numQueues, logicalBlockSize, writable, serial, false);
    }

    public BlkExportConfig {
        if (id == null || id.isEmpty()) throw new IllegalArgumentException("export id is required");
        if ((socketPath == null) == (listenFd < 0)) {
            throw new IllegalArgumentException("export " + id + ": exactly one of socket path and listening fd");
        }
        if (numQueues < 1 || numQueues > 256) {
            throw new IllegalArgumentException("export " + id + ": num-queues must be 1..256");
        }
        if (logicalBlockSize < 512 || logicalBlockSize > 65536 || Integer.bitCount(logicalBlockSize) != 1) {
            throw new IllegalArgumentException("export " + id + ": logical-block-size must be a power of two in 512..65536");
        }
        if (serial == null) serial = "jvhost";
    }
}
