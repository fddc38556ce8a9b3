package io.jvhost.daemon.qmp;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

/**
 * The part of QEMU's QAPI type system that our command arguments use, as a checking visitor: it checks a command's
 * {@code arguments} against a schema with the error messages of QEMU's QObject input visitor ("Parameter 'x' is
 * missing", "Invalid parameter type for 'x', expected: integer", "Parameter 'x' is unexpected", ...) and flattens
 * what it accepts into the key/value form of the command line ({@code addr.path=/s}, {@code iothread.0=io0},
 * booleans as {@code on}/{@code off}, integers in decimal). The daemon then validates the values with the very code
 * that validates command-line options, so both front doors share one path.
 */
public final class Qapi {
    private Qapi() {}

    /** Checks {@code arguments} against {@code type} and returns the flat keys and values, in schema order. */
    public static Map<String, String> flatten(Type type, ObjectNode arguments) throws QmpException {
        Map<String, String> out = new LinkedHashMap<>();
        type.flatten("", "", arguments, out);
        return out;
    }

    /**
     * Checks a value that is not a command's arguments (qom-set's {@code value}) against {@code type}; {@code name}
     * names it in messages ("Invalid parameter type for 'limits', expected: object", "Parameter 'limits.x' is
     * unexpected"), as QEMU's visitor does for the property.
     */
    public static Map<String, String> flatten(Type type, String name, JsonNode value) throws QmpException {
        Map<String, String> out = new LinkedHashMap<>();
        type.flatten(name, "", value, out);
        return out;
    }

    /** A QAPI type. {@code name} is QEMU's full name for messages ("addr.path", "iothread[1]"); {@code key} the flat key. */
    public abstract static class Type {
        abstract void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException;
    }

    public static final Type STR = new Type() {
        @Override
        void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
            if (!v.isTextual()) throw typeError(name, "string");
            out.put(key, v.textValue());
        }
    };

    public static final Type BOOL = new Type() {
        @Override
        void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
            if (!v.isBoolean()) throw typeError(name, "boolean");
            out.put(key, v.booleanValue() ? "on" : "off");
        }
    };

    /** QAPI's {@code any}: every JSON value, kept as its JSON text (for the handler to check, e.g. qom-set's value). */
    public static final Type ANY = new Type() {
        @Override
        void flatten(String name, String key, JsonNode v, Map<String, String> out) {
            out.put(key, v.toString());
        }
    };

    public static final Type INT = new IntType("int64", BigInteger.valueOf(Long.MIN_VALUE), BigInteger.valueOf(Long.MAX_VALUE));
    public static final Type UINT16 = new IntType("uint16", BigInteger.ZERO, BigInteger.valueOf(0xffff));
    public static final Type UINT32 = new IntType("uint32", BigInteger.ZERO, BigInteger.valueOf(0xffff_ffffL));
    public static final Type UINT64 = new IntType("uint64", BigInteger.ZERO, BigInteger.ONE.shiftLeft(64).subtract(BigInteger.ONE));
    public static final Type SIZE = new IntType("size", BigInteger.ZERO, BigInteger.ONE.shiftLeft(64).subtract(BigInteger.ONE));

    private static final class IntType extends Type {
        private final String qapiName;
        private final BigInteger min;
        private final BigInteger max;

        IntType(String qapiName, BigInteger min, BigInteger max) {
            this.qapiName = qapiName;
            this.min = min;
            this.max = max;
        }

        @Override
        void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
            if (!v.isIntegralNumber()) throw typeError(name, "integer");
            BigInteger b = v.bigIntegerValue();
            if (b.compareTo(min) < 0 || b.compareTo(max) > 0) {
                throw new QmpException("Parameter '" + name + "' expects " + qapiName);
            }
            out.put(key, b.toString());
        }
    }

    public static Type enumOf(String... values) {
        Set<String> allowed = new LinkedHashSet<>(Arrays.asList(values));
        return new Type() {
            @Override
            void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
                if (!v.isTextual()) throw typeError(name, "string");
                if (!allowed.contains(v.textValue())) {
                    throw new QmpException("Parameter '" + name + "' does not accept value '" + v.textValue() + "'");
                }
                out.put(key, v.textValue());
            }
        };
    }

    public static Type listOf(Type element) {
        return new Type() {
            @Override
            void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
                if (!v.isArray()) throw typeError(name, "array");
                for (int i = 0; i < v.size(); i++) {
                    element.flatten(name + "[" + i + "]", key + "." + i, v.get(i), out);
                }
            }
        };
    }

    /** An alternate of a string and a list of strings (our iothread extension): flattens as {@code k=v} or {@code k.i=v}. */
    public static Type strOrStrList() {
        Type list = listOf(STR);
        return new Type() {
            @Override
            void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
                if (v.isTextual()) {
                    STR.flatten(name, key, v, out);
                } else if (v.isArray()) {
                    list.flatten(name, key, v, out);
                } else {
                    throw typeError(name, "string or array of strings");
                }
            }
        };
    }

    /**
     * QAPI's BlockdevRef, an alternate of a node-name and an inline BlockdevOptions, restricted to the node-name:
     * children are created with their own blockdev-add first.
     */
    public static Type nodeRef() {
        return new Type() {
            @Override
            void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
                if (v.isObject()) {
                    throw new QmpException("Parameter '" + name + "': inline child definitions are not supported;"
                            + " create the child with its own blockdev-add and give its node-name");
                }
                if (!v.isTextual()) throw typeError(name, "BlockdevRef");
                out.put(key, v.textValue());
            }
        };
    }

    public record Member(String name, Type type, boolean optional) {}

    public static Member required(String name, Type type) {
        return new Member(name, type, false);
    }

    public static Member optional(String name, Type type) {
        return new Member(name, type, true);
    }

    public static Struct struct(Member... members) {
        return new Struct(List.of(members));
    }

    /** An object with known members; any other member is an error. */
    public static final class Struct extends Type {
        private final List<Member> members;

        Struct(List<Member> members) {
            this.members = members;
        }

        Struct plus(Struct other) {
            List<Member> all = new ArrayList<>(members);
            all.addAll(other.members);
            return new Struct(all);
        }

        @Override
        void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
            if (!v.isObject()) throw typeError(name, "object");
            Set<String> known = new LinkedHashSet<>();
            for (Member m : members) {
                known.add(m.name());
                JsonNode mv = v.get(m.name());
                if (mv == null) {
                    if (!m.optional()) throw new QmpException("Parameter '" + join(name, m.name()) + "' is missing");
                    continue;
                }
                m.type().flatten(join(name, m.name()), join(key, m.name()), mv, out);
            }
            for (Map.Entry<String, JsonNode> f : v.properties()) {
                if (!known.contains(f.getKey())) {
                    throw new QmpException("Parameter '" + join(name, f.getKey()) + "' is unexpected");
                }
            }
        }
    }

    /**
     * A flat union: the members of {@code base} plus those of the branch that the string member {@code discriminator}
     * selects. A value without a branch is refused with {@code unsupported.apply(value)}: QAPI knows more branches
     * (drivers, export types, socket address types) than jvhost implements.
     */
    public static Type union(Struct base, String discriminator, Map<String, Struct> branches,
                             Function<String, String> unsupported) {
        Map<String, Struct> merged = new LinkedHashMap<>();
        for (Map.Entry<String, Struct> e : branches.entrySet()) merged.put(e.getKey(), base.plus(e.getValue()));
        return new Type() {
            @Override
            void flatten(String name, String key, JsonNode v, Map<String, String> out) throws QmpException {
                if (!v.isObject()) throw typeError(name, "object");
                JsonNode d = v.get(discriminator);
                if (d == null) throw new QmpException("Parameter '" + join(name, discriminator) + "' is missing");
                if (!d.isTextual()) throw typeError(join(name, discriminator), "string");
                Struct s = merged.get(d.textValue());
                if (s == null) throw new QmpException(unsupported.apply(d.textValue()));
                s.flatten(name, key, v, out);
            }
        };
    }

    private static String join(String prefix, String member) {
        return prefix.isEmpty() ? member : prefix + "." + member;
    }

    private static QmpException typeError(String name, String expected) {
        return new QmpException("Invalid parameter type for '" + (name.isEmpty() ? "arguments" : name)
                + "', expected: " + expected);
    }
}
