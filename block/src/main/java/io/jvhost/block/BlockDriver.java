package io.jvhost.block;

/**
 * A format or protocol driver behind a node (QEMU's BlockDriver). Requests arrive already validated by
 * {@link BlockDriverState} (in range, node writable); the driver completes each exactly once with
 * {@link BlockRequest#done} (from any thread, even synchronously) or {@link BlockRequest#runInWorker}, must not
 * throw after that, and must not touch the request afterwards.
 */
interface BlockDriver {
    String name();

    /** Bytes, fixed at open. */
    long getLength();

    void read(long offset, IoVec iov, BlockRequest r);

    /** @param flags {@link BlockBackend#FUA} */
    void write(long offset, IoVec iov, int flags, BlockRequest r);

    void flush(BlockRequest r);

    void discard(long offset, long bytes, BlockRequest r);

    /** @param flags {@link BlockBackend#FUA}, {@link BlockBackend#MAY_UNMAP} */
    void writeZeroes(long offset, long bytes, int flags, BlockRequest r);

    /** Batch submission hints (linux-aio/io_uring engines later); no-ops for the thread-pool engine. */
    default void plug() {}

    default void unplug() {}

    /** Releases the driver's resources; called once, after the node drained. */
    void close();
}
