package io.jvhost.daemon.qmp;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class JsonFramerTest {

    private static List<String> frames(JsonFramer f, String input) {
        byte[] b = input.getBytes(StandardCharsets.UTF_8);
        f.feed(b, 0, b.length);
        List<String> out = new ArrayList<>();
        for (JsonFramer.Frame fr; (fr = f.next()) != null; ) {
            out.add(fr.kind() == JsonFramer.Kind.MESSAGE ? new String(fr.buf(), fr.off(), fr.len(), StandardCharsets.UTF_8)
                    : fr.kind().toString());
            if (fr.kind() == JsonFramer.Kind.TOO_LARGE) break;
        }
        return out;
    }

    @Test
    void splitsObjectsWhereBracketsBalance() {
        JsonFramer f = new JsonFramer(1 << 20, 8);
        assertEquals(List.of("{\"a\": {\"b\": [1, {}]}}", "{}", "[1,2]"), frames(f, "  {\"a\": {\"b\": [1, {}]}}\r\n{}[1,2]\n"));
        assertEquals(0, f.buffered());
    }

    @Test
    void bracketsInStringsAndEscapesDoNotCount() {
        JsonFramer f = new JsonFramer(1 << 20, 8);
        assertEquals(List.of("{\"x\": \"}{]\\\"[\"}", "{'y': '}\\'{'}"), frames(f, "{\"x\": \"}{]\\\"[\"}{'y': '}\\'{'}"));
    }

    @Test
    void textsMayArriveInPieces() {
        JsonFramer f = new JsonFramer(1 << 20, 8);
        assertEquals(List.of(), frames(f, "{\"execute\": \"qu"));
        assertEquals(List.of(), frames(f, "it\", \"id\": \"\\"));
        assertEquals(List.of("{\"execute\": \"quit\", \"id\": \"\\}\"}"), frames(f, "}\"}  "));
        assertNull(f.next());
    }

    @Test
    void topLevelScalarsAndJunkAreTokensOfTheirOwn() {
        JsonFramer f = new JsonFramer(1 << 20, 8);
        assertEquals(List.of("123", "foo", "\"a b\"", "}", "bar", "{}"), frames(f, "123 foo\n\"a b\" } bar{}"));
        // A bare token waits for its end: more digits may follow.
        assertEquals(List.of(), frames(f, "42"));
        assertEquals(List.of("42"), frames(f, "\n"));
    }

    @Test
    void tooDeepIsFramedButFlagged() {
        JsonFramer f = new JsonFramer(1 << 20, 4);
        assertEquals(List.of("[[[[1]]]]", "TOO_DEEP", "{}"), frames(f, "[[[[1]]]] [[[[[1]]]]] {}"));
    }

    @Test
    void tooLargeIsStickyAndCountsOnlyTheText() {
        JsonFramer f = new JsonFramer(64, 8);
        // White space between texts costs nothing.
        assertEquals(List.of("{}"), frames(f, " ".repeat(10_000) + "{}"));
        String big = "{\"a\": \"" + "x".repeat(100) + "\"}";
        assertEquals(List.of("TOO_LARGE"), frames(f, big));
        JsonFramer.Frame again = f.next();
        assertEquals(JsonFramer.Kind.TOO_LARGE, again.kind());
        // Exactly at the limit is fine.
        JsonFramer g = new JsonFramer(64, 8);
        String exact = "{\"a\": \"" + "x".repeat(64 - 9) + "\"}";
        assertEquals(64, exact.length());
        assertEquals(List.of(exact), frames(g, exact));
    }

    @Test
    void bufferIsCompactedAfterManyTexts() {
        JsonFramer f = new JsonFramer(1 << 10, 8);
        for (int i = 0; i < 10_000; i++) {
            assertEquals(List.of("{\"i\": " + i + "}"), frames(f, "{\"i\": " + i + "}\n"));
        }
        assertTrue(f.buffered() == 0);
    }
}
