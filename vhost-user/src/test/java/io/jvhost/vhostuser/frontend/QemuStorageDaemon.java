package io.jvhost.vhostuser.frontend;

import org.newsclub.net.unix.AFUNIXSocket;
import org.newsclub.net.unix.AFUNIXSocketAddress;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchService;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * qemu-storage-daemon as a reference vhost-user-blk back-end for fixture tests: one block node exported on a unix
 * socket, plus a QMP monitor socket. Readiness = the pidfile (QSD writes it after the export is listening),
 * awaited with inotify (WatchService), not by polling with sleeps.
 */
public final class QemuStorageDaemon implements AutoCloseable {
    public static final String BINARY = "qemu-storage-daemon";

    private final Process process;
    private final Path socket, qmpSocket, log;

    private QemuStorageDaemon(Process p, Path socket, Path qmpSocket, Path log) {
        this.process = p;
        this.socket = socket;
        this.qmpSocket = qmpSocket;
        this.log = log;
    }

    /** True when the binary is on PATH (tests skip otherwise). */
    public static boolean available() {
        for (String d : System.getenv().getOrDefault("PATH", "").split(":")) {
            if (!d.isEmpty() && Files.isExecutable(Path.of(d, BINARY))) return true;
        }
        return false;
    }

    /** Exports a raw file image, node "d". */
    public static QemuStorageDaemon startFile(Path dir, Path image, int numQueues, boolean writable) throws IOException, TimeoutException, InterruptedException {
        return start(dir, "driver=file,node-name=d,filename=" + image, numQueues, writable);
    }

    /** Exports a null-co node "d" of {@code size} bytes that reads zeroes. */
    public static QemuStorageDaemon startNull(Path dir, long size, int numQueues) throws IOException, TimeoutException, InterruptedException {
        return start(dir, "driver=null-co,node-name=d,size=" + size + ",read-zeroes=on", numQueues, true);
    }

    public static QemuStorageDaemon start(Path dir, String blockdev, int numQueues, boolean writable) throws IOException, TimeoutException, InterruptedException {
        Path sock = dir.resolve("vhost.sock"), qmp = dir.resolve("qmp.sock"), pid = dir.resolve("qsd.pid"), log = dir.resolve("qsd.log");
        Files.deleteIfExists(sock);
        Files.deleteIfExists(qmp);
        Files.deleteIfExists(pid);
        List<String> cmd = new ArrayList<>(List.of(BINARY,
                "--blockdev", blockdev,
                "--export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=" + sock
                        + ",writable=" + (writable ? "on" : "off") + ",num-queues=" + numQueues,
                "--chardev", "socket,id=m,path=" + qmp + ",server=on,wait=off",
                "--monitor", "chardev=m",
                "--pidfile", pid.toString()));
        try (WatchService ws = dir.getFileSystem().newWatchService()) {
            dir.register(ws, StandardWatchEventKinds.ENTRY_CREATE, StandardWatchEventKinds.ENTRY_MODIFY);
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            QemuStorageDaemon qsd = new QemuStorageDaemon(p, sock, qmp, log);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!pidWritten(pid)) {
                long left = deadline - System.nanoTime();
                if (!p.isAlive() || left <= 0) {
                    qsd.close();
                    throw new TimeoutException("qemu-storage-daemon did not become ready (alive=" + p.isAlive() + "): " + qsd.log());
                }
                var key = ws.poll(Math.min(left, TimeUnit.MILLISECONDS.toNanos(200)), TimeUnit.NANOSECONDS);
                if (key != null) {
                    key.pollEvents();
                    key.reset();
                }
            }
            return qsd;
        }
    }

    private static boolean pidWritten(Path pid) throws IOException {
        try {
            return Files.exists(pid) && !Files.readString(pid).isBlank();
        } catch (java.nio.file.NoSuchFileException e) {
            return false;
        }
    }

    public Path socket() { return socket; }
    public Process process() { return process; }
    public boolean isAlive() { return process.isAlive(); }

    /** The daemon's combined stdout/stderr so far. */
    public String log() {
        try {
            return Files.readString(log);
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    /**
     * Runs QMP commands (JSON texts) after qmp_capabilities and returns each command's response line (events
     * are skipped).
     */
    public List<String> qmp(Duration timeout, String... commands) throws IOException {
        try (AFUNIXSocket s = AFUNIXSocket.connectTo(AFUNIXSocketAddress.of(qmpSocket))) {
            s.setSoTimeout((int) timeout.toMillis());
            BufferedReader r = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
            OutputStream w = s.getOutputStream();
            r.readLine(); // greeting
            List<String> out = new ArrayList<>();
            List<String> all = new ArrayList<>();
            all.add("{\"execute\":\"qmp_capabilities\"}");
            all.addAll(List.of(commands));
            for (String c : all) {
                w.write((c + "\n").getBytes(StandardCharsets.UTF_8));
                w.flush();
                String line;
                do {
                    line = r.readLine();
                    if (line == null) throw new IOException("QMP closed");
                } while (line.contains("\"event\""));
                out.add(line);
            }
            return out.subList(1, out.size());
        }
    }

    /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }
}
