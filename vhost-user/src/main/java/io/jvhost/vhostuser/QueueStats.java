package io.jvhost.vhostuser;

import java.util.concurrent.atomic.AtomicLongArray;

/**
 * I/O statistics of one virtqueue of an export (what QMP query-blockstats reports), kept across front-end
 * connections. Written only by the queue's iothread (single writer: lazySet, no locked instruction per request),
 * read by management threads at any time.
 */
public final class QueueStats {
    /** Request kinds, QEMU's BlockAcctType order where they exist. */
    public enum Kind { READ, WRITE, FLUSH, DISCARD, WRITE_ZEROES }

    private static final int OPS = 0, BYTES = 1, TIME_NS = 2, FAILED = 3, FIELDS = 4;
    private final AtomicLongArray c = new AtomicLongArray(Kind.values().length * FIELDS);

    void account(Kind k, long bytes, long ns, boolean ok) {
        int b = k.ordinal() * FIELDS;
        add(b + OPS, 1);
        add(b + BYTES, bytes);
        add(b + TIME_NS, ns);
        if (!ok) add(b + FAILED, 1);
    }

    private void add(int i, long v) {
        c.lazySet(i, c.get(i) + v);
    }

    public long operations(Kind k) {
        return c.get(k.ordinal() * FIELDS + OPS);
    }

    public long bytes(Kind k) {
        return c.get(k.ordinal() * FIELDS + BYTES);
    }

    /** Sum of the latencies (submission to completion, as seen by the queue) of the requests of this kind. */
    public long totalTimeNs(Kind k) {
        return c.get(k.ordinal() * FIELDS + TIME_NS);
    }

    public long failed(Kind k) {
        return c.get(k.ordinal() * FIELDS + FAILED);
    }
}
