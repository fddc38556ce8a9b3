package io.jvhost.virtqueue;

/**
 * Told of every write {@link SplitRing} makes to its used ring (flags, elements, idx, avail_event), right after the
 * write, with the offset from the start of the used ring: what live migration's dirty log needs when the ring was
 * set up with VHOST_VRING_F_LOG (the write at offset {@code off} is logged at {@code log_guest_addr + off}).
 * Called on the ring's thread; must not allocate or block.
 */
@FunctionalInterface
public interface UsedRingWriteLog {
    void usedWritten(long off, int len);
}
