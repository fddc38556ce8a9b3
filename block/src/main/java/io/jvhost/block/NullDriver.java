package io.jvhost.block;

import java.nio.ByteBuffer;

/**
 * QEMU's null-co: a disk of a given size that discards writes. Reads leave the buffers untouched unless
 * read-zeroes=on; latency-ns delays every completion (a timer, not a sleeping thread).
 */
final class NullDriver implements BlockDriver {
    private volatile long length;
    private final boolean readZeroes;
    private final long latencyNs;

    NullDriver(long length, boolean readZeroes, long latencyNs) {
        this.length = length;
        this.readZeroes = readZeroes;
        this.latencyNs = latencyNs;
    }

    @Override
    public String name() {
        return "null-co";
    }

    @Override
    public long getLength() {
        return length;
    }

    @Override
    public void truncate(long newLength) {
        length = newLength; // nothing is stored: any size works
    }

    @Override
    public void read(long offset, IoVec iov, BlockRequest r) {
        if (readZeroes) {
            for (int i = 0; i < iov.count(); i++) {
                ByteBuffer b = iov.prepare(i);
                Buffers.zero(b, iov.start(i), iov.length(i));
            }
        }
        complete(r);
    }

    @Override
    public void write(long offset, IoVec iov, int flags, BlockRequest r) {
        complete(r);
    }

    @Override
    public void flush(BlockRequest r) {
        complete(r);
    }

    @Override
    public void discard(long offset, long bytes, BlockRequest r) {
        complete(r);
    }

    @Override
    public void writeZeroes(long offset, long bytes, int flags, BlockRequest r) {
        complete(r);
    }

    private void complete(BlockRequest r) {
        if (latencyNs > 0) {
            r.doneAfter(0, latencyNs);
        } else {
            r.done(0);
        }
    }

    @Override
    public void close() {}
}
