package io.jvhost.daemon;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.File;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.jar.JarEntry;
import java.util.jar.JarOutputStream;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * bin/jvhost, run from a copy of the tree layout in a temp dir (the real daemon/target/*.jar does not exist yet
 * while the tests of this module run): the missing-jar message, and a run through a symlink.
 */
class LauncherTest {
    private static Path script;

    @BeforeAll
    static void findScript() {
        // Surefire runs in the module directory; the launcher sits in the repository's bin/.
        script = Path.of("..", "bin", "jvhost").toAbsolutePath().normalize();
        assumeTrue(Files.isRegularFile(script), "no " + script);
    }

    record Run(int status, String out, String err) {}

    private static Run run(Map<String, String> env, String... cmd) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().remove("JVHOST_JAVA_OPTS");
        pb.environment().remove("JVHOST_DEFAULT_JAVA_OPTS");
        pb.environment().put("JAVA_HOME", System.getProperty("java.home"));
        pb.environment().putAll(env);
        Process p = pb.start();
        p.getOutputStream().close();
        CompletableFuture<String> out = CompletableFuture.supplyAsync(() -> readAll(p.getInputStream()));
        CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> readAll(p.getErrorStream()));
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "launcher did not exit");
        return new Run(p.exitValue(), out.get(60, TimeUnit.SECONDS), err.get(60, TimeUnit.SECONDS));
    }

    private static String readAll(java.io.InputStream in) {
        try {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static Path copyScript(Path root) throws IOException {
        Path bin = Files.createDirectories(root.resolve("bin"));
        Path copy = bin.resolve("jvhost");
        Files.copy(script, copy, StandardCopyOption.COPY_ATTRIBUTES);
        assertTrue(Files.isExecutable(copy), "bin/jvhost is not executable");
        return copy;
    }

    @Test
    void missingJarSaysHowToBuild(@TempDir Path root) throws Exception {
        Path copy = copyScript(root);
        Run r = run(Map.of(), copy.toString(), "--version");
        assertEquals(1, r.status());
        assertEquals("", r.out());
        assertTrue(r.err().contains("run: mvn -B -DskipTests package"), r.err());
        assertTrue(r.err().contains(root.toRealPath().toString()), r.err());
    }

    @Test
    void runsTheDaemonThroughASymlink(@TempDir Path root) throws Exception {
        Path copy = copyScript(root);
        // daemon/target/jvhost-daemon-<v>.jar from our classes, daemon/target/lib/ from our runtime class path.
        Path target = Files.createDirectories(root.resolve("daemon").resolve("target"));
        Path lib = Files.createDirectories(target.resolve("lib"));
        Path classes = Path.of(Main.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        assumeTrue(Files.isDirectory(classes), "classes are not a directory: " + classes);
        try (OutputStream os = Files.newOutputStream(target.resolve("jvhost-daemon-9.9.9.jar"));
             JarOutputStream jar = new JarOutputStream(os);
             Stream<Path> files = Files.walk(classes)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                jar.putNextEntry(new JarEntry(classes.relativize(f).toString().replace(File.separatorChar, '/')));
                Files.copy(f, jar);
                jar.closeEntry();
            }
        }
        for (String entry : System.getProperty("java.class.path").split(File.pathSeparator)) {
            Path p = Path.of(entry);
            if (entry.endsWith(".jar") && Files.isRegularFile(p)) {
                Files.createSymbolicLink(lib.resolve(p.getFileName()), p.toAbsolutePath());
            }
        }
        Path link = Files.createDirectories(root.resolve("elsewhere")).resolve("jvhost");
        Files.createSymbolicLink(link, copy);

        Run r = run(Map.of(), link.toString(), "--version");
        assertEquals(0, r.status(), r.err());
        assertEquals("jvhost " + Main.version() + "\n", r.out());

        // Options reach Java unchanged (quoting, "=" forms), and JVHOST_JAVA_OPTS reaches the JVM.
        r = run(Map.of("JVHOST_JAVA_OPTS", "-Djvhost.log.level=FINE -Xmx64m"), link.toString(),
                "--export=vhost-user-blk,id=e 1,node-name=n");
        assertEquals(1, r.status());
        assertEquals("jvhost: --export: invalid id 'e 1' (a letter, then letters, digits, '-', '.', '_')\n", r.err());
        r = run(Map.of("JVHOST_JAVA_OPTS", "-Xmx1k"), link.toString(), "--version");
        // The JVM refuses a 1k heap before running anything (it says so on stdout).
        assertTrue(r.status() != 0 && (r.out() + r.err()).contains("heap"), "JVHOST_JAVA_OPTS was not passed to java: " + r);
        assertTrue(!r.out().contains("jvhost "), r.out());

        // The launcher's default JVM options (small footprint) reach the JVM; JVHOST_DEFAULT_JAVA_OPTS replaces them.
        r = run(Map.of("JVHOST_JAVA_OPTS", "-XX:+PrintCommandLineFlags"), link.toString(), "--version");
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("-XX:+UseSerialGC") && r.out().contains("-XX:MaxDirectMemorySize=1073741824"), r.out());
        r = run(Map.of("JVHOST_DEFAULT_JAVA_OPTS", "", "JVHOST_JAVA_OPTS", "-XX:+PrintCommandLineFlags"), link.toString(),
                "--version");
        assertEquals(0, r.status(), r.err());
        assertTrue(!r.out().contains("MaxDirectMemorySize") && r.out().contains("jvhost "), r.out());
    }
}
