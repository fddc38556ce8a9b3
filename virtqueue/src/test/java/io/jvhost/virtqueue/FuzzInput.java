package io.jvhost.virtqueue;

import java.io.ByteArrayOutputStream;

/**
 * The byte format of this module's fuzz inputs: little-endian fields read in order; a read past the end yields
 * zeroes, so every byte string is a valid input (the fuzzer mutates bytes, not a grammar). {@link Seed} writes the
 * same format, for the committed seed corpus.
 */
final class FuzzInput {
    private final byte[] b;
    private int pos;

    FuzzInput(byte[] b) {
        this.b = b;
    }

    boolean more() {
        return pos < b.length;
    }

    int u8() {
        return pos < b.length ? b[pos++] & 0xff : 0;
    }

    int u16() {
        return u8() | u8() << 8;
    }

    long u32() {
        return (u16() | (long) u16() << 16) & 0xffff_ffffL;
    }

    long u64() {
        return u32() | u32() << 32;
    }

    /** Up to n bytes (fewer at the end of the input). */
    byte[] bytes(int n) {
        int k = Math.max(0, Math.min(n, b.length - pos));
        byte[] r = java.util.Arrays.copyOfRange(b, pos, pos + k);
        pos += k;
        return r;
    }

    /** Writes inputs in the format {@link FuzzInput} reads. */
    static final class Seed {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Seed u8(int v) {
            out.write(v);
            return this;
        }

        Seed u16(int v) {
            return u8(v).u8(v >>> 8);
        }

        Seed u32(long v) {
            return u16((int) v).u16((int) (v >>> 16));
        }

        Seed u64(long v) {
            return u32(v).u32(v >>> 32);
        }

        Seed bytes(byte[] v) {
            out.writeBytes(v);
            return this;
        }

        byte[] toBytes() {
            return out.toByteArray();
        }
    }
}
