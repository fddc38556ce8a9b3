package io.jvhost.block;

import java.nio.ByteBuffer;

/** Small allocation-free helpers for copying between IoVecs and bounce buffers with absolute indices. */
final class Buffers {
    private Buffers() {}

    private static final byte[] ZEROS = new byte[64 * 1024];

    /** Zeroes b[index, index + len) without touching position or limit (beyond the caller's own). */
    static void zero(ByteBuffer b, int index, int len) {
        while (len > 0) {
            int n = Math.min(len, ZEROS.length);
            b.put(index, ZEROS, 0, n);
            index += n;
            len -= n;
        }
    }

    /** Copies src[srcOff, srcOff + n) into the IoVec starting {@code iovOff} bytes into it. */
    static void copyToIov(IoVec iov, long iovOff, ByteBuffer src, int srcOff, int n) {
        long skip = iovOff;
        for (int i = 0; n > 0 && i < iov.count(); i++) {
            int len = iov.length(i);
            if (skip >= len) {
                skip -= len;
                continue;
            }
            int k = (int) Math.min(len - skip, n);
            iov.prepare(i).put(iov.start(i) + (int) skip, src, srcOff, k);
            srcOff += k;
            n -= k;
            skip = 0;
        }
        if (n > 0) throw new IndexOutOfBoundsException("IoVec shorter than the copy");
    }

    /** Copies n bytes starting {@code iovOff} bytes into the IoVec to dst[dstOff, dstOff + n). */
    static void copyFromIov(IoVec iov, long iovOff, ByteBuffer dst, int dstOff, int n) {
        long skip = iovOff;
        for (int i = 0; n > 0 && i < iov.count(); i++) {
            int len = iov.length(i);
            if (skip >= len) {
                skip -= len;
                continue;
            }
            int k = (int) Math.min(len - skip, n);
            dst.put(dstOff, iov.prepare(i), iov.start(i) + (int) skip, k);
            dstOff += k;
            n -= k;
            skip = 0;
        }
        if (n > 0) throw new IndexOutOfBoundsException("IoVec shorter than the copy");
    }
}
