package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class BlockNodesTest {
    @TempDir
    Path dir;
    final BlockNodes nodes = new BlockNodes();

    @AfterEach
    void tearDown() {
        nodes.close();
    }

    void assertRefused(Map<String, String> opts, String expectedInMessage) {
        BlockException e = assertThrows(BlockException.class, () -> nodes.add(opts));
        assertTrue(e.getMessage().startsWith("blockdev: "), e.getMessage());
        assertTrue(e.getMessage().contains(expectedInMessage), e.getMessage());
    }

    @Test
    void optionErrorsNameTheOption() throws Exception {
        Path img = patternFile(dir, "x.img", 4096);
        assertRefused(Map.of("driver", "foo", "node-name", "a"), "unknown driver 'foo'");
        assertRefused(Map.of("node-name", "a"), "'driver'");
        assertRefused(Map.of("driver", "file", "filename", img.toString()), "'node-name'");
        assertRefused(fileOpts("a", img, "bogus", "1"), "unknown option 'bogus'");
        assertRefused(fileOpts("a", img, "size", "1M"), "unknown option 'size'");
        assertRefused(Map.of("driver", "null-co", "node-name", "a", "size", "1M", "filename", "/x"), "unknown option 'filename'");
        assertRefused(fileOpts("a", img, "read-only", "maybe"), "'read-only'");
        assertRefused(fileOpts("a", img, "cache.direct", "2"), "'cache.direct'");
        assertRefused(fileOpts("a", img, "aio", "native"), "aio 'native'");
        assertRefused(fileOpts("a", img, "aio", "fast"), "'aio'");
        assertRefused(fileOpts("a", img, "locking", "sometimes"), "'locking'");
        assertRefused(Map.of("driver", "file", "node-name", "a"), "'filename'");
        assertRefused(Map.of("driver", "null-co", "node-name", "a"), "'size'");
        assertRefused(Map.of("driver", "null-co", "node-name", "a", "size", "lots"), "'size'");
        assertRefused(Map.of("driver", "null-co", "node-name", "a", "size", "1M", "latency-ns", "-5"), "'latency-ns'");
        assertRefused(Map.of("driver", "null-co", "node-name", "a", "size", "1M", "read-zeroes", "perhaps"), "'read-zeroes'");
        assertRefused(Map.of("driver", "null-co", "node-name", "1abc", "size", "1M"), "invalid node-name '1abc'");
        assertRefused(Map.of("driver", "null-co", "node-name", "a b", "size", "1M"), "invalid node-name");
        assertRefused(Map.of("driver", "null-co", "node-name", "a".repeat(32), "size", "1M"), "invalid node-name");
        Map<String, String> nullValue = new HashMap<>(fileOpts("a", img));
        nullValue.put("aio", null);
        assertRefused(nullValue, "'aio'");
        assertTrue(nodes.all().isEmpty(), "a refused node must not be registered");
    }

    @Test
    void missingFileIsNeverCreated() {
        Path missing = dir.resolve("missing.img");
        assertRefused(fileOpts("a", missing), "file '" + missing + "' does not exist");
        assertFalse(Files.exists(missing));
        assertRefused(fileOpts("a", dir), "is a directory");
    }

    @Test
    void openingNeverTruncates() throws Exception {
        Path img = patternFile(dir, "keep.img", 12345);
        nodes.add(fileOpts("rw", img));
        nodes.add(fileOpts("ro", img, "read-only", "on", "force-share", "on")); // a plain reader would meet rw's lock
        nodes.add(fileOpts("rw2", img, "locking", "off", "aio", "threads", "cache.direct", "off"));
        assertEquals(12345, Files.size(img));
        assertEquals(12345, nodes.get("rw").getLength());
        byte[] b = Files.readAllBytes(img);
        for (int i = 0; i < b.length; i++) assertEquals(pat(i), b[i]);
    }

    @Test
    void nodeNamesAreUniqueAndLookedUp() throws Exception {
        BlockDriverState a = nodes.add(Map.of("driver", "null-co", "node-name", "disk-0.a_b", "size", "64K",
                "read-only", "on"));
        assertSame(a, nodes.get("disk-0.a_b"));
        assertEquals("disk-0.a_b", a.nodeName());
        assertTrue(a.isReadOnly());
        assertNull(nodes.get("nope"));
        assertRefused(Map.of("driver", "null-co", "node-name", "disk-0.a_b", "size", "1M"), "duplicate node name 'disk-0.a_b'");
        BlockDriverState b = nodes.add(Map.of("driver", "null-co", "node-name", "other", "size", "1M", "read-only", "off",
                "cache.direct", "on"));
        assertFalse(b.isReadOnly());
        assertEquals(java.util.List.of(a, b), java.util.List.copyOf(nodes.all()));
        assertThrows(UnsupportedOperationException.class, () -> nodes.all().clear());
    }

    @Test
    void addAfterCloseIsRefused() {
        nodes.close();
        assertThrows(IllegalStateException.class,
                () -> nodes.add(Map.of("driver", "null-co", "node-name", "a", "size", "1M")));
        nodes.close(); // idempotent
    }
}
