package io.jvhost.block;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

class IoVecTest {
    @Test
    void segmentsAreThePositionToLimitRangeAtAddTime() {
        IoVec v = new IoVec(3);
        assertEquals(3, v.capacity());
        ByteBuffer a = ByteBuffer.allocate(100).position(10).limit(60);
        ByteBuffer b = ByteBuffer.allocateDirect(8);
        v.add(a);
        v.add(b);
        assertEquals(2, v.count());
        assertEquals(58, v.size());
        assertSame(a, v.get(0));
        assertSame(b, v.get(1));
        assertEquals(10, v.start(0));
        assertEquals(50, v.length(0));
        assertThrows(IndexOutOfBoundsException.class, () -> v.get(2));
        assertThrows(IndexOutOfBoundsException.class, () -> v.get(-1));
        // The caller moving the buffer afterwards does not change the segment.
        a.position(0).limit(100);
        assertSame(a, v.prepare(0));
        assertEquals(10, a.position());
        assertEquals(60, a.limit());
    }

    @Test
    void capacityIsEnforcedAndClearReuses() {
        IoVec v = new IoVec(2);
        v.add(ByteBuffer.allocate(1));
        v.add(ByteBuffer.allocate(2));
        assertThrows(IllegalStateException.class, () -> v.add(ByteBuffer.allocate(3)));
        assertThrows(NullPointerException.class, () -> v.add(null));
        assertEquals(3, v.size());
        v.clear();
        assertEquals(0, v.count());
        assertEquals(0, v.size());
        v.add(ByteBuffer.allocate(7));
        assertEquals(7, v.size());
        assertThrows(IllegalArgumentException.class, () -> new IoVec(-1));
    }

    @Test
    void copiesAcrossSegments() {
        IoVec v = new IoVec(3);
        ByteBuffer a = ByteBuffer.allocate(3), b = ByteBuffer.allocateDirect(16).position(4).limit(9), c = ByteBuffer.allocate(4);
        v.add(a);
        v.add(b);
        v.add(c);
        byte[] src = new byte[12];
        for (int i = 0; i < src.length; i++) src[i] = (byte) (i + 1);
        Buffers.copyToIov(v, 0, ByteBuffer.wrap(src), 0, 12);
        assertArrayEquals(new byte[] {1, 2, 3}, a.array());
        for (int i = 0; i < 5; i++) assertEquals(4 + i, b.get(4 + i));
        assertEquals(0, b.get(3));
        assertEquals(0, b.duplicate().clear().get(9));
        byte[] back = new byte[7];
        Buffers.copyFromIov(v, 2, ByteBuffer.wrap(back), 0, 7);
        assertArrayEquals(new byte[] {3, 4, 5, 6, 7, 8, 9}, back);
        assertThrows(IndexOutOfBoundsException.class, () -> Buffers.copyFromIov(v, 10, ByteBuffer.wrap(back), 0, 7));
    }
}
