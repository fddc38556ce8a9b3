package io.jvhost.daemon;

import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class KeyValueTest {

    private static String error(String text, String implied) {
        return assertThrows(KeyValueException.class, () -> KeyValue.parse(text, implied)).getMessage();
    }

    @Test
    void keysAndValuesInOrder() throws Exception {
        KeyValue kv = KeyValue.parse("driver=file,node-name=n,filename=/a,read-only=on", null);
        assertEquals(List.of("driver", "node-name", "filename", "read-only"), List.copyOf(kv.keys()));
        assertEquals("file", kv.get("driver"));
        assertEquals("/a", kv.get("filename"));
        assertNull(kv.get("nope"));
    }

    @Test
    void doubledCommaIsALiteralComma() throws Exception {
        KeyValue kv = KeyValue.parse("driver=file,node-name=n,filename=/a,,b", null);
        assertEquals("/a,b", kv.get("filename"));
        assertEquals(",id=bar", KeyValue.parse("x=,,id=bar", null).get("x"));
        assertEquals(1, KeyValue.parse("x=,,id=bar", null).asMap().size());
        assertEquals("a,,b,", KeyValue.parse("x=a,,,,b,,", null).get("x"));
        // toString escapes again, so it round-trips.
        KeyValue again = KeyValue.parse(KeyValue.parse("x=a,,b,y=c", null).toString(), null);
        assertEquals(Map.of("x", "a,b", "y", "c"), again.asMap());
    }

    @Test
    void valuesMayContainEqualsAndBeEmpty() throws Exception {
        KeyValue kv = KeyValue.parse("a=b=c,d=", null);
        assertEquals("b=c", kv.get("a"));
        assertEquals("", kv.get("d"));
    }

    @Test
    void impliedFirstKey() throws Exception {
        KeyValue kv = KeyValue.parse("iothread,id=x", "qom-type");
        assertEquals(Map.of("qom-type", "iothread", "id", "x"), kv.asMap());
        // Given explicitly it works the same.
        assertEquals("iothread", KeyValue.parse("qom-type=iothread,id=x", "qom-type").get("qom-type"));
        // Only the first element may omit the key.
        assertEquals("expected '=' after parameter 'b'", error("a,b", "type"));
        // The implied value ends at the first comma (as in QEMU, it cannot contain ",,").
        assertEquals("invalid parameter ''", error("val,,ue", "implied"));
        // Without an implied key a bare word is an error.
        assertEquals("expected '=' after parameter 'iothread'", error("iothread,id=x", null));
    }

    @Test
    void emptyAndTrailingComma() throws Exception {
        assertTrue(KeyValue.parse("", null).isEmpty());
        assertEquals(Map.of("x", "y"), KeyValue.parse("x=y,", null).asMap());
        assertEquals("invalid parameter ''", error(",", null));
        assertEquals("invalid parameter ''", error(",", "implied"));
        assertEquals("invalid parameter ''", error("=val", "implied"));
        assertEquals("1,", KeyValue.parse("a=1,,", null).get("a"));     // ",," at the end is a comma, not a separator
    }

    @Test
    void badKeys() {
        assertEquals("invalid parameter '7up'", error("7up=val", null));
        assertEquals("invalid parameter 'key[0]'", error("key[0]=val", null));
        assertEquals("invalid parameter '.'", error(".=1", null));
        assertEquals("invalid parameter 'key.'", error("key.=1", null));
        assertEquals("invalid parameter '0'", error("0=1", null));                 // the root is not a list
        assertEquals("invalid parameter 'a.b c'", error("a.b c=1", null));
        String longKey = "k".repeat(128);
        assertEquals("parameter '" + longKey + "' is too long", error(longKey + "=1", null));
        assertEquals("invalid parameter 'l.12345678901'", error("l.12345678901=1", null));
    }

    @Test
    void duplicateKeysAreAnError() {
        assertEquals("parameter 'id' is given more than once", error("id=foo,id=bar", null));
        assertEquals("parameter 'a.b' is given more than once", error("a.b=1,a.b=2", null));
        // The same list index spelled differently is still the same key.
        assertEquals("parameter 'l.1' is given more than once", error("l.0=a,l.1=b,l.01=c", null));
        // An implied key given again explicitly.
        assertEquals("parameter 'type' is given more than once", error("nbd,type=vhost-user-blk", "type"));
    }

    @Test
    void dottedKeysMustBeConsistent() {
        assertEquals("parameters 'a.*' used inconsistently", error("a.b=1,a=2", null));
        assertEquals("parameters 'a.*' used inconsistently", error("a=2,a.b=1", null));
        assertEquals("parameters 'a.b.*' used inconsistently", error("a.b=1,a.b.c=2", null));
        assertEquals("parameters 'a.b.*' used inconsistently", error("a.b.c=1,a.b.0=2", null));
        assertEquals("parameters 'a.*' used inconsistently", error("a.0.c=1,a.b.c=2", null));
        assertEquals("parameters 'iothread.*' used inconsistently", error("iothread=x,iothread.0=y", null));
    }

    @Test
    void lists() throws Exception {
        KeyValue kv = KeyValue.parse("iothread.0=a,iothread.2=c,iothread.1=b", null);
        assertTrue(kv.isList("iothread"));
        assertEquals(List.of("a", "b", "c"), kv.list("iothread"));
        assertTrue(kv.hasChildren("iothread"));
        assertNull(kv.get("iothread"));
        // Leading zeros are normalised.
        KeyValue z = KeyValue.parse("l.00=x,l.01=y", null);
        assertEquals(List.of("l.0", "l.1"), List.copyOf(z.keys()));
        assertEquals(List.of("x", "y"), z.list("l"));
        // A plain key is not a list.
        KeyValue plain = KeyValue.parse("iothread=a", null);
        assertFalse(plain.isList("iothread"));
        assertNull(plain.list("iothread"));
        // List elements that are themselves objects are not strings.
        KeyValue nested = KeyValue.parse("l.0.x=1", null);
        assertEquals("parameter 'l.0' expects a string",
                assertThrows(KeyValueException.class, () -> nested.list("l")).getMessage());
    }

    @Test
    void listIndexesMustNotHaveGaps() {
        assertEquals("parameter 'list.0' missing", error("list.1=lonely", null));
        assertEquals("parameter 'list.1' missing", error("list.0=a,list.2=c", null));
        assertEquals("parameter 'a.list.0' missing", error("a.list.999999999=x", null));
    }

    @Test
    void dottedKeysPassThroughFlat() throws Exception {
        KeyValue kv = KeyValue.parse("file,node-name=n,cache.direct=on,addr.type=unix", "driver");
        assertEquals(Map.of("driver", "file", "node-name", "n", "cache.direct", "on", "addr.type", "unix"), kv.asMap());
        assertTrue(kv.hasChildren("cache"));
        assertFalse(kv.hasChildren("node-name"));
    }
}
