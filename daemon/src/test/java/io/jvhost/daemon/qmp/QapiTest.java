package io.jvhost.daemon.qmp;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

import static io.jvhost.daemon.qmp.Qapi.BOOL;
import static io.jvhost.daemon.qmp.Qapi.STR;
import static io.jvhost.daemon.qmp.Qapi.UINT16;
import static io.jvhost.daemon.qmp.Qapi.enumOf;
import static io.jvhost.daemon.qmp.Qapi.listOf;
import static io.jvhost.daemon.qmp.Qapi.optional;
import static io.jvhost.daemon.qmp.Qapi.required;
import static io.jvhost.daemon.qmp.Qapi.struct;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The QAPI checks and their QEMU error messages; the flat form they produce. */
class QapiTest {
    private static final Qapi.Type ADDR = Qapi.union(struct(required("type", STR)), "type",
            Map.of("unix", struct(required("path", STR))), t -> "type " + t + " unsupported");
    private static final Qapi.Type ARGS = struct(required("id", STR), optional("on", BOOL), optional("n", UINT16),
            optional("mode", enumOf("safe", "hard")), optional("list", listOf(STR)), optional("addr", ADDR),
            optional("alt", Qapi.strOrStrList()));

    private static ObjectNode json(String s) throws Exception {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        return (ObjectNode) Json.parse(b, 0, b.length);
    }

    private static void assertError(String msg, String args) {
        QmpException e = assertThrows(QmpException.class, () -> Qapi.flatten(ARGS, json(args)));
        assertEquals(msg, e.getMessage());
        assertEquals(QmpException.GENERIC_ERROR, e.errorClass());
    }

    @Test
    void flattensToKeyValues() throws Exception {
        Map<String, String> want = new LinkedHashMap<>();
        want.put("id", "x");
        want.put("on", "off");
        want.put("n", "65535");
        want.put("mode", "hard");
        want.put("list.0", "a");
        want.put("list.1", "b");
        want.put("addr.type", "unix");
        want.put("addr.path", "/s,t");
        want.put("alt.0", "q");
        assertEquals(want, Qapi.flatten(ARGS, json("{\"alt\": [\"q\"], \"addr\": {\"path\": \"/s,t\", \"type\": \"unix\"}, "
                + "\"list\": [\"a\", \"b\"], \"mode\": \"hard\", \"n\": 65535, \"on\": false, \"id\": \"x\"}")));
        assertEquals(Map.of("id", "x", "alt", "q"), Qapi.flatten(ARGS, json("{\"id\": \"x\", \"alt\": \"q\"}")));
    }

    @Test
    void qemuMessages() {
        assertError("Parameter 'id' is missing", "{}");
        assertError("Invalid parameter type for 'id', expected: string", "{\"id\": 1}");
        assertError("Invalid parameter type for 'id', expected: string", "{\"id\": null}");
        assertError("Parameter 'bogus' is unexpected", "{\"id\": \"x\", \"bogus\": 1}");
        assertError("Invalid parameter type for 'on', expected: boolean", "{\"id\": \"x\", \"on\": \"on\"}");
        assertError("Invalid parameter type for 'n', expected: integer", "{\"id\": \"x\", \"n\": 1.5}");
        assertError("Invalid parameter type for 'n', expected: integer", "{\"id\": \"x\", \"n\": \"1\"}");
        assertError("Parameter 'n' expects uint16", "{\"id\": \"x\", \"n\": 65536}");
        assertError("Parameter 'n' expects uint16", "{\"id\": \"x\", \"n\": -1}");
        assertError("Parameter 'n' expects uint16", "{\"id\": \"x\", \"n\": 123456789012345678901234567890}");
        assertError("Parameter 'mode' does not accept value 'soft'", "{\"id\": \"x\", \"mode\": \"soft\"}");
        assertError("Invalid parameter type for 'list[1]', expected: string", "{\"id\": \"x\", \"list\": [\"a\", 2]}");
        assertError("Invalid parameter type for 'list', expected: array", "{\"id\": \"x\", \"list\": \"a\"}");
        assertError("Parameter 'addr.type' is missing", "{\"id\": \"x\", \"addr\": {}}");
        assertError("type inet unsupported", "{\"id\": \"x\", \"addr\": {\"type\": \"inet\"}}");
        assertError("Parameter 'addr.path' is missing", "{\"id\": \"x\", \"addr\": {\"type\": \"unix\"}}");
        assertError("Parameter 'addr.port' is unexpected", "{\"id\": \"x\", \"addr\": {\"type\": \"unix\", \"path\": \"/s\", \"port\": 1}}");
        assertError("Invalid parameter type for 'addr', expected: object", "{\"id\": \"x\", \"addr\": []}");
        assertError("Invalid parameter type for 'alt', expected: string or array of strings", "{\"id\": \"x\", \"alt\": 1}");
    }
}
