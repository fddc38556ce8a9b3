package io.jvhost.daemon;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * An option argument in QEMU's keyval syntax ({@code qemu-storage-daemon --blockdev/--export/--object}):
 * <pre>
 *   key-vals     = [ key-val { ',' key-val } [ ',' ] ]
 *   key-val      = key '=' val            (the first one may be a bare val for the implied key)
 *   key          = key-fragment { '.' key-fragment }
 *   key-fragment = name | index           name = [A-Za-z][A-Za-z0-9_-]*, index = [0-9]+ (not at the root)
 *   val          = { any char but ',' | ',,' }
 * </pre>
 * Dotted keys build a tree; a node whose children are indexes is a list ({@code iothread.0=a,iothread.1=b}) and
 * its indexes must run from 0 without gaps. Unlike QEMU (last one wins) a key given twice is an error: on a command
 * line that is almost always a mistake, e.g. {@code writable=on,...,writable=off}.
 *
 * <p>Keys are stored flat, in order of appearance, with index fragments normalised ({@code list.01} becomes
 * {@code list.1}). Instances are immutable.
 */
public final class KeyValue {
    private static final int MAX_KEY_LENGTH = 127;   // as QEMU: keys are names, not data
    private static final int MAX_INDEX_DIGITS = 9;    // keeps indexes in int range; gaps are reported anyway

    private final Map<String, String> values;          // canonical flat key -> value, insertion order
    private final Map<String, Inner> inner;            // dotted prefix of some key -> its children ("" = root)

    /** An inner node of the key tree: either a dict (named children) or a list (index children). */
    private static final class Inner {
        final boolean list;
        final Set<String> children = new LinkedHashSet<>();

        Inner(boolean list) {
            this.list = list;
        }
    }

    private KeyValue(Map<String, String> values, Map<String, Inner> inner) {
        this.values = Collections.unmodifiableMap(values);
        this.inner = inner;
    }

    /**
     * Parses {@code text}. When {@code impliedKey} is not null, a first element without '=' is the value of that key
     * (QEMU: {@code --object iothread,id=x} means {@code qom-type=iothread}); that value ends at the first ','.
     */
    public static KeyValue parse(String text, String impliedKey) throws KeyValueException {
        Map<String, String> values = new LinkedHashMap<>();
        Map<String, Inner> inner = new LinkedHashMap<>();
        inner.put("", new Inner(false));
        int pos = 0;
        int len = text.length();
        boolean first = true;
        while (pos < len) {
            int k = pos;
            while (k < len && text.charAt(k) != '=' && text.charAt(k) != ',') k++;
            String rawKey = text.substring(pos, k);
            String value;
            if (k < len && text.charAt(k) == '=') {
                StringBuilder sb = new StringBuilder();
                int v = k + 1;
                while (v < len) {
                    char c = text.charAt(v);
                    if (c == ',') {
                        if (v + 1 < len && text.charAt(v + 1) == ',') {
                            sb.append(',');     // ",," is a literal comma
                            v += 2;
                            continue;
                        }
                        break;
                    }
                    sb.append(c);
                    v++;
                }
                value = sb.toString();
                pos = v + 1;                    // skips the separator (or runs past the end)
            } else if (first && impliedKey != null && !rawKey.isEmpty()) {
                value = rawKey;
                rawKey = impliedKey;
                pos = k + 1;
            } else if (rawKey.isEmpty()) {
                throw new KeyValueException("invalid parameter ''");
            } else {
                throw new KeyValueException("expected '=' after parameter '" + rawKey + "'");
            }
            first = false;
            put(values, inner, canonicalKey(rawKey), value);
        }
        checkLists(inner);
        return new KeyValue(values, inner);
    }

    /**
     * The same structure from keys and values that are already split, e.g. QMP arguments flattened by the QAPI
     * check ({@code addr.path}, {@code iothread.0}); keys are checked and canonicalised as in {@link #parse}.
     */
    public static KeyValue of(Map<String, String> flat) throws KeyValueException {
        Map<String, String> values = new LinkedHashMap<>();
        Map<String, Inner> inner = new LinkedHashMap<>();
        inner.put("", new Inner(false));
        for (Map.Entry<String, String> e : flat.entrySet()) {
            put(values, inner, canonicalKey(e.getKey()), e.getValue());
        }
        checkLists(inner);
        return new KeyValue(values, inner);
    }

    private static String canonicalKey(String key) throws KeyValueException {
        if (key.length() > MAX_KEY_LENGTH) {
            throw new KeyValueException("parameter '" + key + "' is too long");
        }
        String[] fragments = key.split("\\.", -1);
        StringBuilder sb = new StringBuilder(key.length());
        for (int i = 0; i < fragments.length; i++) {
            String f = fragments[i];
            if (isIndex(f)) {
                String digits = f.replaceFirst("^0+(?=.)", "");
                // The root is an object, never a list; and absurd indexes could only be reported as gaps later.
                if (i == 0 || digits.length() > MAX_INDEX_DIGITS) {
                    throw new KeyValueException("invalid parameter '" + key + "'");
                }
                f = digits;
            } else if (!isName(f)) {
                throw new KeyValueException("invalid parameter '" + key + "'");
            }
            if (i > 0) sb.append('.');
            sb.append(f);
        }
        return sb.toString();
    }

    private static boolean isIndex(String f) {
        if (f.isEmpty()) return false;
        for (int i = 0; i < f.length(); i++) {
            char c = f.charAt(i);
            if (c < '0' || c > '9') return false;
        }
        return true;
    }

    private static boolean isName(String f) {
        if (f.isEmpty() || !isAsciiLetter(f.charAt(0))) return false;
        for (int i = 1; i < f.length(); i++) {
            char c = f.charAt(i);
            if (!isAsciiLetter(c) && !(c >= '0' && c <= '9') && c != '-' && c != '_') return false;
        }
        return true;
    }

    private static boolean isAsciiLetter(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }

    private static void put(Map<String, String> values, Map<String, Inner> inner, String key, String value)
            throws KeyValueException {
        if (values.containsKey(key)) {
            throw new KeyValueException("parameter '" + key + "' is given more than once");
        }
        if (inner.containsKey(key)) {
            throw new KeyValueException("parameters '" + key + ".*' used inconsistently");
        }
        String[] fragments = key.split("\\.");
        String parent = "";
        for (int i = 0; i < fragments.length; i++) {
            String f = fragments[i];
            Inner node = inner.get(parent);
            if (node == null) {
                if (values.containsKey(parent)) {
                    throw new KeyValueException("parameters '" + parent + ".*' used inconsistently");
                }
                node = new Inner(isIndex(f));
                inner.put(parent, node);
            } else if (node.list != isIndex(f)) {
                throw new KeyValueException("parameters '" + parent + ".*' used inconsistently");
            }
            node.children.add(f);
            parent = parent.isEmpty() ? f : parent + "." + f;
        }
        values.put(key, value);
    }

    private static void checkLists(Map<String, Inner> inner) throws KeyValueException {
        for (Map.Entry<String, Inner> e : inner.entrySet()) {
            Inner node = e.getValue();
            if (!node.list) continue;
            // Indexes are canonical and distinct, so "no gap" means every index below the count is present.
            int n = node.children.size();
            for (int i = 0; i < n; i++) {
                if (!node.children.contains(Integer.toString(i))) {
                    throw new KeyValueException("parameter '" + e.getKey() + "." + i + "' missing");
                }
            }
        }
    }

    /** All keys (canonical, dotted) and their values, in order of appearance. */
    public Map<String, String> asMap() {
        return values;
    }

    public Set<String> keys() {
        return values.keySet();
    }

    public boolean isEmpty() {
        return values.isEmpty();
    }

    /** The value of a leaf key, or null when it is absent (also when {@code key} names an inner node). */
    public String get(String key) {
        return values.get(key);
    }

    /** True when some key lies below {@code prefix}, e.g. {@code addr} for {@code addr.type=unix}. */
    public boolean hasChildren(String prefix) {
        return inner.containsKey(prefix) && !prefix.isEmpty();
    }

    /** True when {@code key} is a list ({@code key.0=...}). */
    public boolean isList(String key) {
        Inner node = inner.get(key);
        return node != null && node.list && !key.isEmpty();
    }

    /**
     * The elements of the list {@code key} in index order, or null when {@code key} is not a list.
     * Every element must be a plain value.
     */
    public List<String> list(String key) throws KeyValueException {
        if (!isList(key)) return null;
        int n = inner.get(key).children.size();
        List<String> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            String element = key + "." + i;
            String v = values.get(element);
            if (v == null) {
                throw new KeyValueException("parameter '" + element + "' expects a string");
            }
            out.add(v);
        }
        return out;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<String, String> e : values.entrySet()) {
            if (sb.length() > 0) sb.append(',');
            sb.append(e.getKey()).append('=').append(e.getValue().replace(",", ",,"));
        }
        return sb.toString();
    }
}
