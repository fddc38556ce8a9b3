package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** Filter nodes referenced by node-name, child edges, throttle-group objects, blockdev-del rules. */
@Timeout(60)
class NodeGraphTest {
    @TempDir
    Path dir;
    static final long T_S = 20;
    final BlockNodes nodes = new BlockNodes();

    @AfterEach
    void tearDown() {
        nodes.close();
    }

    void refused(Map<String, String> o, String msg) {
        BlockException e = assertThrows(BlockException.class, () -> nodes.add(o));
        assertTrue(e.getMessage().startsWith("blockdev: "), e.getMessage());
        assertTrue(e.getMessage().contains(msg), e.getMessage());
    }

    void groupRefused(Map<String, String> o, String msg) {
        BlockException e = assertThrows(BlockException.class, () -> nodes.addThrottleGroup(o));
        assertTrue(e.getMessage().startsWith("object: "), e.getMessage());
        assertTrue(e.getMessage().contains(msg), e.getMessage());
    }

    @Test
    void rawWindowMapsOffsetsOntoItsChild() throws Exception {
        Path p = patternFile(dir, "raw.img", 1 << 20);
        BlockDriverState f = nodes.add(fileOpts("f", p));
        BlockDriverState r = nodes.add(opts("driver", "raw", "node-name", "r", "file", "f", "offset", "64K", "size", "512K"));
        assertEquals("raw", r.driverName());
        assertEquals(512 << 10, r.getLength());
        assertEquals(1, r.children().size());
        BdrvChild edge = r.children().get(0);
        assertEquals("file", edge.name());
        assertSame(f, edge.bs());
        assertEquals(List.of(edge), f.parentEdges());

        BlockBackend blk = new BlockBackend(r, true);
        ByteBuffer b = ByteBuffer.allocateDirect(4096);
        assertEquals(0, await(cb -> blk.preadv(1000, iov(b), cb)));
        for (int i = 0; i < 4096; i++) assertEquals(pat(65536 + 1000 + i), b.get(i), "byte " + i);
        ByteBuffer w = ByteBuffer.allocateDirect(512);
        for (int i = 0; i < 512; i++) w.put(i, (byte) 0x77);
        assertEquals(0, await(cb -> blk.pwritev(512, iov(w), 0, cb)));
        byte[] file = Files.readAllBytes(p);
        for (int i = 0; i < 2048; i++) {
            int off = 65536 + i;
            assertEquals(i >= 512 && i < 1024 ? (byte) 0x77 : pat(off), file[off], "file byte " + off);
        }
        // The window's end is enforced by the raw node, not the file.
        assertEquals(-Errno.EIO, await(cb -> blk.preadv((512 << 10) - 100, iov(b), cb)));
        // The counters drop right after the callbacks return.
        r.awaitIdle(T_S, java.util.concurrent.TimeUnit.SECONDS);
        f.awaitIdle(T_S, java.util.concurrent.TimeUnit.SECONDS);
        assertEquals(0, f.inFlight());
        assertEquals(0, r.inFlight());
        // Without size the window runs to the child's end.
        assertEquals((1 << 20) - 4096, nodes.add(opts("driver", "raw", "node-name", "r2", "file", "f", "offset", "4096")).getLength());
    }

    @Test
    void filterOptionErrors() throws Exception {
        Path p = patternFile(dir, "x.img", 65536);
        nodes.add(fileOpts("f", p));
        nodes.add(fileOpts("ro", p, "read-only", "on", "force-share", "on")); // coexists with writer f
        nodes.addThrottleGroup(opts("id", "g", "x-iops-total", "100"));
        refused(opts("driver", "raw", "node-name", "r"), "'file'");
        refused(opts("driver", "raw", "node-name", "r", "file", "nope"), "no node named 'nope'");
        refused(opts("driver", "raw", "node-name", "r", "file.driver", "file", "file.filename", p.toString()), "inline child");
        refused(opts("driver", "raw", "node-name", "r", "file", "f", "offset", "1M"), "offset");
        refused(opts("driver", "raw", "node-name", "r", "file", "f", "offset", "4096", "size", "64K"), "sum of offset");
        refused(opts("driver", "raw", "node-name", "r", "file", "f", "size", "1000"), "multiple of 512");
        refused(opts("driver", "raw", "node-name", "r", "file", "ro"), "read-only");
        refused(opts("driver", "raw", "node-name", "r", "file", "f", "throttle-group", "g"), "unknown option 'throttle-group'");
        refused(opts("driver", "throttle", "node-name", "t", "file", "f"), "'throttle-group'");
        refused(opts("driver", "throttle", "node-name", "t", "file", "f", "throttle-group", "h"), "no throttle group 'h'");
        refused(opts("driver", "throttle", "node-name", "t", "throttle-group", "g"), "'file'");
        assertEquals(2, nodes.all().size(), "refused nodes must not be registered");
        assertFalse(nodes.get("f").hasParents(), "a refused filter must not leave an edge behind");
        // Read-only filters over read-only nodes are fine.
        assertTrue(nodes.add(opts("driver", "raw", "node-name", "r", "file", "ro", "read-only", "on")).isReadOnly());
    }

    @Test
    void throttleGroupObjects() throws Exception {
        ThrottleGroup g = nodes.addThrottleGroup(opts("qom-type", "throttle-group", "id", "g0", "x-iops-total", "1000",
                "x-bps-write", "1048576", "x-iops-total-max", "2000", "x-iops-total-max-length", "3"));
        assertEquals("g0", g.id());
        assertEquals(Map.of("iops-total", 1000L, "bps-write", 1048576L, "iops-total-max", 2000L, "iops-total-max-length", 3L),
                g.limits());
        ThrottleGroup q = nodes.addThrottleGroup(opts("id", "g1", "limits.iops-read", "10", "limits.iops-size", "4096"));
        assertEquals(Map.of("iops-read", 10L, "iops-size", 4096L), q.limits());
        assertSame(g, nodes.throttleGroup("g0"));

        groupRefused(opts("x-iops-total", "1"), "'id'");
        groupRefused(opts("id", "g0", "x-iops-total", "1"), "duplicate id 'g0'");
        groupRefused(opts("id", "1x"), "invalid id");
        groupRefused(opts("id", "a", "qom-type", "iothread"), "not a throttle-group");
        groupRefused(opts("id", "a", "x-iops-total", "ten"), "'x-iops-total'");
        groupRefused(opts("id", "a", "x-iops-total", "1", "limits.iops-total", "2"), "both set");
        groupRefused(opts("id", "a", "x-iops-total", "10", "x-iops-read", "5"), "cannot be used at the same time");
        groupRefused(opts("id", "a", "x-bps-total-max", "10"), "require corresponding");
        groupRefused(opts("id", "a", "x-bps-total", "10", "x-bps-total-max", "5"), "cannot be lower");
        groupRefused(opts("id", "a", "x-bps-total", "10", "x-bps-total-max-length", "5"), "without burst rate");
        groupRefused(opts("id", "a", "x-bps-total", "10", "x-bps-total-max", "20", "x-bps-total-max-length", "0"), "cannot be 0");
        groupRefused(opts("id", "a", "x-iops-size", "512"), "iops size requires");
        groupRefused(opts("id", "a", "x-bps-total", "2000000000000000"), "must be within");
        groupRefused(opts("id", "a", "x-iops-totl", "5"), "unknown option 'x-iops-totl'");

        nodes.add(opts("driver", "null-co", "node-name", "n", "size", "1M"));
        BlockDriverState t = nodes.add(opts("driver", "throttle", "node-name", "t", "throttle-group", "g0", "file", "n"));
        assertEquals("throttle", t.driverName());
        assertEquals(1 << 20, t.getLength());
        BlockException e = assertThrows(BlockException.class, () -> nodes.removeThrottleGroup("g0"));
        assertTrue(e.getMessage().contains("in use"), e.getMessage());
        nodes.removeThrottleGroup("g1");
        assertNull(nodes.throttleGroup("g1"));
        nodes.remove("t");
        nodes.removeThrottleGroup("g0");
    }

    @Test
    void removeRefusesNodesInUseAndFreesChildren() throws Exception {
        nodes.add(opts("driver", "null-co", "node-name", "n", "size", "1M"));
        BlockDriverState r = nodes.add(opts("driver", "raw", "node-name", "r", "file", "n"));
        BlockException e = assertThrows(BlockException.class, () -> nodes.remove("n"));
        assertTrue(e.getMessage().contains("in use by node 'r'"), e.getMessage());
        BlockBackend blk = new BlockBackend(r, true);
        e = assertThrows(BlockException.class, () -> nodes.remove("r"));
        assertTrue(e.getMessage().contains("backend"), e.getMessage());
        BdrvChild jobEdge = r.attachParent(new BlockParent() {
            @Override
            public String parentName() {
                return "job 'x'";
            }
        }, "source");
        blk.close();
        e = assertThrows(BlockException.class, () -> nodes.remove("r"));
        assertTrue(e.getMessage().contains("job 'x'"), e.getMessage());
        jobEdge.detach();
        jobEdge.detach(); // idempotent
        nodes.remove("r");
        assertTrue(r.isClosed());
        assertNull(nodes.get("r"));
        assertFalse(nodes.get("n").hasParents(), "the removed node's edge to its child is gone");
        nodes.remove("n");
        assertTrue(nodes.all().isEmpty());
        assertThrows(BlockException.class, () -> nodes.remove("n"));
    }

    @Test
    void edgesCannotCloseACycleAndReplacementNeedsAMatchingNode() throws Exception {
        BlockDriverState a = nodes.add(opts("driver", "null-co", "node-name", "a", "size", "1M"));
        BlockDriverState b = nodes.add(opts("driver", "raw", "node-name", "b", "file", "a"));
        BlockDriverState c = nodes.add(opts("driver", "null-co", "node-name", "c", "size", "2M"));
        BlockDriverState d = nodes.add(opts("driver", "null-co", "node-name", "d", "size", "1M", "read-only", "on"));
        assertThrows(IllegalArgumentException.class, () -> a.attachChild("loop", b));
        assertThrows(IllegalArgumentException.class, () -> a.replaceInParents(c, null), "size differs");
        assertThrows(IllegalArgumentException.class, () -> a.replaceInParents(d, null), "read-only under a writer");
        BlockBackend blk = new BlockBackend(b, true);
        assertThrows(IllegalArgumentException.class, () -> blk.replaceRoot(c));
        assertThrows(IllegalArgumentException.class, () -> blk.replaceRoot(d));
        assertSame(b, blk.root());
        assertSame(a, b.children().get(0).bs());
    }
}
