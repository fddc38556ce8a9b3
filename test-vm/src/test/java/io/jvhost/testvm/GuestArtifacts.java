package io.jvhost.testvm;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The guest kernel, initramfs and test pattern built by {@code guest/build-guest.sh}. The script runs
 * once per JVM (it is a fast no-op when its cache is current); its stderr goes to
 * {@code target/guest-build.log}.
 *
 * @param kernel        PVH ELF vmlinux (or a bzImage if extraction failed), for {@code -kernel}
 * @param initrd        gzip'd cpio initramfs with busybox, modules, /init and /pattern.bin
 * @param pattern       the pattern file shipped in the initramfs as /pattern.bin
 * @param patternSha256 lower-case hex SHA-256 of {@code pattern}
 * @param env           every KEY=VALUE line the script printed
 */
public record GuestArtifacts(Path kernel, Path initrd, Path pattern, String patternSha256, long patternBytes,
                             String kernelVersion, String stamp, Map<String, String> env) {

    private static GuestArtifacts cached;

    public static Path cacheDir() {
        String prop = System.getProperty("jvhost.testvm.guestCache");
        if (prop != null && !prop.isBlank()) {
            return Path.of(prop);
        }
        String env = System.getenv("JVHOST_GUEST_CACHE");
        if (env != null && !env.isBlank()) {
            return Path.of(env);
        }
        return Path.of(System.getProperty("user.home"), ".cache", "jvhost-guest");
    }

    /** Builds (or finds) the artefacts; the first call per JVM runs the script. */
    public static synchronized GuestArtifacts get() throws IOException, InterruptedException {
        if (cached == null) {
            cached = build();
        }
        return cached;
    }

    private static GuestArtifacts build() throws IOException, InterruptedException {
        Path script = TestVm.moduleDir().resolve("guest/build-guest.sh");
        Path log = TestVm.targetDir().resolve("guest-build.log");
        Files.createDirectories(log.getParent());
        Path out = Files.createTempFile(log.getParent(), "guest-build", ".out");
        try {
            Process p = TestVm.track(new ProcessBuilder(List.of("bash", script.toString(), cacheDir().toString()))
                    .redirectOutput(out.toFile())
                    .redirectError(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                    .start());
            if (!p.waitFor(30, TimeUnit.MINUTES)) {
                p.destroyForcibly();
                throw new IOException("build-guest.sh did not finish within 30 minutes; see " + log);
            }
            if (p.exitValue() != 0) {
                throw new IOException("build-guest.sh failed with status " + p.exitValue() + "; " + log
                        + ":\n" + TestVm.tail(log, 20));
            }
            Map<String, String> env = new LinkedHashMap<>();
            for (String line : Files.readAllLines(out, StandardCharsets.UTF_8)) {
                int eq = line.indexOf('=');
                if (line.startsWith("JVHOST_GUEST_") && eq > 0) {
                    env.put(line.substring(0, eq), line.substring(eq + 1));
                }
            }
            GuestArtifacts a = new GuestArtifacts(
                    Path.of(require(env, "JVHOST_GUEST_KERNEL")),
                    Path.of(require(env, "JVHOST_GUEST_INITRD")),
                    Path.of(require(env, "JVHOST_GUEST_PATTERN")),
                    require(env, "JVHOST_GUEST_PATTERN_SHA256"),
                    Long.parseLong(require(env, "JVHOST_GUEST_PATTERN_BYTES")),
                    require(env, "JVHOST_GUEST_KERNEL_VERSION"),
                    require(env, "JVHOST_GUEST_STAMP"),
                    Map.copyOf(env));
            for (Path f : List.of(a.kernel, a.initrd, a.pattern)) {
                if (!Files.isRegularFile(f)) {
                    throw new IOException("build-guest.sh reported a missing file: " + f);
                }
            }
            return a;
        } finally {
            Files.deleteIfExists(out);
        }
    }

    private static String require(Map<String, String> env, String key) throws IOException {
        String v = env.get(key);
        if (v == null || v.isEmpty()) {
            throw new IOException("build-guest.sh did not print " + key + "; got " + env);
        }
        return v;
    }
}
