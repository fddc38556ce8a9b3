package io.jvhost.testvm;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.ClosedWatchServiceException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.time.Duration;
import java.util.List;
import java.util.OptionalLong;
import java.util.concurrent.TimeUnit;

/** A {@link Backend} run as a child process; readiness = its pidfile, awaited with inotify. */
final class ProcessBackend implements Backend {
    private final String name;
    private final Process process;
    private final Path socket;
    private final Path log;
    private final List<String> command;

    private ProcessBackend(String name, Process process, Path socket, Path log, List<String> command) {
        this.name = name;
        this.process = process;
        this.socket = socket;
        this.log = log;
        this.command = command;
    }

    static ProcessBackend start(String name, List<String> command, Path socket, Path pidFile, Path log,
                                Duration timeout) throws IOException, InterruptedException {
        Files.deleteIfExists(pidFile);
        Files.createDirectories(log.getParent());
        Files.writeString(log, "# " + String.join(" ", command) + "\n", StandardCharsets.UTF_8);
        Path dir = pidFile.toAbsolutePath().getParent();
        // Watch before starting so that the pidfile's creation cannot be missed.
        WatchService watch = dir.getFileSystem().newWatchService();
        try {
            dir.register(watch, StandardWatchEventKinds.ENTRY_CREATE, StandardWatchEventKinds.ENTRY_MODIFY);
            Process p = TestVm.track(new ProcessBuilder(command)
                    .redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                    .start());
            ProcessBackend be = new ProcessBackend(name, p, socket, log, command);
            try {
                // Process exit closes the watch service, which wakes the wait below.
                p.onExit().thenRun(() -> {
                    try {
                        watch.close();
                    } catch (IOException ignored) {
                        // nothing to do
                    }
                });
                long pid = awaitPid(p, pidFile, watch, timeout, log);
                if (pid != p.pid()) {
                    throw new IOException(name + ": pidfile " + pidFile + " contains " + pid
                            + " but the back-end process is " + p.pid());
                }
                if (!Files.exists(socket)) {
                    throw new IOException(name + " wrote its pidfile but socket " + socket + " does not exist");
                }
                return be;
            } catch (IOException | InterruptedException | RuntimeException e) {
                be.close();
                throw e;
            }
        } finally {
            watch.close();
        }
    }

    private static long awaitPid(Process p, Path pidFile, WatchService watch, Duration timeout, Path log)
            throws IOException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            OptionalLong pid = readPid(pidFile);
            if (pid.isPresent()) {
                return pid.getAsLong();
            }
            if (!p.isAlive()) {
                throw new IOException("back-end exited with status " + p.exitValue()
                        + " before writing " + pidFile + "; " + log + ":\n" + TestVm.tail(log, 30));
            }
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                throw new IOException("back-end did not write " + pidFile + " within " + timeout + "; " + log
                        + ":\n" + TestVm.tail(log, 30));
            }
            try {
                WatchKey key = watch.poll(left, TimeUnit.NANOSECONDS);
                if (key != null) {
                    key.pollEvents();
                    key.reset();
                }
            } catch (ClosedWatchServiceException e) {
                // the process exited: wait for the exit status to be available, then report
                p.waitFor();
            }
        }
    }

    private static OptionalLong readPid(Path pidFile) throws IOException {
        String s;
        try {
            s = Files.readString(pidFile, StandardCharsets.US_ASCII).trim();
        } catch (NoSuchFileException e) {
            return OptionalLong.empty();
        }
        if (s.isEmpty() || !s.chars().allMatch(Character::isDigit) || s.length() > 18) {
            return OptionalLong.empty();
        }
        return OptionalLong.of(Long.parseLong(s));
    }

    @Override
    public Path socket() {
        return socket;
    }

    @Override
    public long pid() {
        return process.pid();
    }

    @Override
    public boolean isAlive() {
        return process.isAlive();
    }

    @Override
    public Path log() {
        return log;
    }

    public List<String> command() {
        return command;
    }

    @Override
    public int stop(Duration timeout) throws IOException, InterruptedException {
        process.destroy(); // SIGTERM
        if (!process.waitFor(timeout.toNanos(), TimeUnit.NANOSECONDS)) {
            process.destroyForcibly();
            process.waitFor();
            throw new IOException(name + " did not exit within " + timeout + " of SIGTERM; killed. " + log
                    + ":\n" + TestVm.tail(log, 30));
        }
        return process.exitValue();
    }

    @Override
    public void close() {
        if (!process.isAlive()) {
            return;
        }
        process.destroy();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(10, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public String toString() {
        return name + "[pid " + process.pid() + ", " + socket + "]";
    }
}
