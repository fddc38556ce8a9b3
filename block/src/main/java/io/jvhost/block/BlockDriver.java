package io.jvhost.block;

/**
 * A format, protocol or filter driver behind a node (QEMU's BlockDriver). Requests arrive already validated by
 * {@link BlockDriverState} (in range, node writable); the driver completes each exactly once with
 * {@link BlockRequest#done} (from any thread, even synchronously), {@link BlockRequest#runInWorker}, or by
 * passing it to a child ({@link BdrvChild#forward}), must not throw after that, and must not touch the request
 * afterwards. A request may be held back (throttling, plugging) but then counts as in flight, and drain's
 * phase 1 and 2 hooks must release it without waiting for a timer or an unplug.
 */
interface BlockDriver {
    String name();

    /** Bytes; changes only through {@link #truncate} or {@link #childResized} (read by any thread: volatile). */
    long getLength();

    /**
     * Resizes to {@code newLength} bytes (already checked non-negative, node writable and subtree drained; a
     * management thread, graph lock not held). Default: the driver cannot resize.
     */
    default void truncate(long newLength) throws BlockException {
        throw new BlockException("Cannot resize a '" + name() + "' node");
    }

    /** The child behind the "file" edge now has {@code childLength} bytes: true if this driver's length followed. */
    default boolean childResized(long childLength) {
        return false;
    }

    void read(long offset, IoVec iov, BlockRequest r);

    /** @param flags {@link BlockBackend#FUA} */
    void write(long offset, IoVec iov, int flags, BlockRequest r);

    void flush(BlockRequest r);

    void discard(long offset, long bytes, BlockRequest r);

    /** @param flags {@link BlockBackend#FUA}, {@link BlockBackend#MAY_UNMAP} */
    void writeZeroes(long offset, long bytes, int flags, BlockRequest r);

    /**
     * A thread's plugged section ({@link Plug}) started batching submissions in this driver; {@link #unplug}
     * follows when that section ends and must hand the batch over. Only drivers that batch call
     * {@link Plug#enlist}; filters need nothing (the leaf enlists itself when the request reaches it).
     */
    default void plug() {}

    default void unplug() {}

    /** Drain phase 2 (counted): submit everything batched now, and stop batching until the matching end. */
    default void ioUnpluggedBegin() {}

    default void ioUnpluggedEnd() {}

    /** Drain phase 1 (counted): release every throttled request now, and let new ones pass until the end. */
    default void noThrottleBegin() {}

    default void noThrottleEnd() {}

    /** Releases the driver's resources; called once, after the node drained (child edges are already gone). */
    void close();
}
