package io.jvhost.daemon;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** jvhost as a real process: exit statuses, readiness, signals, files left behind. */
class ProcessTest {
    private static final long TIMEOUT_S = 60;
    private final List<Process> started = new ArrayList<>();

    /** A started daemon with its stdout/stderr drained by threads (a full pipe would block it). */
    static final class Daemon {
        final Process process;
        final List<String> out = new CopyOnWriteArrayList<>();
        final StringBuffer err = new StringBuffer();
        private final List<Waiter> waiters = new CopyOnWriteArrayList<>();
        private final CompletableFuture<Void> outDone = new CompletableFuture<>();
        private final CompletableFuture<Void> errDone = new CompletableFuture<>();

        private record Waiter(Predicate<String> p, CompletableFuture<String> f) {}

        Daemon(Process process) {
            this.process = process;
            Thread o = new Thread(() -> {
                try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                    for (String line; (line = r.readLine()) != null; ) {
                        out.add(line);
                        for (Waiter w : waiters) if (w.p().test(line)) w.f().complete(line);
                    }
                } catch (IOException e) {
                    // the process is gone
                } finally {
                    for (Waiter w : waiters) w.f().completeExceptionally(new IllegalStateException("stdout closed; stderr: " + err));
                    outDone.complete(null);
                }
            }, "stdout-" + process.pid());
            Thread e = new Thread(() -> {
                try (InputStream in = process.getErrorStream()) {
                    byte[] buf = new byte[4096];
                    for (int n; (n = in.read(buf)) > 0; ) err.append(new String(buf, 0, n, StandardCharsets.UTF_8));
                } catch (IOException ex) {
                    // the process is gone
                } finally {
                    errDone.complete(null);
                }
            }, "stderr-" + process.pid());
            o.setDaemon(true);
            e.setDaemon(true);
            o.start();
            e.start();
        }

        /** Waits (bounded) for a stdout line matching {@code p}, including lines already read. */
        String awaitLine(Predicate<String> p) throws Exception {
            CompletableFuture<String> f = new CompletableFuture<>();
            waiters.add(new Waiter(p, f));
            for (String line : out) if (p.test(line)) f.complete(line);
            if (outDone.isDone()) f.completeExceptionally(new IllegalStateException("stdout closed; stderr: " + err));
            return f.get(TIMEOUT_S, TimeUnit.SECONDS);
        }

        /** Waits (bounded) for the exit and for both streams to be drained; returns the status. */
        int awaitExit() throws Exception {
            assertTrue(process.waitFor(TIMEOUT_S, TimeUnit.SECONDS), "jvhost did not exit; stderr: " + err);
            outDone.get(TIMEOUT_S, TimeUnit.SECONDS);
            errDone.get(TIMEOUT_S, TimeUnit.SECONDS);
            return process.exitValue();
        }
    }

    static List<String> javaCommand(String... args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("--enable-native-access=ALL-UNNAMED");
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(Main.class.getName());
        cmd.addAll(List.of(args));
        return cmd;
    }

    private Daemon start(List<String> cmd) throws IOException {
        Process p = new ProcessBuilder(cmd).start();
        started.add(p);
        p.getOutputStream().close();
        return new Daemon(p);
    }

    @AfterEach
    void killLeftovers() throws InterruptedException {
        for (Process p : started) {
            if (p.isAlive()) {
                p.destroyForcibly();
                p.waitFor(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
    }

    private static String readiness(String id, Object address, int queues) {
        return "jvhost: export " + id + " listening on " + address + " (" + queues + (queues == 1 ? " queue)" : " queues)");
    }

    @Test
    void unknownOptionExitsWithStatus1() throws Exception {
        Daemon d = start(javaCommand("--bogus"));
        assertEquals(1, d.awaitExit());
        assertEquals("jvhost: unknown option '--bogus'\n", d.err.toString());
        assertTrue(d.out.isEmpty(), d.out.toString());
    }

    @Test
    void startupFailureExitsWithStatus1(@TempDir Path dir) throws Exception {
        Daemon d = start(javaCommand("--blockdev", "file,node-name=n0,filename=" + dir.resolve("missing.img"),
                "--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=" + dir.resolve("s")));
        assertEquals(1, d.awaitExit());
        String lastLine = d.err.toString().strip().lines().reduce((a, b) -> b).orElse("");
        assertTrue(lastLine.startsWith("jvhost: --blockdev: ") && lastLine.contains("missing.img"), d.err.toString());
        assertTrue(d.out.isEmpty(), d.out.toString());
        assertFalse(Files.exists(dir.resolve("s"), LinkOption.NOFOLLOW_LINKS));
    }

    @Test
    void sigtermStopsCleanlyWithStatus0(@TempDir Path dir) throws Exception {
        Daemon d = runUntilSignal(dir, ProcessTest::sigterm);
        assertTrue(d.err.toString().contains("received SIGTERM, shutting down"), d.err.toString());
    }

    @Test
    void sigintStopsCleanlyWithStatus0(@TempDir Path dir) throws Exception {
        Daemon d = runUntilSignal(dir, p -> {
            try {
                Process kill = new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).inheritIO().start();
                assertTrue(kill.waitFor(TIMEOUT_S, TimeUnit.SECONDS));
                assertEquals(0, kill.exitValue());
            } catch (IOException | InterruptedException e) {
                throw new AssertionError(e);
            }
        });
        assertTrue(d.err.toString().contains("received SIGINT, shutting down"), d.err.toString());
    }

    /**
     * SIGTERM, as Process.destroy() sends on Linux; but Process.destroy() also closes our ends of the pipes, which
     * would lose what the daemon logs while it shuts down. ProcessHandle.destroy() only signals.
     */
    private static void sigterm(Process p) {
        assertTrue(p.toHandle().destroy(), "SIGTERM not sent");
    }

    private Daemon runUntilSignal(Path dir, java.util.function.Consumer<Process> signal) throws Exception {
        Path sock = dir.resolve("vhost.sock");
        Path pidfile = dir.resolve("jvhost.pid");
        Daemon d = start(javaCommand(
                "--blockdev", "driver=null-co,node-name=n0,size=16M,read-zeroes=on",
                "--export", "type=vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path=" + sock
                        + ",num-queues=2,writable=on",
                "--pidfile=" + pidfile));
        d.awaitLine(readiness("exp0", sock, 2)::equals);

        assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(sock, LinkOption.NOFOLLOW_LINKS));
        assertEquals(d.process.pid() + "\n", Files.readString(pidfile));
        long features = VhostUserProbe.getFeatures(sock, 10_000);
        assertTrue((features & VhostUserProbe.VIRTIO_F_VERSION_1) != 0, Long.toHexString(features));

        signal.accept(d.process);
        assertEquals(0, d.awaitExit(), d.err.toString());
        assertFalse(Files.exists(sock, LinkOption.NOFOLLOW_LINKS), "socket left behind");
        assertFalse(Files.exists(pidfile), "pidfile left behind");
        // Logging is one line per record: time, level, class, message.
        for (String line : d.err.toString().lines().toList()) {
            assertTrue(line.matches("\\d\\d:\\d\\d:\\d\\d [A-Z]+ \\w+: .*"), "log line: " + line);
        }
        return d;
    }

    @Test
    void listensOnAnInheritedFd(@TempDir Path dir) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/python3")), "python3 creates the listening socket");
        Path sock = dir.resolve("fd.sock");
        // python binds and listens, then execs the JVM with the socket as fd 3 (as a supervisor such as
        // systemd or libvirt would); exec keeps the pid, so destroy() reaches jvhost itself.
        List<String> java = javaCommand("--blockdev", "null-co,node-name=n0,size=1M",
                "--export", "vhost-user-blk,id=fd0,node-name=n0,addr.type=fd,addr.str=3");
        List<String> cmd = new ArrayList<>(List.of("/usr/bin/python3", "-c",
                "import os, socket, sys\n"
                        + "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                        + "s.bind(sys.argv[1]); s.listen(1)\n"
                        + "os.dup2(s.fileno(), 3)\n"
                        + "os.set_inheritable(3, True)\n"
                        + "os.execv(sys.argv[2], sys.argv[2:])\n",
                sock.toString()));
        cmd.addAll(java);
        Daemon d = start(cmd);
        d.awaitLine(readiness("fd0", "fd 3", 1)::equals);
        long features = VhostUserProbe.getFeatures(sock, 10_000);
        assertTrue((features & VhostUserProbe.VIRTIO_F_VERSION_1) != 0, Long.toHexString(features));
        sigterm(d.process);
        assertEquals(0, d.awaitExit(), d.err.toString());
    }

    @Test
    void demoCreatesASparseImageAndPrintsTheQemuCommand(@TempDir Path dir) throws Exception {
        Path image = dir.resolve(Options.DEMO_IMAGE_NAME);
        Path sock = dir.resolve(Options.DEMO_SOCKET_NAME);
        Daemon d = start(javaCommand("--demo", dir.toString()));
        d.awaitLine(readiness("jvhost-demo", sock, 2)::equals);
        d.awaitLine(l -> l.startsWith("Stop jvhost with Ctrl-C"));

        assertEquals(1L << 30, Files.size(image));
        Process stat = new ProcessBuilder("stat", "-c", "%b %B", image.toString()).start();
        assertTrue(stat.waitFor(TIMEOUT_S, TimeUnit.SECONDS));
        String[] blocks = new String(stat.getInputStream().readAllBytes(), StandardCharsets.US_ASCII).trim().split(" ");
        assertTrue(Long.parseLong(blocks[0]) * Long.parseLong(blocks[1]) < (1 << 20), "image is not sparse: " + String.join(" ", blocks));

        String all = String.join("\n", d.out);
        assertTrue(all.contains("qemu-system-x86_64 "), all);
        assertTrue(all.contains("memory-backend-file,id=mem,size=1G,share=on"), all);
        assertTrue(all.contains("-machine q35,memory-backend=mem -m 1G"), all);
        assertTrue(all.contains("-chardev socket,id=vub0,path=" + sock + " "), all);
        assertTrue(all.contains("-device vhost-user-blk-pci,id=vub0dev,chardev=vub0,num-queues=2"), all);
        assertTrue((VhostUserProbe.getFeatures(sock, 10_000) & VhostUserProbe.VIRTIO_F_VERSION_1) != 0);

        sigterm(d.process);
        assertEquals(0, d.awaitExit(), d.err.toString());
        assertTrue(Files.exists(image), "the demo image is kept");
        assertFalse(Files.exists(sock, LinkOption.NOFOLLOW_LINKS));
    }
}
