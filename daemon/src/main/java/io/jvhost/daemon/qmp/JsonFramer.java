package io.jvhost.daemon.qmp;

import io.netty.buffer.ByteBuf;

/**
 * Splits a QMP input stream into JSON texts the way QEMU's json-streamer does: an object or array ends where its
 * brackets balance (brackets inside strings and escapes do not count); anything else at the top level is a token
 * of its own (a scalar or junk), ended by white space or a bracket, which the parser then rejects. The framer only
 * counts; the JSON itself is parsed later, one complete text at a time.
 *
 * <p>Input is hostile: a text longer than {@code maxBytes} ends the stream ({@link Kind#TOO_LARGE}, sticky), and a
 * text nested deeper than {@code maxDepth} is still framed (the counter is an int) but reported as
 * {@link Kind#TOO_DEEP} instead of being parsed. White space between texts is dropped, so it costs no memory.
 *
 * <p>Not thread-safe: owned by one connection's event loop. A returned frame points into the internal buffer and is
 * valid until the next call of {@link #feed} or {@link #next}.
 */
public final class JsonFramer {
    public enum Kind { MESSAGE, TOO_DEEP, TOO_LARGE }

    /** One JSON text: {@code buf[off, off + len)}. */
    public record Frame(Kind kind, byte[] buf, int off, int len) {}

    private final int maxBytes;
    private final int maxDepth;
    private byte[] buf = new byte[4096];
    private int start;          // first byte not yet handed out
    private int end;            // end of the data
    private int pos;            // next byte to scan
    private int msgStart = -1;  // first byte of the text being scanned; -1 between texts
    private int depth;
    private boolean tooDeep;
    private byte quote;         // the open string's quote character, 0 outside strings
    private boolean escape;
    private boolean tooLarge;

    public JsonFramer(int maxBytes, int maxDepth) {
        if (maxBytes < 2 || maxDepth < 1) throw new IllegalArgumentException("limits");
        this.maxBytes = maxBytes;
        this.maxDepth = maxDepth;
    }

    /** Appends the readable bytes of {@code in} (which is not released). */
    public void feed(ByteBuf in) {
        int n = in.readableBytes();
        if (n == 0) return;
        makeRoom(n);
        in.readBytes(buf, end, n);
        end += n;
    }

    /** Appends {@code b[off, off + len)}. */
    public void feed(byte[] b, int off, int len) {
        makeRoom(len);
        System.arraycopy(b, off, buf, end, len);
        end += len;
    }

    /** Bytes received and not yet handed out as frames (tests, accounting). */
    public int buffered() {
        return end - start;
    }

    private void makeRoom(int n) {
        if (start > 0) {
            // Drop what was handed out; scan state is relative to the text being scanned.
            System.arraycopy(buf, start, buf, 0, end - start);
            pos -= start;
            if (msgStart >= 0) msgStart -= start;
            end -= start;
            start = 0;
        }
        if (buf.length - end < n) {
            long want = Math.max((long) buf.length * 2, (long) end + n);
            if (want > Integer.MAX_VALUE - 16) throw new IllegalStateException("QMP input buffer overflow");
            buf = java.util.Arrays.copyOf(buf, (int) want);
        }
    }

    /** The next complete text, or null when more input is needed. */
    public Frame next() {
        if (tooLarge) return new Frame(Kind.TOO_LARGE, buf, start, 0);
        while (pos < end) {
            byte c = buf[pos];
            if (msgStart < 0) {
                if (isSpace(c)) {
                    pos++;
                    start = pos;
                    continue;
                }
                msgStart = pos;
                pos++;
                switch (c) {
                    case '{', '[' -> depth = 1;
                    case '}', ']' -> {
                        return emit();     // a stray closer: the parser reports it
                    }
                    case '"', '\'' -> quote = c;     // a top-level string
                    default -> { }                    // a bare top-level token
                }
            } else if (quote != 0) {
                pos++;
                if (escape) {
                    escape = false;
                } else if (c == '\\') {
                    escape = true;
                } else if (c == quote) {
                    quote = 0;
                    if (depth == 0) return emit();    // a top-level string
                }
            } else if (depth == 0) {
                // A bare top-level token (number, keyword, junk) ends before white space, a bracket or a quote.
                if (isSpace(c) || c == '{' || c == '[' || c == '}' || c == ']' || c == '"' || c == '\'') return emit();
                pos++;
            } else {
                pos++;
                switch (c) {
                    case '"', '\'' -> quote = c;
                    case '{', '[' -> {
                        if (++depth > maxDepth) tooDeep = true;
                    }
                    case '}', ']' -> {
                        if (--depth == 0) return emit();
                    }
                    default -> { }
                }
            }
            if (pos - msgStart > maxBytes) {
                tooLarge = true;
                return new Frame(Kind.TOO_LARGE, buf, msgStart, pos - msgStart);
            }
        }
        return null;
    }

    private Frame emit() {
        Frame f = new Frame(tooDeep ? Kind.TOO_DEEP : Kind.MESSAGE, buf, msgStart, pos - msgStart);
        start = pos;
        msgStart = -1;
        depth = 0;
        tooDeep = false;
        quote = 0;
        escape = false;
        return f;
    }

    private static boolean isSpace(byte c) {
        return c == ' ' || c == '\n' || c == '\r' || c == '\t';
    }
}
