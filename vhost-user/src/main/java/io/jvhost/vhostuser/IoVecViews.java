package io.jvhost.vhostuser;

import io.jvhost.block.IoVec;
import io.jvhost.virtqueue.GuestMemory;

import java.nio.ByteBuffer;
import java.util.Arrays;

/**
 * Fills a request's {@link IoVec} with views of guest memory, reusing them: segment slot i keeps its own
 * duplicates of the last few guest-memory windows it pointed into, and a new segment only moves one's position
 * and limit. A slice per segment (what {@code GuestMemory.slices} with a Consumer makes) was the largest per-request
 * allocation. The IoVec contract holds: the views belong to this request only, one object per segment.
 *
 * <p>A window is 1 GiB of one memory region, so up to {@link #WAYS} GiB of guest RAM per slot are served without
 * allocating; beyond that a miss costs one {@code duplicate()}. Stale windows (after a memory-table change) are
 * only ever compared by identity, never accessed, and are replaced in turn.
 */
final class IoVecViews implements GuestMemory.WindowSink {
    static final int WAYS = 8;

    private final IoVec iov;
    // Per segment slot; grown on demand (most requests use a few slots of an IoVec sized for the longest chain).
    private ByteBuffer[][] windows = new ByteBuffer[4][];
    private ByteBuffer[][] views = new ByteBuffer[4][];
    private int[] nextWay = new int[4];

    IoVecViews(IoVec iov) {
        this.iov = iov;
    }

    @Override
    public void accept(ByteBuffer window, int index, int length) {
        int slot = iov.count();
        if (slot >= iov.capacity()) {
            iov.add(window.slice(index, length)); // the IoVec is full: let it refuse the segment
            return;
        }
        if (slot >= windows.length) {
            int n = Math.min(iov.capacity(), Math.max(slot + 1, windows.length * 2));
            windows = Arrays.copyOf(windows, n);
            views = Arrays.copyOf(views, n);
            nextWay = Arrays.copyOf(nextWay, n);
        }
        ByteBuffer[] w = windows[slot];
        if (w == null) {
            w = windows[slot] = new ByteBuffer[WAYS];
            views[slot] = new ByteBuffer[WAYS];
        }
        ByteBuffer v = null;
        for (int k = 0; k < WAYS; k++) {
            if (w[k] == window) {
                v = views[slot][k];
                break;
            }
        }
        if (v == null) {
            int k = nextWay[slot];
            nextWay[slot] = (k + 1) % WAYS;
            w[k] = window;
            v = views[slot][k] = window.duplicate();
        }
        v.clear(); // limit = capacity first, so any position is valid
        v.position(index);
        v.limit(index + length);
        iov.add(v);
    }
}
