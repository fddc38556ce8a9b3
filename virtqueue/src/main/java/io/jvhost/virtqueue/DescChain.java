package io.jvhost.virtqueue;

/**
 * A validated descriptor chain, filled by {@link SplitRing#pop}. Reusable and preallocated for up to
 * {@link #capacity()} segments, so popping allocates nothing. Segments 0..readableCount-1 are device-readable,
 * the rest device-writable; every segment has 0 &lt; len ≤ Integer.MAX_VALUE and a fully mapped guest range.
 * Not thread-safe.
 */
public final class DescChain {
    private final long[] addr;
    private final int[] len;
    private int head = -1;
    private int count;
    private int readableCount;
    private long readableBytes;
    private long writableBytes;

    public DescChain(int maxSegs) {
        if (maxSegs < 1) throw new IllegalArgumentException("maxSegs must be >= 1: " + maxSegs);
        addr = new long[maxSegs];
        len = new int[maxSegs];
    }

    public int capacity() {
        return addr.length;
    }

    /** Head descriptor index (what goes into the used ring). -1 before the first pop. */
    public int head() {
        return head;
    }

    public int count() {
        return count;
    }

    public long addr(int i) {
        check(i);
        return addr[i];
    }

    public int len(int i) {
        check(i);
        return len[i];
    }

    public boolean writable(int i) {
        check(i);
        return i >= readableCount;
    }

    public int readableCount() {
        return readableCount;
    }

    public int writableCount() {
        return count - readableCount;
    }

    public long readableBytes() {
        return readableBytes;
    }

    public long writableBytes() {
        return writableBytes;
    }

    void reset(int newHead) {
        head = newHead;
        count = 0;
        readableCount = 0;
        readableBytes = 0;
        writableBytes = 0;
    }

    void add(long a, int l, boolean w) throws RingException {
        if (!w && count > readableCount) {
            throw new RingException("head " + head + ": device-readable descriptor after a device-writable one");
        }
        if (count == addr.length) {
            throw new RingException("head " + head + ": chain has more than " + addr.length + " segments");
        }
        addr[count] = a;
        len[count] = l;
        count++;
        if (w) {
            writableBytes += l;
        } else {
            readableCount++;
            readableBytes += l;
        }
    }

    private void check(int i) {
        if (i < 0 || i >= count) throw new IndexOutOfBoundsException("segment " + i + " of " + count);
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("DescChain[head=").append(head);
        for (int i = 0; i < count; i++) {
            sb.append(i < readableCount ? " R" : " W").append(":0x").append(Long.toHexString(addr[i])).append('+').append(len[i]);
        }
        return sb.append(']').toString();
    }
}
