package io.jvhost.testvm;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;

/**
 * Shared helpers of the booted-guest tests: locations, system properties, executables, and a
 * shutdown hook that kills child processes a test left behind.
 *
 * <p>System properties (all optional):
 * <ul>
 * <li>{@code jvhost.testvm.backend} = {@code jvhost} (default) | {@code qsd}</li>
 * <li>{@code jvhost.testvm.moduleDir}: the test-vm module directory (default: found from the cwd)</li>
 * <li>{@code jvhost.testvm.guestCache}: guest artefact cache (default $JVHOST_GUEST_CACHE or
 * ~/.cache/jvhost-guest)</li>
 * <li>{@code jvhost.testvm.qemu}: QEMU binary (default qemu-system-x86_64 from PATH)</li>
 * <li>{@code jvhost.testvm.qsd}: qemu-storage-daemon binary</li>
 * <li>{@code jvhost.testvm.timeoutScale}: multiplies every guest timeout (default 1)</li>
 * <li>{@code jvhost.testvm.memDir}: where guest RAM files are created (default /dev/shm)</li>
 * <li>{@code jvhost.testvm.daemonJvmArgs}, {@code jvhost.testvm.daemonMain},
 * {@code jvhost.testvm.classpath}: how the jvhost daemon is launched</li>
 * <li>{@code jvhost.testvm.keepImages=true}: keep disk images of passing tests</li>
 * </ul>
 */
public final class TestVm {
    /** {@code @ResourceLock} key: never boot two guests at the same time on a 2-core machine. */
    public static final String VM_LOCK = "io.jvhost.testvm.vm";

    private static final AtomicInteger RUNS = new AtomicInteger();
    private static final Set<Process> CHILDREN = ConcurrentHashMap.newKeySet();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            for (Process p : CHILDREN) {
                p.destroyForcibly();
            }
        }, "testvm-reaper"));
    }

    private TestVm() {
    }

    /** Kills {@code p} if the JVM exits while it is still running. */
    static Process track(Process p) {
        CHILDREN.add(p);
        p.onExit().thenRun(() -> CHILDREN.remove(p));
        return p;
    }

    public static Path moduleDir() {
        String prop = System.getProperty("jvhost.testvm.moduleDir");
        if (prop != null && !prop.isBlank()) {
            return Path.of(prop).toAbsolutePath().normalize();
        }
        Path cwd = Path.of("").toAbsolutePath();
        for (Path candidate : List.of(cwd, cwd.resolve("test-vm"))) {
            if (Files.isRegularFile(candidate.resolve("guest/build-guest.sh"))) {
                return candidate.normalize();
            }
        }
        throw new IllegalStateException("cannot find test-vm/guest/build-guest.sh from " + cwd
                + "; set -Djvhost.testvm.moduleDir");
    }

    public static Path targetDir() {
        return moduleDir().resolve("target");
    }

    /** A fresh directory under target/test-vm/ for one test run's image and logs. */
    public static Path newRunDir(String name) {
        String ts = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss"));
        Path dir = targetDir().resolve("test-vm").resolve(name + "-" + ts + "-" + RUNS.incrementAndGet());
        try {
            return Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * A fresh short directory for unix sockets (paths are limited to 107 bytes, target/ may be deep).
     * Delete it with {@link #deleteTree}.
     */
    public static Path newSocketDir() {
        try {
            Path base = Path.of("/tmp");
            if (!Files.isDirectory(base)) {
                base = Path.of(System.getProperty("java.io.tmpdir"));
            }
            return Files.createTempDirectory(base, "jvh-",
                    PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static Path checkSocketPath(Path p) {
        if (p.toString().getBytes(StandardCharsets.UTF_8).length > 107) {
            throw new IllegalArgumentException("unix socket path longer than 107 bytes: " + p);
        }
        return p;
    }

    public static void deleteTree(Path dir) {
        if (dir == null || !Files.exists(dir)) {
            return;
        }
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static Duration timeout(Duration base) {
        double scale = Double.parseDouble(System.getProperty("jvhost.testvm.timeoutScale", "1"));
        return Duration.ofMillis((long) (base.toMillis() * scale));
    }

    /** Finds an executable: an absolute/relative path as given, else on PATH, else in the extra dirs. */
    public static Optional<Path> findExecutable(String name, String... extraDirs) {
        if (name.contains("/")) {
            Path p = Path.of(name);
            return Files.isExecutable(p) ? Optional.of(p.toAbsolutePath()) : Optional.empty();
        }
        List<String> dirs = new ArrayList<>(List.of(System.getenv().getOrDefault("PATH", "").split(":")));
        dirs.addAll(List.of(extraDirs));
        for (String d : dirs) {
            if (d.isEmpty()) {
                continue;
            }
            Path p = Path.of(d, name);
            if (Files.isRegularFile(p) && Files.isExecutable(p)) {
                return Optional.of(p);
            }
        }
        return Optional.empty();
    }

    public static Path requireExecutable(String name, String aptPackage, String... extraDirs) {
        return findExecutable(name, extraDirs).orElseThrow(() -> new IllegalStateException(
                name + " not found (Debian package " + aptPackage + ")"));
    }

    /** The last {@code n} lines of a text file, for failure messages. */
    public static String tail(Path file, int n) {
        try {
            if (file == null || !Files.exists(file)) {
                return "";
            }
            List<String> lines = Files.readAllLines(file, StandardCharsets.ISO_8859_1);
            StringBuilder sb = new StringBuilder();
            for (String l : lines.subList(Math.max(0, lines.size() - n), lines.size())) {
                sb.append(sb.length() == 0 ? "" : "\n")
                        .append(l.length() <= 400 ? l : l.substring(0, 400) + " [...]");
            }
            return sb.toString();
        } catch (IOException e) {
            return "(cannot read " + file + ": " + e + ")";
        }
    }
}
