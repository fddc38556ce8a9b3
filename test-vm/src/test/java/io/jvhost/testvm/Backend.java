package io.jvhost.testvm;

import java.io.File;
import java.io.IOException;
import java.net.URL;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.jar.JarFile;
import java.util.jar.Manifest;

/**
 * A vhost-user-blk back-end process serving one unix socket. Both implementations take the same
 * qemu-storage-daemon-style command line (see {@link #vhostUserBlkArgs}) and signal readiness by
 * writing {@code --pidfile} once their exports listen.
 */
public interface Backend extends AutoCloseable {

    /** Which program serves the disk; chosen by {@code -Djvhost.testvm.backend=jvhost|qsd}. */
    enum Kind {
        /** {@code java -cp <test class path> io.jvhost.daemon.Main ARGS} (default). */
        JVHOST,
        /** {@code qemu-storage-daemon ARGS}: the reference the harness is proven against. */
        QSD;

        public static Kind fromSystemProperty() {
            String v = System.getProperty("jvhost.testvm.backend", "jvhost").trim().toLowerCase(Locale.ROOT);
            switch (v) {
                case "jvhost":
                    return JVHOST;
                case "qsd":
                case "qemu-storage-daemon":
                    return QSD;
                default:
                    throw new IllegalArgumentException("jvhost.testvm.backend must be jvhost or qsd, not " + v);
            }
        }
    }

    /** The socket QEMU connects to ({@code -chardev socket,path=...}). */
    Path socket();

    long pid();

    boolean isAlive();

    /** Combined stdout/stderr of the back-end. */
    Path log();

    /** Sends SIGTERM and waits for the process to exit; returns its exit status. */
    int stop(Duration timeout) throws IOException, InterruptedException;

    /** Kills the process if it is still running (SIGTERM, then SIGKILL after a short grace). */
    @Override
    void close();

    /**
     * The qemu-storage-daemon-compatible arguments for one raw file exported over vhost-user-blk.
     */
    static List<String> vhostUserBlkArgs(Path image, Path socket, int numQueues, Path pidFile) {
        return vhostUserBlkArgs(image, socket, numQueues, pidFile, "");
    }

    /**
     * The same with more {@code --blockdev} options appended, e.g. {@code ",locking=off"} for two
     * back-ends sharing one image during a migration.
     */
    static List<String> vhostUserBlkArgs(Path image, Path socket, int numQueues, Path pidFile, String blockdevExtra) {
        TestVm.checkSocketPath(socket);
        return List.of(
                "--blockdev", "driver=file,node-name=disk0,filename=" + image + blockdevExtra,
                "--object", "iothread,id=io0",
                "--export", "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=" + socket
                        + ",writable=on,num-queues=" + numQueues,
                "--pidfile", pidFile.toString());
    }

    /**
     * Starts a back-end of {@code kind} with {@code args} and waits until it has written
     * {@code pidFile} (containing its own pid) and {@code socket} exists.
     */
    static Backend start(Kind kind, List<String> args, Path socket, Path pidFile, Path logDir, Duration timeout)
            throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>();
        String name;
        switch (kind) {
            case QSD -> {
                name = "qsd";
                cmd.add(TestVm.requireExecutable(System.getProperty("jvhost.testvm.qsd", "qemu-storage-daemon"),
                        "qemu-utils").toString());
            }
            case JVHOST -> {
                name = "jvhost";
                cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
                String jvmArgs = System.getProperty("jvhost.testvm.daemonJvmArgs",
                        "-ea --enable-native-access=ALL-UNNAMED");
                for (String a : jvmArgs.trim().split("\\s+")) {
                    if (!a.isEmpty()) {
                        cmd.add(a);
                    }
                }
                cmd.add("-cp");
                cmd.add(testClassPath());
                cmd.add(System.getProperty("jvhost.testvm.daemonMain", "io.jvhost.daemon.Main"));
            }
            default -> throw new AssertionError(kind);
        }
        cmd.addAll(args);
        return ProcessBackend.start(name, cmd, socket, pidFile, logDir.resolve(name + ".log"), timeout);
    }

    /**
     * The class path of this JVM, for launching the daemon: {@code jvhost.testvm.classpath} if set,
     * else {@code java.class.path} with surefire's manifest-only booter jar expanded.
     */
    static String testClassPath() throws IOException {
        String prop = System.getProperty("jvhost.testvm.classpath");
        if (prop != null && !prop.isBlank()) {
            return prop;
        }
        List<String> out = new ArrayList<>();
        for (String entry : System.getProperty("java.class.path").split(File.pathSeparator)) {
            File f = new File(entry);
            if (f.getName().startsWith("surefirebooter") && f.getName().endsWith(".jar") && f.isFile()) {
                try (JarFile jar = new JarFile(f)) {
                    Manifest mf = jar.getManifest();
                    String cp = mf == null ? null : mf.getMainAttributes().getValue("Class-Path");
                    if (cp != null) {
                        URL base = f.toURI().toURL();
                        for (String u : cp.trim().split("\\s+")) {
                            try {
                                out.add(new File(new URL(base, u).toURI()).getPath());
                            } catch (java.net.URISyntaxException e) {
                                throw new IOException("bad Class-Path entry " + u + " in " + f, e);
                            }
                        }
                        continue;
                    }
                }
            }
            out.add(entry);
        }
        return String.join(File.pathSeparator, out);
    }
}
