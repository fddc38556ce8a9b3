package io.jvhost.testvm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.parallel.ResourceLock;

/**
 * Boots a Linux guest whose only disk is a vhost-user-blk device served by the back-end under test
 * ({@code -Djvhost.testvm.backend=jvhost|qsd}), runs the guest's {@code basic} test (raw O_DIRECT
 * pattern I/O on two queues, then an ext filesystem) and checks the image on the host afterwards.
 */
@ResourceLock(TestVm.VM_LOCK)
@Timeout(value = 20, unit = TimeUnit.MINUTES) // includes a first-time guest build (kernel download)
class GuestDiskTest {
    private static final long IMAGE_BYTES = 256 * HostDisk.MIB;
    private static final int QUEUES = 2;
    private static final long FS_MIB = 64;
    private static final long PATTERN_MIB = 128;
    private static final String HELLO = "hello from the jvhost test guest\n";

    @Test
    void basicIoAndFilesystem() throws Exception {
        GuestArtifacts guest = GuestArtifacts.get();
        Backend.Kind kind = Backend.Kind.fromSystemProperty();
        Path run = TestVm.newRunDir("GuestDiskTest-basic-" + kind.name().toLowerCase());
        Path image = HostDisk.createSparse(run.resolve("disk.img"), IMAGE_BYTES);
        Path sockets = TestVm.newSocketDir();
        Path socket = sockets.resolve("vhost.sock");
        Path pidFile = run.resolve("backend.pid");
        long t0 = System.nanoTime();
        try (Backend backend = Backend.start(kind, Backend.vhostUserBlkArgs(image, socket, QUEUES, pidFile),
                socket, pidFile, run, TestVm.timeout(Duration.ofSeconds(60)))) {
            long tBackend = System.nanoTime();
            GuestResult result;
            try (QemuGuest vm = QemuGuest.start(new QemuGuest.Options()
                    .name("basic")
                    .runDir(run)
                    .artifacts(guest)
                    .test("basic")
                    .param("queues", QUEUES)
                    .param("sectors", IMAGE_BYTES / 512)
                    .param("fs_mib", FS_MIB)
                    .param("pattern_mib", PATTERN_MIB)
                    .cpus(2)
                    .memoryMiB(512)
                    .watchdog(TestVm.timeout(Duration.ofSeconds(200)))
                    .disk(QemuGuest.VhostUserBlkDisk.of(socket, QUEUES)))) {
                Object status = vm.qmp().execute("query-status", TestVm.timeout(Duration.ofSeconds(30)));
                assertEquals("running", ((Map<?, ?>) status).get("status"), "QMP query-status: " + status);

                result = vm.awaitResult(TestVm.timeout(Duration.ofSeconds(240)));
                System.out.println(result.describe());
                assertTrue(result.passed(), () -> result.describe() + "back-end log " + backend.log() + ":\n"
                        + TestVm.tail(backend.log(), 30));

                Optional<Integer> exit = vm.awaitExit(TestVm.timeout(Duration.ofSeconds(60)));
                assertTrue(exit.isPresent(), "QEMU did not exit after the guest powered off; " + vm.serialLog());
                assertEquals(0, exit.get(), "QEMU exit status; " + vm.stderrLog() + ":\n" + TestVm.tail(vm.stderrLog(), 20));
            }
            long tGuest = System.nanoTime();

            // What the guest saw.
            assertEquals(String.valueOf(QUEUES), result.value("JVTEST-GUEST vda", "queues").orElse(null));
            assertEquals(String.valueOf(IMAGE_BYTES), result.value("JVTEST-GUEST vda", "bytes").orElse(null));
            assertEquals(guest.patternSha256(), result.value("JVTEST-CHECKSUM pattern", "sha256").orElse(null),
                    "checksum the guest read back");

            // The image, on the host, while the back-end still runs (the guest only disconnected).
            long patternOffset = PATTERN_MIB * HostDisk.MIB;
            assertEquals(guest.patternSha256(), HostDisk.sha256(image, patternOffset, guest.patternBytes()),
                    "pattern at " + patternOffset + " in " + image);
            assertTrue(HostDisk.hasExtMagic(image), "no ext superblock magic 0xEF53 at byte 1080 of " + image);
            long fsEnd = FS_MIB * HostDisk.MIB;
            assertNoData(image, fsEnd, patternOffset - fsEnd);
            long patternEnd = patternOffset + guest.patternBytes();
            assertNoData(image, patternEnd, IMAGE_BYTES - patternEnd);

            Optional<Path> debugfs = HostDisk.debugfs();
            if (debugfs.isPresent()) {
                assertEquals(HELLO, new String(HostDisk.debugfsCat(debugfs.get(), image, "/hello.txt"),
                        StandardCharsets.UTF_8), "/hello.txt via debugfs");
                assertEquals("jvhost file 7\n", new String(HostDisk.debugfsCat(debugfs.get(), image, "/dir/f7"),
                        StandardCharsets.UTF_8), "/dir/f7 via debugfs");
                byte[] big = HostDisk.debugfsCat(debugfs.get(), image, "/big.bin");
                assertArrayEquals(HostDisk.read(guest.pattern(), 0, (int) (2 * HostDisk.MIB)), big,
                        "/big.bin via debugfs must be the first 2 MiB of the pattern");
            } else {
                System.out.println("WARNING: debugfs (e2fsprogs) not found; file contents not checked on the host");
            }

            assertTrue(backend.isAlive(), "back-end exited when the guest disconnected; " + backend.log() + ":\n"
                    + TestVm.tail(backend.log(), 30));
            int status = backend.stop(TestVm.timeout(Duration.ofSeconds(30)));
            assertEquals(0, status, "back-end exit status after SIGTERM; " + backend.log() + ":\n"
                    + TestVm.tail(backend.log(), 30));
            long tEnd = System.nanoTime();
            if (!Boolean.getBoolean("jvhost.testvm.keepImages")) {
                java.nio.file.Files.delete(image); // kept when the test fails, for post-mortem
            }
            System.out.printf("GuestDiskTest[%s]: back-end ready %d ms, guest result %d ms, guest run %d ms,"
                            + " host checks + stop %d ms, total %d ms; logs in %s%n",
                    kind, ms(tBackend - t0), result.elapsed().toMillis(), ms(tGuest - tBackend),
                    ms(tEnd - tGuest), ms(tEnd - t0), run);
        } finally {
            TestVm.deleteTree(sockets);
        }
    }

    private static void assertNoData(Path image, long offset, long length) throws Exception {
        OptionalLong nz = HostDisk.firstNonZero(image, offset, length);
        if (nz.isPresent()) {
            fail("unexpected data at byte " + nz.getAsLong() + " of " + image + " (region [" + offset + ", "
                    + (offset + length) + ") must stay zero)");
        }
    }

    private static long ms(long nanos) {
        return nanos / 1_000_000;
    }
}
