package io.jvhost.testvm;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One QEMU guest booted from the test-vm kernel/initramfs, with vhost-user-blk disks, under TCG.
 * The serial console is QEMU's stdio: every line is appended to {@code <runDir>/<name>-serial.log}
 * and can be awaited ({@link #awaitLine}, {@link #awaitResult}); {@link #sendLine} types into the
 * guest's console. QMP is available through {@link #qmp()}. {@link #close()} always kills QEMU and
 * removes the guest-RAM file in /dev/shm.
 *
 * <p>Command line (see vm-facts.md): TCG, q35, RAM as a shared /dev/shm file (vhost-user needs
 * share=on), -nodefaults, -kernel vmlinux (PVH) -initrd, and by default -no-reboot so that the guest's
 * power-off or a panic ends QEMU ({@link Options#noReboot(boolean) noReboot(false)} for tests that reset
 * or reboot the guest; its power-off still ends QEMU).
 */
public final class QemuGuest implements AutoCloseable {
    private static final AtomicInteger COUNTER = new AtomicInteger();
    private static final String SHM_PREFIX = "jvhost-testvm-";
    private static final Pattern RESULT = Pattern.compile("JVTEST-RESULT (PASS|FAIL)\\b ?(.*)");

    /** One vhost-user-blk-pci device backed by the back-end listening on {@code socket}. */
    public record VhostUserBlkDisk(String id, Path socket, int numQueues, int queueSize, boolean reconnect) {
        public VhostUserBlkDisk {
            if (queueSize < 1 || queueSize > 1024 || Integer.bitCount(queueSize) != 1) {
                // QEMU 7.2 accepts e.g. 100 and the guest then silently has no disk
                throw new IllegalArgumentException("queue-size must be a power of two <= 1024: " + queueSize);
            }
            if (numQueues < 1) {
                throw new IllegalArgumentException("num-queues must be >= 1 (always pass it explicitly)");
            }
            TestVm.checkSocketPath(socket);
        }

        public static VhostUserBlkDisk of(Path socket, int numQueues) {
            return new VhostUserBlkDisk("vub0", socket, numQueues, 128, false);
        }
    }

    /** Everything needed to start a guest; fluent setters. */
    public static final class Options {
        private String name = "guest";
        private Path runDir;
        private GuestArtifacts artifacts;
        private String test;
        private final Map<String, String> testParams = new LinkedHashMap<>();
        private final List<String> kernelArgs = new ArrayList<>(List.of("console=ttyS0", "panic=-1", "quiet"));
        private int memoryMiB = 512;
        private int cpus = 2;
        private final List<VhostUserBlkDisk> disks = new ArrayList<>();
        private String incoming;
        private boolean noReboot = true;
        private final List<String> extraArgs = new ArrayList<>();
        private Duration qmpTimeout = Duration.ofSeconds(60);

        /** Prefix of the log files in the run directory; distinguishes e.g. migration source and target. */
        public Options name(String v) {
            name = v;
            return this;
        }

        public Options runDir(Path v) {
            runDir = v;
            return this;
        }

        public Options artifacts(GuestArtifacts v) {
            artifacts = v;
            return this;
        }

        /** The guest test to run: {@code jvtest=NAME} (a test_NAME function in guest/init). */
        public Options test(String v) {
            test = v;
            return this;
        }

        /** A test parameter: {@code jvtest.KEY=VALUE}, seen by the guest as $JVT_KEY. */
        public Options param(String key, Object value) {
            if (!key.matches("[a-z0-9_]+")) {
                throw new IllegalArgumentException("bad jvtest parameter name " + key);
            }
            testParams.put(key, String.valueOf(value));
            return this;
        }

        /**
         * Guest-side timeout ({@code jvtest.watchdog}): the guest reports its stuck processes and
         * kernel log and fails by itself. Keep it below the host's result timeout.
         */
        public Options watchdog(Duration v) {
            return param("watchdog", Math.max(1, v.toSeconds()));
        }

        public Options kernelArg(String v) {
            kernelArgs.add(v);
            return this;
        }

        /** Guest RAM; also the size of the shared memory backend. */
        public Options memoryMiB(int v) {
            memoryMiB = v;
            return this;
        }

        /** vCPUs; the guest uses min(num-queues, vCPUs) queues. */
        public Options cpus(int v) {
            cpus = v;
            return this;
        }

        public Options disk(VhostUserBlkDisk v) {
            disks.add(v);
            return this;
        }

        /**
         * {@code -no-reboot} (default true): a guest reset or reboot ends QEMU. False keeps the guest in
         * the same QEMU across QMP {@code system_reset} and guest-initiated reboots.
         */
        public Options noReboot(boolean v) {
            noReboot = v;
            return this;
        }

        /** Migration destination: {@code -incoming URI}. */
        public Options incoming(String uri) {
            incoming = uri;
            return this;
        }

        public Options extraArgs(String... v) {
            extraArgs.addAll(List.of(v));
            return this;
        }

        public Options qmpTimeout(Duration v) {
            qmpTimeout = v;
            return this;
        }
    }

    /** A console line and when it arrived (nanoseconds since QEMU was started). */
    public record ConsoleLine(String text, long nanos) {
    }

    private final Options opts;
    private final Process process;
    private final long startNanos;
    private final List<String> command;
    private final Path serialLog;
    private final Path stderrLog;
    private final Path shmFile;
    private final Path socketDir;
    private final Path qmpSocket;
    private final ServerSocketChannel qmpServer;
    private final EventLog<ConsoleLine> console = new EventLog<>();
    private final Thread consoleReader;
    private final OutputStream consoleIn;
    private QmpClient qmp;

    private QemuGuest(Options o, List<String> command, Process process, long startNanos, Path serialLog,
                      Path stderrLog, Path shmFile, Path socketDir, Path qmpSocket, ServerSocketChannel qmpServer) {
        this.opts = o;
        this.command = command;
        this.process = process;
        this.startNanos = startNanos;
        this.serialLog = serialLog;
        this.stderrLog = stderrLog;
        this.shmFile = shmFile;
        this.socketDir = socketDir;
        this.qmpSocket = qmpSocket;
        this.qmpServer = qmpServer;
        this.consoleIn = process.getOutputStream();
        this.consoleReader = new Thread(this::readConsole, "serial-" + o.name);
        this.consoleReader.setDaemon(true);
    }

    public static QemuGuest start(Options o) throws IOException {
        if (o.artifacts == null || o.runDir == null || o.test == null) {
            throw new IllegalArgumentException("artifacts, runDir and test are required");
        }
        Path qemu = TestVm.requireExecutable(System.getProperty("jvhost.testvm.qemu", "qemu-system-x86_64"),
                "qemu-system-x86");
        Path memDir = Path.of(System.getProperty("jvhost.testvm.memDir", "/dev/shm"));
        removeStaleShmFiles(memDir);
        long free = Files.getFileStore(memDir).getUsableSpace();
        if (free < (long) o.memoryMiB << 20) {
            // QEMU would die of SIGBUS when the guest touches RAM beyond the tmpfs limit
            throw new IOException(memDir + " has only " + (free >> 20) + " MiB free but the guest needs "
                    + o.memoryMiB + " MiB of shared RAM there (in Docker use --shm-size=1g, or set"
                    + " -Djvhost.testvm.memDir to a directory on tmpfs with room)");
        }
        Files.createDirectories(o.runDir);
        Path shm = memDir.resolve(SHM_PREFIX + ProcessHandle.current().pid() + "-"
                + COUNTER.incrementAndGet() + "-" + o.name + ".ram");
        Path socketDir = TestVm.newSocketDir();
        Path qmpSocket = TestVm.checkSocketPath(socketDir.resolve("qmp.sock"));
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            server.bind(UnixDomainSocketAddress.of(qmpSocket));

            StringBuilder append = new StringBuilder(String.join(" ", o.kernelArgs));
            append.append(" jvtest=").append(o.test);
            o.testParams.forEach((k, v) -> append.append(" jvtest.").append(k).append('=').append(v));

            List<String> cmd = new ArrayList<>(List.of(
                    qemu.toString(),
                    "-accel", "tcg",
                    "-machine", "q35,memory-backend=mem",
                    "-m", o.memoryMiB + "M",
                    "-smp", String.valueOf(o.cpus),
                    "-object", "memory-backend-file,id=mem,size=" + o.memoryMiB + "M,share=on,mem-path=" + shm,
                    "-nodefaults", "-no-user-config",
                    "-display", "none",
                    "-serial", "stdio",
                    "-monitor", "none",
                    // client mode: QEMU connects to the socket we already listen on
                    "-qmp", "unix:" + qmpSocket));
            for (VhostUserBlkDisk d : o.disks) {
                cmd.addAll(List.of(
                        "-chardev", "socket,id=" + d.id() + ",path=" + d.socket() + (d.reconnect() ? ",reconnect=1" : ""),
                        "-device", "vhost-user-blk-pci,id=" + d.id() + "dev,chardev=" + d.id()
                                + ",num-queues=" + d.numQueues() + ",queue-size=" + d.queueSize()));
            }
            cmd.addAll(List.of(
                    "-kernel", o.artifacts.kernel().toString(),
                    "-initrd", o.artifacts.initrd().toString(),
                    "-append", append.toString()));
            if (o.noReboot) {
                cmd.add("-no-reboot");
            }
            if (o.incoming != null) {
                cmd.addAll(List.of("-incoming", o.incoming));
            }
            cmd.addAll(o.extraArgs);

            Path serialLog = o.runDir.resolve(o.name + "-serial.log");
            Path stderrLog = o.runDir.resolve(o.name + "-qemu-stderr.log");
            Files.writeString(o.runDir.resolve(o.name + "-cmdline.txt"), shellQuote(cmd) + "\n", StandardCharsets.UTF_8);
            Files.deleteIfExists(serialLog);
            long t0 = System.nanoTime();
            Process p = TestVm.track(new ProcessBuilder(cmd)
                    .redirectError(stderrLog.toFile())
                    .start());
            QemuGuest g = new QemuGuest(o, List.copyOf(cmd), p, t0, serialLog, stderrLog, shm, socketDir,
                    qmpSocket, server);
            g.consoleReader.start();
            return g;
        } catch (IOException | RuntimeException e) {
            server.close();
            TestVm.deleteTree(socketDir);
            Files.deleteIfExists(shm);
            throw e;
        }
    }

    /** Deletes guest-RAM files of guests whose JVM is gone (e.g. after a killed test run). */
    private static void removeStaleShmFiles(Path memDir) {
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(memDir, SHM_PREFIX + "*.ram")) {
            for (Path f : ds) {
                String rest = f.getFileName().toString().substring(SHM_PREFIX.length());
                int dash = rest.indexOf('-');
                try {
                    long pid = Long.parseLong(rest.substring(0, dash));
                    if (ProcessHandle.of(pid).isEmpty()) {
                        Files.deleteIfExists(f);
                    }
                } catch (RuntimeException ignored) {
                    // not ours
                }
            }
        } catch (IOException ignored) {
            // best effort
        }
    }

    private static String shellQuote(List<String> cmd) {
        StringBuilder sb = new StringBuilder();
        for (String a : cmd) {
            if (sb.length() > 0) {
                sb.append(' ');
            }
            sb.append(a.matches("[\\w@%+=:,./-]+") ? a : "'" + a.replace("'", "'\\''") + "'");
        }
        return sb.toString();
    }

    private void readConsole() {
        Throwable cause = null;
        try (InputStream in = process.getInputStream();
             OutputStream log = Files.newOutputStream(serialLog, StandardOpenOption.CREATE,
                     StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE)) {
            ByteArrayOutputStream line = new ByteArrayOutputStream();
            byte[] buf = new byte[8192];
            int n;
            while ((n = in.read(buf)) >= 0) {
                log.write(buf, 0, n);
                log.flush();
                for (int i = 0; i < n; i++) {
                    byte b = buf[i];
                    if (b == '\n') {
                        emit(line);
                    } else if (b != '\r') {
                        line.write(b);
                    }
                }
            }
            if (line.size() > 0) {
                emit(line);
            }
        } catch (IOException e) {
            cause = e;
        } finally {
            console.close(cause);
        }
    }

    private void emit(ByteArrayOutputStream line) {
        console.append(new ConsoleLine(line.toString(StandardCharsets.ISO_8859_1), System.nanoTime() - startNanos));
        line.reset();
    }

    public Process process() {
        return process;
    }

    public List<String> commandLine() {
        return command;
    }

    public Path serialLog() {
        return serialLog;
    }

    public Path stderrLog() {
        return stderrLog;
    }

    /** Nanoseconds since QEMU was started. */
    public long uptimeNanos() {
        return System.nanoTime() - startNanos;
    }

    /** All console lines so far. */
    public List<ConsoleLine> consoleLines() {
        return console.snapshot();
    }

    /**
     * Waits for the next console line (after the previously awaited one) that contains a match for
     * {@code pattern}; empty on timeout or when QEMU's output ends first.
     */
    public Optional<ConsoleLine> awaitLine(Pattern pattern, Duration timeout) throws InterruptedException {
        return console.awaitNext(l -> pattern.matcher(l.text()).find(), timeout);
    }

    public Optional<ConsoleLine> awaitLine(Predicate<String> match, Duration timeout) throws InterruptedException {
        return console.awaitNext(l -> match.test(l.text()), timeout);
    }

    /** Waits for the guest's {@code JVTEST-SYNC name} and answers {@code go name}. */
    public void sync(String name, Duration timeout) throws IOException, InterruptedException {
        if (awaitLine(Pattern.compile("JVTEST-SYNC " + Pattern.quote(name) + "$"), timeout).isEmpty()) {
            throw new IOException("guest did not reach sync point " + name + " within " + timeout
                    + "; console " + serialLog);
        }
        sendLine("go " + name);
    }

    /** Types a line on the guest's serial console. */
    public void sendLine(String text) throws IOException {
        synchronized (consoleIn) {
            consoleIn.write((text + "\n").getBytes(StandardCharsets.UTF_8));
            consoleIn.flush();
        }
    }

    /**
     * Waits for the guest's {@code JVTEST-RESULT} line (after the previously awaited line). If QEMU
     * exits or the timeout expires first, the result says so.
     */
    public GuestResult awaitResult(Duration timeout) throws InterruptedException {
        Optional<ConsoleLine> r = awaitLine(RESULT, timeout);
        Duration elapsed = Duration.ofNanos(uptimeNanos());
        if (r.isPresent() && !r.get().text().contains("JVTEST-RESULT PASS")) {
            // a failing guest powers off right away: let it, so that the console log is complete
            awaitExit(Duration.ofSeconds(30));
        }
        List<String> markers = new ArrayList<>();
        for (ConsoleLine l : console.snapshot()) {
            int i = l.text().indexOf("JVTEST-");
            if (i >= 0) {
                markers.add(l.text().substring(i));
            }
        }
        if (r.isPresent()) {
            Matcher m = RESULT.matcher(r.get().text());
            m.find();
            boolean pass = m.group(1).equals("PASS");
            return new GuestResult(pass ? GuestResult.Outcome.PASS : GuestResult.Outcome.FAIL,
                    pass ? "" : m.group(2).trim(), markers, Duration.ofNanos(r.get().nanos()), serialLog, stderrLog);
        }
        if (console.isClosed()) {
            int code = waitExitQuietly();
            String status = process.isAlive() ? "closed its console" : "exited with status " + code;
            return new GuestResult(GuestResult.Outcome.QEMU_EXITED, "QEMU " + status + " before a JVTEST-RESULT line",
                    markers, elapsed, serialLog, stderrLog);
        }
        return new GuestResult(GuestResult.Outcome.TIMEOUT, "no JVTEST-RESULT line within " + timeout,
                markers, elapsed, serialLog, stderrLog);
    }

    private int waitExitQuietly() {
        try {
            process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return process.isAlive() ? -1 : process.exitValue();
    }

    /**
     * The QMP connection, accepted and negotiated on first use. QEMU sends events only after the
     * handshake: call this right after {@link #start} when a test needs events (RESET, SHUTDOWN, ...).
     */
    public synchronized QmpClient qmp() throws IOException, InterruptedException {
        if (qmp == null) {
            qmp = QmpClient.accept(qmpServer, process.onExit(), opts.qmpTimeout, opts.name);
        }
        return qmp;
    }

    /**
     * Waits for QEMU to exit (the guest powers off after its result) and for the console to be drained.
     * Returns the exit status, or empty on timeout.
     */
    public Optional<Integer> awaitExit(Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        if (!process.waitFor(timeout.toNanos(), TimeUnit.NANOSECONDS)) {
            return Optional.empty();
        }
        console.awaitClosed(Duration.ofNanos(Math.max(0, deadline - System.nanoTime())).plusSeconds(5));
        return Optional.of(process.exitValue());
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    /** Kills QEMU if it still runs, closes QMP and removes the shm file and sockets. */
    @Override
    public void close() {
        try {
            if (process.isAlive()) {
                process.destroy();
                if (!process.waitFor(10, TimeUnit.SECONDS)) {
                    process.destroyForcibly();
                    process.waitFor(10, TimeUnit.SECONDS);
                }
            }
            consoleReader.join(TimeUnit.SECONDS.toMillis(10));
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        } finally {
            synchronized (this) {
                if (qmp != null) {
                    qmp.close();
                }
            }
            try {
                qmpServer.close();
            } catch (IOException ignored) {
                // closing anyway
            }
            try {
                Files.deleteIfExists(shmFile);
            } catch (IOException ignored) {
                // reported by removeStaleShmFiles next time
            }
            TestVm.deleteTree(socketDir);
        }
    }

    public Path shmFile() {
        return shmFile;
    }

    public Path qmpSocket() {
        return qmpSocket;
    }
}
