package io.jvhost.daemon.qmp;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.core.json.JsonWriteFeature;
import com.fasterxml.jackson.core.util.MinimalPrettyPrinter;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectWriter;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;

/**
 * JSON as QEMU's QMP speaks it. Input: RFC 8259 plus QEMU's single-quoted strings; a key given twice is an error
 * (QEMU: "duplicate key"). Output: one text per line ending in CR LF, {@code ": "} and {@code ", "} separators
 * and non-ASCII escaped as {@code \\uXXXX}, as {@code qobject_to_json} writes it, so that byte-comparing clients
 * and humans see what QEMU would send.
 */
public final class Json {
    public static final JsonNodeFactory NODES = JsonNodeFactory.instance;

    private static final ObjectMapper MAPPER;
    private static final ObjectWriter WRITER;
    private static final byte[] CRLF = {'\r', '\n'};

    static {
        JsonFactory f = JsonFactory.builder()
                .enable(JsonReadFeature.ALLOW_SINGLE_QUOTES)
                .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
                .enable(JsonWriteFeature.ESCAPE_NON_ASCII)
                // The framer enforces the real limits; these only back them up.
                .streamReadConstraints(StreamReadConstraints.builder().maxNestingDepth(1000).build())
                .build();
        MAPPER = new ObjectMapper(f)
                .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
                .enable(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY);
        WRITER = MAPPER.writer(new QemuSpacing());
    }

    private Json() {}

    public static ObjectNode object() {
        return NODES.objectNode();
    }

    public static ArrayNode array() {
        return NODES.arrayNode();
    }

    /** Parses one JSON text; the message of the exception is meant for the client. */
    public static JsonNode parse(byte[] b, int off, int len) throws IOException {
        return MAPPER.readTree(b, off, len);
    }

    /** A parse failure as QEMU words it: "JSON parse error, ..." without Jackson's source location. */
    public static String parseError(IOException e) {
        String m = e instanceof JsonProcessingException jpe ? jpe.getOriginalMessage() : e.getMessage();
        if (m == null) m = e.getClass().getSimpleName();
        int nl = m.indexOf('\n');
        if (nl >= 0) m = m.substring(0, nl);
        return "JSON parse error, " + m.strip();
    }

    /** One QMP line: the text and CR LF. */
    public static byte[] encodeLine(JsonNode n) {
        byte[] text;
        try {
            text = WRITER.writeValueAsBytes(n);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot encode " + n.getNodeType(), e);   // a tree always encodes
        }
        byte[] line = java.util.Arrays.copyOf(text, text.length + 2);
        System.arraycopy(CRLF, 0, line, text.length, 2);
        return line;
    }

    /** The text alone (logs, tests). */
    public static String toString(JsonNode n) {
        byte[] l = encodeLine(n);
        return new String(l, 0, l.length - 2, java.nio.charset.StandardCharsets.US_ASCII);
    }

    /** {"a": 1, "b": [2, 3]}: QEMU's compact spacing. Stateless, so one instance serves every thread. */
    private static final class QemuSpacing extends MinimalPrettyPrinter {
        private static final long serialVersionUID = 1L;

        @Override
        public void writeObjectFieldValueSeparator(JsonGenerator g) throws IOException {
            g.writeRaw(": ");
        }

        @Override
        public void writeObjectEntrySeparator(JsonGenerator g) throws IOException {
            g.writeRaw(", ");
        }

        @Override
        public void writeArrayValueSeparator(JsonGenerator g) throws IOException {
            g.writeRaw(", ");
        }
    }
}
