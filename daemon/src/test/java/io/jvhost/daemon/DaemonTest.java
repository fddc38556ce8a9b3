package io.jvhost.daemon;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@link Daemon} in-process: real block nodes, iothreads, main loop and sockets. */
class DaemonTest {

    private static List<Thread> threadsNamed(String prefix) {
        return Thread.getAllStackTraces().keySet().stream().filter(t -> t.getName().startsWith(prefix)).toList();
    }

    /** Waits (bounded) for the threads to end: AioContext.close() returns once the loop terminated. */
    private static void assertThreadsEnd(List<Thread> threads) throws InterruptedException {
        for (Thread t : threads) {
            t.join(10_000);
            assertFalse(t.isAlive(), t.getName() + " still runs after close");
        }
    }

    @Test
    void startsServesAndStopsEverything(@TempDir Path dir) throws Exception {
        Path s0 = dir.resolve("e0.sock");
        Path s1 = dir.resolve("e1.sock");
        Path pidfile = dir.resolve("jvhost.pid");
        DaemonConfig cfg = Options.parse(new String[] {
                "--blockdev", "null-co,node-name=n0,size=64M",
                "--blockdev", "null-co,node-name=n1,size=1M,read-zeroes=on",
                "--object", "iothread,id=dt-io0",
                "--object", "iothread,id=dt-io1",
                "--export", "vhost-user-blk,id=dte0,node-name=n0,addr.type=unix,addr.path=" + s0 + ",num-queues=2,writable=on",
                "--export", "vhost-user-blk,id=dte1,node-name=n1,addr.type=unix,addr.path=" + s1
                        + ",num-queues=3,iothread.0=dt-io0,iothread.1=dt-io1",
                "--pidfile", pidfile.toString()});

        try (Daemon d = Daemon.start(cfg)) {
            assertEquals(2, d.exports().size());
            for (Path s : List.of(s0, s1)) {
                assertTrue(Files.exists(s, LinkOption.NOFOLLOW_LINKS), s + " missing");
                assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(s));
                long features = VhostUserProbe.getFeatures(s, 10_000);
                assertTrue((features & VhostUserProbe.VIRTIO_F_VERSION_1) != 0, Long.toHexString(features));
                assertTrue((features & VhostUserProbe.VHOST_USER_F_PROTOCOL_FEATURES) != 0, Long.toHexString(features));
            }
            assertEquals(ProcessHandle.current().pid() + "\n", Files.readString(pidfile, StandardCharsets.US_ASCII));
            // No iothread option: one new iothread per queue; with a list, no extra threads.
            assertEquals(1, threadsNamed("dte0-vq0").size());
            assertEquals(1, threadsNamed("dte0-vq1").size());
            assertTrue(threadsNamed("dte1-vq").isEmpty());
            assertEquals(1, threadsNamed("dt-io0").size());
            assertEquals(1, threadsNamed("dt-io1").size());
        }
        assertFalse(Files.exists(s0, LinkOption.NOFOLLOW_LINKS));
        assertFalse(Files.exists(s1, LinkOption.NOFOLLOW_LINKS));
        assertFalse(Files.exists(pidfile));
        for (String prefix : List.of("dte0-vq", "dt-io0", "dt-io1")) {
            assertThreadsEnd(threadsNamed(prefix));
        }
    }

    /** The issue-3 drivers with QEMU's spelling: throttle groups as objects, raw and throttle nodes over a child. */
    @Test
    void throttleGroupsAndFilterNodesFromTheCommandLine(@TempDir Path dir) throws Exception {
        Path s = dir.resolve("tg.sock");
        DaemonConfig cfg = Options.parse(new String[] {
                "--object", "throttle-group,id=tg0,x-iops-total=1000,x-bps-total=10485760",
                "--blockdev", "null-co,node-name=base,size=64M,read-zeroes=on",
                "--blockdev", "raw,node-name=win,file=base,offset=1M,size=16M",
                "--blockdev", "throttle,node-name=thr,throttle-group=tg0,file=win",
                "--export", "vhost-user-blk,id=tge,node-name=thr,addr.type=unix,addr.path=" + s + ",writable=on"});
        try (Daemon d = Daemon.start(cfg)) {
            org.junit.jupiter.api.Assertions.assertNotNull(d.nodes().throttleGroup("tg0"));
            assertEquals("throttle", d.nodes().get("thr").driverName());
            assertEquals(16L << 20, d.nodes().get("thr").getLength(), "the raw window's size shows through the filter");
            assertTrue(VhostUserProbe.getFeatures(s, 10_000) != 0);
        }
        // Limits are checked with QEMU's rules; the error names --object.
        OptionsTest.Result bad = runFailing("--object", "throttle-group,id=tg1,x-iops-total=-5",
                "--blockdev", "null-co,node-name=n,size=1M", "--export",
                "vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=" + dir.resolve("x.sock"));
        assertEquals(1, bad.status(), bad.err());
        assertTrue(bad.err().startsWith("jvhost: --object"), bad.err());
        OptionsTest.Result dup = OptionsTest.check("--object", "iothread,id=x", "--object", "throttle-group,id=x",
                "--blockdev", "null-co,node-name=n,size=1M", "--export",
                "vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=" + dir.resolve("y.sock"));
        assertEquals(1, dup.status());
        assertTrue(dup.err().contains("id 'x' is already in use"), dup.err());
    }

    /** Main.run for a command line that must fail at start-up (it would serve forever otherwise). */
    private static OptionsTest.Result runFailing(String... args) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream(), err = new java.io.ByteArrayOutputStream();
        int status = Main.run(args, new java.io.PrintStream(out, true, StandardCharsets.UTF_8),
                new java.io.PrintStream(err, true, StandardCharsets.UTF_8));
        return new OptionsTest.Result(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @Test
    void iothreadsRunOnIoUringOnceAnAioIoUringNodeExists(@TempDir Path dir) throws Exception {
        Path img = dir.resolve("u.img");
        try (var f = new java.io.RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(1 << 20);
        }
        boolean forced = System.getProperty("jvhost.fdmon") != null;
        String uring = io.netty.channel.uring.IoUring.isAvailable() ? "io_uring" : "epoll";
        // The iothread comes first on the command line: nodes are opened first anyway.
        DaemonConfig cfg = Options.parse(new String[] {"--object", "iothread,id=du-io0",
                "--blockdev", "driver=file,node-name=n0,filename=" + img + ",aio=io_uring",
                "--export", "vhost-user-blk,id=due,node-name=n0,addr.type=unix,addr.path=" + dir.resolve("u.sock")});
        try (Daemon d = Daemon.start(cfg)) {
            for (Daemon.Iothread t : d.iothreadList()) {
                if (!forced) assertEquals(uring, t.ctx().fdMonitor(), t.spec().id());
            }
        }
        DaemonConfig plain = Options.parse(new String[] {"--object", "iothread,id=du-io1",
                "--blockdev", "null-co,node-name=n1,size=1M",
                "--export", "vhost-user-blk,id=due1,node-name=n1,addr.type=unix,addr.path=" + dir.resolve("u1.sock")});
        try (Daemon d = Daemon.start(plain)) {
            for (Daemon.Iothread t : d.iothreadList()) {
                if (!forced) assertEquals("epoll", t.ctx().fdMonitor(), t.spec().id());
            }
            assertEquals(1, d.iothreadList().size());
            assertEquals(1, threadsNamed("due1-vq0").size());
        }
    }

    @Test
    void staleSocketIsReplaced(@TempDir Path dir) throws Exception {
        Path s = dir.resolve("e.sock");
        DaemonConfig cfg = Options.parse(new String[] {"--blockdev", "null-co,node-name=n0,size=1M",
                "--export", "vhost-user-blk,id=dts,node-name=n0,addr.type=unix,addr.path=" + s});
        // First run leaves nothing behind; simulate a crash's leftover by binding a socket and not unlinking it.
        try (var ch = java.nio.channels.ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
            ch.bind(java.net.UnixDomainSocketAddress.of(s));
        }
        assertTrue(Files.exists(s, LinkOption.NOFOLLOW_LINKS));
        try (Daemon d = Daemon.start(cfg)) {
            assertTrue(VhostUserProbe.getFeatures(s, 10_000) != 0);
        }
        assertFalse(Files.exists(s, LinkOption.NOFOLLOW_LINKS));
    }

    @Test
    void refusesToReplaceAFileThatIsNotASocket(@TempDir Path dir) throws Exception {
        Path precious = dir.resolve("precious.txt");
        Files.writeString(precious, "keep me");
        DaemonConfig cfg = Options.parse(new String[] {"--blockdev", "null-co,node-name=n0,size=1M",
                "--export", "vhost-user-blk,id=dtp,node-name=n0,addr.type=unix,addr.path=" + precious});
        UsageException e = assertThrows(UsageException.class, () -> Daemon.start(cfg));
        assertEquals("--export: export 'dtp': " + precious + " exists and is not a socket", e.getMessage());
        assertEquals("keep me", Files.readString(precious));
    }

    @Test
    void blockLayerErrorsNameTheOptionAndCleanUp(@TempDir Path dir) throws Exception {
        Path s = dir.resolve("e.sock");
        Path pidfile = dir.resolve("pid");
        DaemonConfig cfg = Options.parse(new String[] {
                "--blockdev", "null-co,node-name=ok,size=1M",
                "--export", "vhost-user-blk,id=dtb0,node-name=ok,addr.type=unix,addr.path=" + s,
                "--blockdev", "file,node-name=bad,filename=" + dir.resolve("missing.img"),
                "--export", "vhost-user-blk,id=dtb1,node-name=bad,addr.type=unix,addr.path=" + dir.resolve("b.sock"),
                "--pidfile", pidfile.toString()});
        UsageException e = assertThrows(UsageException.class, () -> Daemon.start(cfg));
        assertTrue(e.getMessage().startsWith("--blockdev: "), e.getMessage());
        assertTrue(e.getMessage().contains("missing.img"), e.getMessage());
        assertFalse(Files.exists(pidfile));
        assertFalse(Files.exists(s, LinkOption.NOFOLLOW_LINKS));
        assertThreadsEnd(threadsNamed("jvhost-main"));
        assertThreadsEnd(threadsNamed("dtb0-vq"));
    }

    @Test
    void listenFailureNamesTheExport(@TempDir Path dir) throws Exception {
        Path s = dir.resolve("no-such-dir").resolve("e.sock");
        DaemonConfig cfg = Options.parse(new String[] {"--blockdev", "null-co,node-name=n0,size=1M",
                "--export", "vhost-user-blk,id=dtl,node-name=n0,addr.type=unix,addr.path=" + s});
        UsageException e = assertThrows(UsageException.class, () -> Daemon.start(cfg));
        assertTrue(e.getMessage().startsWith("--export: export 'dtl': cannot listen on " + s + ": "), e.getMessage());
        assertThreadsEnd(threadsNamed("dtl-vq"));
    }
}
