package io.jvhost.vhostuser;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.jvhost.block.IoVec;
import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

class IoVecViewsTest {
    @Test
    void reusesOneViewPerSegmentSlotAndWindow() {
        ByteBuffer w1 = ByteBuffer.allocateDirect(8192), w2 = ByteBuffer.allocateDirect(8192);
        w1.put(100, (byte) 7);
        IoVec iov = new IoVec(8);
        IoVecViews v = new IoVecViews(iov);

        v.accept(w1, 100, 50);
        v.accept(w1, 4000, 10);
        ByteBuffer a = iov.get(0), b = iov.get(1);
        assertNotSame(a, b, "two segments of one request must not share a buffer object");
        assertNotSame(w1, a, "the shared window itself must never be handed out");
        assertEquals(100, a.position());
        assertEquals(150, a.limit());
        assertEquals(7, a.get(100), "a view of the same memory");
        assertEquals(60, iov.size());

        // The next request on this slot: same objects, new ranges; the window's own position is untouched.
        iov.clear();
        v.accept(w1, 10, 20);
        v.accept(w2, 0, 8192);
        assertSame(a, iov.get(0));
        assertEquals(10, iov.get(0).position());
        assertEquals(30, iov.get(0).limit());
        assertNotSame(b, iov.get(1), "another window needs its own view");
        assertEquals(0, w1.position());
        assertEquals(8192, w1.limit());

        // Slot 1 now knows both windows: going back to w1 reuses b.
        iov.clear();
        v.accept(w2, 0, 1);
        v.accept(w1, 0, 1);
        assertSame(b, iov.get(1));
    }

    @Test
    void growsUpToTheIoVecCapacityAndLetsItRefuseMore() {
        ByteBuffer w = ByteBuffer.allocateDirect(4096);
        IoVec iov = new IoVec(10);
        IoVecViews v = new IoVecViews(iov);
        for (int i = 0; i < 10; i++) v.accept(w, i * 10, 10);
        assertEquals(10, iov.count());
        assertEquals(90, iov.get(9).position());
        assertThrows(IllegalStateException.class, () -> v.accept(w, 0, 1));
    }

    @Test
    void moreWindowsThanWaysStillGiveCorrectViews() {
        IoVec iov = new IoVec(1);
        IoVecViews v = new IoVecViews(iov);
        ByteBuffer[] ws = new ByteBuffer[IoVecViews.WAYS + 3];
        for (int i = 0; i < ws.length; i++) {
            ws[i] = ByteBuffer.allocateDirect(64);
            ws[i].put(5, (byte) i);
        }
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < ws.length; i++) {
                iov.clear();
                v.accept(ws[i], 5, 1);
                assertEquals(i, iov.get(0).get(5), "view of window " + i);
                assertEquals(5, iov.get(0).position());
                assertEquals(6, iov.get(0).limit());
            }
        }
    }
}
