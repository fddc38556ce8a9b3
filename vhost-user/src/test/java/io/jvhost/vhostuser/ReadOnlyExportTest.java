package io.jvhost.vhostuser;

import io.jvhost.block.BlockBackend;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockNodes;
import io.jvhost.iothread.AioContext;
import io.jvhost.vhostuser.frontend.BlkRequest;
import io.jvhost.vhostuser.frontend.DriverQueue;
import io.jvhost.vhostuser.frontend.GuestMemory;
import io.jvhost.vhostuser.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static io.jvhost.vhostuser.frontend.VhostUserProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

/**
 * A read-only export never writes its image, whatever the guest sends: the image file is mode 0444 and the file
 * node opens it O_RDONLY (checked in /proc/self/fdinfo, since root would not be stopped by the mode); writes,
 * FUA writes, discards and write-zeroes (with and without UNMAP, direct and indirect) all fail with IOERR, reads
 * still return the image's data, and afterwards the image is byte for byte what it was, with the same size and
 * modification time. The export advertises VIRTIO_BLK_F_RO and creates its socket 0600.
 */
@Timeout(60)
class ReadOnlyExportTest {
    static final long MIB = 1L << 20;

    @TempDir
    Path dir;

    @Test
    void readOnlyExportNeverWritesTheImage() throws Exception {
        Path image = dir.resolve("ro.img");
        byte[] content = TestExport.pattern((int) (8 * MIB), 42);
        Files.write(image, content);
        Files.setPosixFilePermissions(image, PosixFilePermissions.fromString("r--r--r--"));
        FileTime mtime = Files.getLastModifiedTime(image);

        Path socket = dir.resolve("ro.sock");
        BlockNodes nodes = new BlockNodes();
        AioContext main = AioContext.newMainLoop("ro-main");
        AioContext io = AioContext.newIoThread("t-io-ro"); // "t-io": ThreadRuleTest checks every queue of the suite
        VhostUserBlkExport export = null;
        try (GuestMemory mem = GuestMemory.twoRegions(16 * MIB)) {
            BlockDriverState node = nodes.add(Map.of("driver", "file", "node-name", "ro", "filename", image.toString(), "read-only", "on"));
            BlockBackend blk = new BlockBackend(node, false);
            export = new VhostUserBlkExport(new BlkExportConfig("ro", socket.toString(), -1, 1, 512, false, null), blk, main, List.of(io));
            export.start();
            assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(socket), "socket mode");

            List<String> modes = accessModes(image);
            assertFalse(modes.isEmpty(), "the node keeps the image open");
            for (String m : modes) assertEquals("O_RDONLY", m, "every fd of the image is read-only: " + modes);

            try (VhostUserFrontend fe = VhostUserFrontend.connect(socket, mem)) {
                VhostUserFrontend.Negotiated neg = fe.handshake(new VhostUserFrontend.Options());
                assertTrue((neg.offeredFeatures() & bit(BLK_F_RO)) != 0, "VIRTIO_BLK_F_RO offered");
                DriverQueue q = fe.queue(0);
                byte[] junk = TestExport.pattern(64 * 1024, 7);
                List<BlkRequest> hostile = new ArrayList<>();
                for (boolean indirect : new boolean[] {false, true}) {
                    hostile.add(BlkRequest.write(0, junk).indirect(indirect));
                    hostile.add(BlkRequest.write(8 * 1024, new byte[4096]).segments(4).indirect(indirect));
                    hostile.add(BlkRequest.writeFua(64, junk).indirect(indirect));
                    hostile.add(BlkRequest.discard(0, 2048).indirect(indirect));
                    hostile.add(BlkRequest.writeZeroes(0, 2048, true).indirect(indirect));
                    hostile.add(BlkRequest.writeZeroes(4096, 2048, false).indirect(indirect));
                }
                for (BlkRequest r : hostile) q.submit(r);
                q.awaitAll(hostile, TestExport.T);
                for (BlkRequest r : hostile) assertEquals(BLK_S_IOERR, r.status(), () -> "refused on a read-only export: " + r);

                // Reads still work and see the image as it was.
                BlkRequest rd = q.await(q.submit(BlkRequest.read(0, 64 * 1024)), TestExport.T);
                assertEquals(BLK_S_OK, rd.status());
                assertArrayEquals(java.util.Arrays.copyOf(content, 64 * 1024), rd.data());
                BlkRequest fl = q.await(q.submit(BlkRequest.flush()), TestExport.T);
                assertTrue(fl.status() == BLK_S_OK || fl.status() == BLK_S_IOERR, "flush answered: " + fl);
            }
        } finally {
            if (export != null) export.close();
            main.close();
            io.close();
            nodes.close();
        }
        assertArrayEquals(content, Files.readAllBytes(image), "image content unchanged");
        assertEquals(content.length, Files.size(image), "image size unchanged");
        assertEquals(mtime, Files.getLastModifiedTime(image), "image never written (mtime)");
    }

    /** O_RDONLY / O_WRONLY / O_RDWR of every fd of this process that refers to {@code file}. */
    static List<String> accessModes(Path file) throws IOException {
        List<String> out = new ArrayList<>();
        String target = file.toRealPath().toString();
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            for (Path p : (Iterable<Path>) s::iterator) {
                String link;
                try {
                    link = Files.readSymbolicLink(p).toString();
                } catch (IOException e) {
                    continue; // closed meanwhile
                }
                if (!link.equals(target)) continue;
                for (String line : Files.readAllLines(Path.of("/proc/self/fdinfo/" + p.getFileName()))) {
                    if (!line.startsWith("flags:")) continue;
                    int acc = Integer.parseInt(line.substring(6).trim(), 8) & 3;
                    out.add(acc == 0 ? "O_RDONLY" : acc == 1 ? "O_WRONLY" : "O_RDWR");
                }
            }
        }
        return out;
    }
}
