package io.jvhost.block;

import static io.jvhost.block.TestSupport.*;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** block_resize's block layer part: truncate through drivers, filters following their child, device callbacks. */
class ResizeTest {
    @TempDir
    Path dir;
    final BlockNodes nodes = new BlockNodes();
    final List<BlockBackend> backends = new ArrayList<>();

    @AfterEach
    void tearDown() {
        for (BlockBackend b : backends) b.close();
        nodes.close();
    }

    /** Records the device callbacks in order. */
    static final class Ops implements BlockDevOps {
        final List<String> calls = Collections.synchronizedList(new ArrayList<>());

        @Override
        public void drainedBegin() {
            calls.add("begin");
        }

        @Override
        public void drainedEnd() {
            calls.add("end");
        }

        @Override
        public void resized() {
            calls.add("resized");
        }
    }

    BlockBackend backend(BlockDriverState bs, Ops ops) {
        BlockBackend b = new BlockBackend(bs, true);
        backends.add(b);
        b.setDevOps(ops);
        return b;
    }

    static int write(BlockBackend b, long off, int len) throws Exception {
        return b.writeSync(off, ByteBuffer.allocate(len), 0, 10, TimeUnit.SECONDS);
    }

    @Test
    void nullCoGrowsAndShrinksAndTellsTheDeviceAfterTheDrainedSection() throws Exception {
        BlockDriverState n = nodes.add(opts("driver", "null-co", "node-name", "n", "size", "1M"));
        Ops ops = new Ops();
        BlockBackend b = backend(n, ops);
        assertEquals(-Errno.EIO, write(b, 1 << 20, 512), "past the end before the resize");
        b.truncate(2 << 20);
        assertEquals(2 << 20, b.getLength());
        assertEquals(List.of("begin", "end", "resized"), ops.calls);
        assertEquals(0, write(b, 1 << 20, 512), "the new space is usable");
        n.truncate(4096);
        assertEquals(4096, n.getLength());
        assertEquals(-Errno.EIO, write(b, 4096, 512));
        assertEquals(List.of("begin", "end", "resized", "begin", "end", "resized"), ops.calls);
    }

    @Test
    void fileGrowsAndShrinksOnDisk() throws Exception {
        Path img = patternFile(dir, "f.img", 8192);
        BlockDriverState f = nodes.add(fileOpts("f", img));
        Ops ops = new Ops();
        BlockBackend b = backend(f, ops);
        b.truncate(65536);
        assertEquals(65536, Files.size(img));
        assertEquals(65536, f.getLength());
        assertEquals(0, write(b, 61440, 4096));
        ByteBuffer r = ByteBuffer.allocate(16);
        assertEquals(0, b.readSync(0, r, 10, TimeUnit.SECONDS));
        assertEquals(pat(0), r.get(0), "existing data is kept");
        b.truncate(4096);
        assertEquals(4096, Files.size(img));
        assertEquals(List.of("begin", "end", "resized", "begin", "end", "resized"), ops.calls);
    }

    @Test
    void rawAndThrottleFollowTheirChild() throws Exception {
        nodes.add(opts("driver", "null-co", "node-name", "n", "size", "1M"));
        nodes.addThrottleGroup(opts("id", "g", "x-iops-total", "100000"));
        BlockDriverState t = nodes.add(opts("driver", "throttle", "node-name", "t", "throttle-group", "g", "file", "n"));
        BlockDriverState raw = nodes.add(opts("driver", "raw", "node-name", "r", "file", "t"));
        Ops ops = new Ops();
        BlockBackend b = backend(raw, ops);
        // Resizing the leaf by name: the filters above take the new length, then the device hears of it.
        nodes.get("n").truncate(2 << 20);
        assertEquals(2 << 20, t.getLength());
        assertEquals(2 << 20, raw.getLength());
        assertTrue(ops.calls.contains("resized"), ops.calls.toString());
        assertEquals(0, write(b, (2 << 20) - 512, 512));
        // Resizing the top resizes all the way down.
        b.truncate(3 << 20);
        assertEquals(3 << 20, nodes.get("n").getLength());
        assertEquals(3 << 20, t.getLength());
        assertEquals(3 << 20, b.getLength());
    }

    @Test
    void refusals() throws Exception {
        nodes.add(opts("driver", "null-co", "node-name", "n", "size", "1M"));
        BlockDriverState win = nodes.add(opts("driver", "raw", "node-name", "w", "file", "n", "size", "4096"));
        BlockException e = assertThrows(BlockException.class, () -> win.truncate(8192));
        assertEquals("Cannot resize a raw node with size/offset", e.getMessage());
        assertEquals(4096, win.getLength());
        Path img = patternFile(dir, "ro.img", 4096);
        BlockDriverState ro = nodes.add(fileOpts("ro", img, "read-only", "on"));
        e = assertThrows(BlockException.class, () -> ro.truncate(8192));
        assertTrue(e.getMessage().contains("read only"), e.getMessage());
        assertEquals(4096, Files.size(img));
        assertThrows(BlockException.class, () -> nodes.get("n").truncate(-1));
        assertEquals(1 << 20, nodes.get("n").getLength());
    }
}
