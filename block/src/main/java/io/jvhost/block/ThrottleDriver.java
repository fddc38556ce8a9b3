package io.jvhost.block;

/**
 * QEMU's {@code throttle} filter ({@code driver=throttle,throttle-group=G,file=child}): passes every request to
 * its child once the group's budget allows it. Flushes are not throttled. Reads count against the read and total
 * buckets; writes, discards and write-zeroes against the write and total buckets.
 */
final class ThrottleDriver implements BlockDriver, BlockRequest.Continuation {
    private final ThrottleGroup group;
    private volatile long length;
    private BdrvChild file;
    /** Drain phase 1 depth for this node (guarded by the group's lock). */
    int noThrottle;

    ThrottleDriver(ThrottleGroup group, long length) {
        this.group = group;
        this.length = length;
    }

    void setFile(BdrvChild file) {
        this.file = file;
    }

    ThrottleGroup group() {
        return group;
    }

    @Override
    public String name() {
        return "throttle";
    }

    @Override
    public long getLength() {
        return length;
    }

    @Override
    public void truncate(long newLength) throws BlockException {
        file.bs().truncateDrained(newLength);
        length = newLength;
    }

    @Override
    public boolean childResized(long childLength) {
        length = childLength;
        return true;
    }

    @Override
    public void read(long offset, IoVec iov, BlockRequest r) {
        if (group.intercept(this, r, false, r.bytes)) file.forward(r, 0);
    }

    @Override
    public void write(long offset, IoVec iov, int flags, BlockRequest r) {
        if (group.intercept(this, r, true, r.bytes)) file.forward(r, 0);
    }

    @Override
    public void flush(BlockRequest r) {
        file.forward(r, 0);
    }

    @Override
    public void discard(long offset, long bytes, BlockRequest r) {
        if (group.intercept(this, r, true, bytes)) file.forward(r, 0);
    }

    @Override
    public void writeZeroes(long offset, long bytes, int flags, BlockRequest r) {
        if (group.intercept(this, r, true, bytes)) file.forward(r, 0);
    }

    /** A queued request was released (in its own context). */
    @Override
    public void proceed(BlockRequest r) {
        file.forward(r, 0);
    }

    @Override
    public void noThrottleBegin() {
        group.disable(this);
    }

    @Override
    public void noThrottleEnd() {
        group.enable(this);
    }

    @Override
    public void close() {}

    @Override
    public String toString() {
        return "throttle(" + group.id() + ")";
    }
}
