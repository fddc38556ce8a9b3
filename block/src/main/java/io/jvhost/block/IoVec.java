package io.jvhost.block;

import java.nio.ByteBuffer;
import java.util.Objects;

/**
 * A reusable scatter/gather list of views into (guest) memory. Each segment is its buffer's
 * {@code [position, limit)} as it was when {@link #add} was called; the block layer uses exactly that range, and
 * restores each buffer's position and limit to those values before the request completes.
 *
 * <p>FileChannel's positional calls work on a buffer's position, so while a request is in flight the block layer
 * moves it. Hence: do not touch the IoVec or its buffers until the completion, and never put one ByteBuffer
 * object into two requests that can be in flight together (add a {@code slice()} of a shared guest-memory
 * window, not the window itself).
 */
public final class IoVec {
    private final ByteBuffer[] segs;
    private final int[] pos;
    private final int[] lim;
    private int count;
    private long size;

    /** @param capacity the maximum number of segments */
    public IoVec(int capacity) {
        if (capacity < 0) throw new IllegalArgumentException("capacity " + capacity);
        segs = new ByteBuffer[capacity];
        pos = new int[capacity];
        lim = new int[capacity];
    }

    /** Empties the list and drops the buffer references (so mappings can go away). */
    public void clear() {
        for (int i = 0; i < count; i++) segs[i] = null;
        count = 0;
        size = 0;
    }

    /** Appends {@code seg}'s {@code [position, limit)}; keeps the reference. */
    public void add(ByteBuffer seg) {
        Objects.requireNonNull(seg, "seg");
        if (count == segs.length) {
            throw new IllegalStateException("IoVec full (" + segs.length + " segments)");
        }
        segs[count] = seg;
        pos[count] = seg.position();
        lim[count] = seg.limit();
        size += lim[count] - pos[count];
        count++;
    }

    public int count() {
        return count;
    }

    public ByteBuffer get(int i) {
        Objects.checkIndex(i, count);
        return segs[i];
    }

    /** Total bytes of all segments. */
    public long size() {
        return size;
    }

    public int capacity() {
        return segs.length;
    }

    /** The recorded start of segment i inside its buffer. */
    int start(int i) {
        return pos[i];
    }

    /** The recorded length of segment i. */
    int length(int i) {
        return lim[i] - pos[i];
    }

    /** Segment i's buffer, with position and limit set to the recorded range (for relative FileChannel I/O). */
    ByteBuffer prepare(int i) {
        ByteBuffer b = segs[i];
        // limit first: a position beyond the old limit would otherwise throw.
        b.limit(lim[i]);
        b.position(pos[i]);
        return b;
    }

    /** Puts segment i's buffer back the way the caller handed it in. */
    void restore(int i) {
        prepare(i);
    }

    /** True if some segment's buffer is read-only (cannot be the target of a read). */
    boolean hasReadOnlySegment() {
        for (int i = 0; i < count; i++) {
            if (segs[i].isReadOnly()) return true;
        }
        return false;
    }
}
