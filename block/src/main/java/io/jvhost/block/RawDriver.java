package io.jvhost.block;

/**
 * QEMU's {@code raw} format driver ({@code driver=raw,file=child[,offset=N][,size=N]}): a window of its child,
 * passed through without copying.
 */
final class RawDriver implements BlockDriver {
    private final long offset;
    /** offset or size given: a fixed window of the child that neither resizes nor follows it. */
    private final boolean fixedWindow;
    private volatile long length;
    private BdrvChild file;

    RawDriver(long offset, long length, boolean fixedWindow) {
        this.offset = offset;
        this.length = length;
        this.fixedWindow = fixedWindow;
    }

    void setFile(BdrvChild file) {
        this.file = file;
    }

    @Override
    public String name() {
        return "raw";
    }

    @Override
    public long getLength() {
        return length;
    }

    @Override
    public void truncate(long newLength) throws BlockException {
        if (fixedWindow) throw new BlockException("Cannot resize a raw node with size/offset");
        file.bs().truncateDrained(newLength);
        length = newLength;
    }

    @Override
    public boolean childResized(long childLength) {
        if (fixedWindow) return false;
        length = childLength;
        return true;
    }

    @Override
    public void read(long off, IoVec iov, BlockRequest r) {
        file.forward(r, offset);
    }

    @Override
    public void write(long off, IoVec iov, int flags, BlockRequest r) {
        file.forward(r, offset);
    }

    @Override
    public void flush(BlockRequest r) {
        file.forward(r, 0);
    }

    @Override
    public void discard(long off, long bytes, BlockRequest r) {
        file.forward(r, offset);
    }

    @Override
    public void writeZeroes(long off, long bytes, int flags, BlockRequest r) {
        file.forward(r, offset);
    }

    @Override
    public void close() {}

    @Override
    public String toString() {
        return "raw(offset " + offset + ", size " + length + ")";
    }
}
