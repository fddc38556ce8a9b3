package io.jvhost.daemon;

import io.jvhost.daemon.DaemonConfig.Action;
import io.jvhost.daemon.DaemonConfig.DemoSpec;
import io.jvhost.daemon.DaemonConfig.ExportSpec;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.ZonedDateTime;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.ConsoleHandler;
import java.util.logging.Formatter;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

/**
 * {@code jvhost}: the process. The main thread parses the command line, builds everything ({@link Daemon}),
 * prints the readiness lines and then only waits for SIGTERM/SIGINT or QMP quit; the exports run on the main loop
 * and iothreads, the QMP monitors on their own loop.
 */
public final class Main {
    /** One line per record; the logger is shortened to its class name. */
    static final String LOG_FORMAT = "%1$tT %4$s %3$s: %5$s%6$s%n";

    private static final Logger LOG = Logger.getLogger(Main.class.getName());

    private Main() {}

    public static void main(String[] args) {
        int status = run(args, System.out, System.err);
        System.out.flush();
        System.err.flush();
        // Netty's loop threads are not daemon threads, and the status must reach the parent either way.
        System.exit(status);
    }

    /**
     * Everything {@link #main} does, returning the exit status instead of exiting. With a valid command line that
     * is not --help/--version this serves until SIGTERM or SIGINT.
     */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        DaemonConfig cfg = parse(args, out, err);
        if (cfg == null) return 1;
        if (cfg.action() != Action.RUN) return 0;
        return serve(cfg, out, err);
    }

    /**
     * The command-line half of {@link #run}: parses and validates, prints the help, the version or the error line.
     * Returns the exit status for that (0 or 1) without serving anything.
     */
    public static int check(String[] args, PrintStream out, PrintStream err) {
        return parse(args, out, err) == null ? 1 : 0;
    }

    private static DaemonConfig parse(String[] args, PrintStream out, PrintStream err) {
        DaemonConfig cfg;
        try {
            cfg = Options.parse(args);
        } catch (UsageException e) {
            err.println("jvhost: " + e.getMessage());
            err.flush();
            return null;
        }
        switch (cfg.action()) {
            case HELP -> out.print(Options.usage());
            case VERSION -> out.println("jvhost " + version());
            default -> { }
        }
        out.flush();
        return cfg;
    }

    /** The version from the jar manifest, else from the Maven-filtered resource (running from target/classes). */
    public static String version() {
        String v = Main.class.getPackage().getImplementationVersion();
        if (v != null && !v.isEmpty()) return v;
        try (InputStream in = Main.class.getResourceAsStream("version.properties")) {
            if (in != null) {
                Properties p = new Properties();
                p.load(in);
                v = p.getProperty("version");
                if (v != null && !v.isEmpty() && !v.startsWith("${")) return v;
            }
        } catch (IOException e) {
            // fall through
        }
        return "unknown";
    }

    private static int serve(DaemonConfig cfg, PrintStream out, PrintStream err) {
        configureLogging();
        Shutdown shutdown = new Shutdown(cfg.pidfile());
        shutdown.install("TERM");
        shutdown.install("INT");

        if (cfg.demo() != null) {
            try {
                createDemoImage(cfg.demo());
            } catch (IOException e) {
                err.println("jvhost: --demo: cannot create " + cfg.demo().image() + ": " + e.getMessage());
                return 1;
            }
        }

        Daemon daemon;
        try {
            daemon = Daemon.start(cfg, shutdown::quit);
        } catch (UsageException e) {
            err.println("jvhost: " + e.getMessage());
            return 1;
        } catch (RuntimeException e) {
            // A bug rather than a bad option: keep the stack trace, still one line for the user, status 1.
            LOG.log(Level.SEVERE, "startup failed", e);
            err.println("jvhost: startup failed: " + e);
            return 1;
        }
        try {
            for (ExportSpec e : cfg.exports()) {
                out.println("jvhost: export " + e.id() + " listening on " + e.address() + " (" + e.numQueues()
                        + (e.numQueues() == 1 ? " queue)" : " queues)"));
            }
            for (DaemonConfig.MonitorSpec m : cfg.monitors()) {
                out.println("jvhost: QMP monitor " + m.chardev() + " listening on " + m.socketPath());
            }
            if (cfg.demo() != null) out.print(demoInstructions(cfg.demo()));
            out.flush();
            shutdown.await();
            LOG.info(shutdown.signal() == null ? "quit requested over QMP, shutting down"
                    : "received SIG" + shutdown.signal() + ", shutting down");
        } finally {
            daemon.close();
        }
        LOG.info("exiting");
        return 0;
    }

    private static void createDemoImage(DemoSpec demo) throws IOException {
        Path image = demo.image();
        if (Files.exists(image)) {
            LOG.info("demo: using the existing image " + image);
            return;
        }
        Files.createDirectories(image.getParent());
        // setLength on a new file leaves a hole: 1 GiB apparent, no blocks allocated.
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(demo.imageSize());
        }
        LOG.info("demo: created the sparse image " + image + " (" + (demo.imageSize() >> 20) + " MiB)");
    }

    static String demoInstructions(DemoSpec demo) {
        String ram = "1G";     // guest RAM, unrelated to the disk size; -m and the backend size must match
        String n = System.lineSeparator();
        return "jvhost: demo image " + demo.image() + " (" + (demo.imageSize() >> 30) + " GiB, sparse)" + n
                + "Attach a VM to it (the disk is /dev/vda in the guest; add boot media, e.g. -cdrom <installer.iso>," + n
                + "or -kernel/-initrd/-append; guest RAM must be shared, so keep the memory-backend-file line):" + n
                + n
                + "  qemu-system-x86_64 -accel kvm -accel tcg -machine q35,memory-backend=mem -m " + ram + " -smp " + demo.numQueues() + " \\" + n
                + "    -object memory-backend-file,id=mem,size=" + ram + ",share=on,mem-path=/dev/shm/jvhost-demo.ram \\" + n
                + "    -chardev socket,id=vub0,path=" + demo.socketPath() + " \\" + n
                + "    -device vhost-user-blk-pci,id=vub0dev,chardev=vub0,num-queues=" + demo.numQueues() + ",queue-size=128" + n
                + n
                + "QEMU leaves /dev/shm/jvhost-demo.ram behind; remove it when the VM is gone." + n
                + "Stop jvhost with Ctrl-C (the image stays; a later --demo reuses it)." + n;
    }

    /** JUL to stderr, one line per record. Programmatic so that no logging.properties is needed. */
    static void configureLogging() {
        System.setProperty("java.util.logging.SimpleFormatter.format", LOG_FORMAT);
        Level level = Level.INFO;
        String wanted = System.getProperty("jvhost.log.level");
        if (wanted != null) {
            try {
                level = Level.parse(wanted.toUpperCase(java.util.Locale.ROOT));
            } catch (IllegalArgumentException e) {
                System.err.println("jvhost: ignoring bad -Djvhost.log.level=" + wanted);
            }
        }
        Logger root = Logger.getLogger("");
        for (Handler h : root.getHandlers()) root.removeHandler(h);
        ConsoleHandler h = new ConsoleHandler();     // System.err
        h.setLevel(level);
        h.setFormatter(new OneLineFormatter());
        root.addHandler(h);
        root.setLevel(level);
    }

    /** {@link #LOG_FORMAT} with the logger name cut to its last component (the class). */
    static final class OneLineFormatter extends Formatter {
        @Override
        public String format(LogRecord r) {
            String logger = r.getLoggerName() == null ? "" : r.getLoggerName();
            logger = logger.substring(logger.lastIndexOf('.') + 1);
            String thrown = "";
            if (r.getThrown() != null) {
                java.io.StringWriter sw = new java.io.StringWriter();
                java.io.PrintWriter pw = new java.io.PrintWriter(sw);
                pw.println();
                r.getThrown().printStackTrace(pw);
                pw.flush();
                thrown = sw.toString().stripTrailing();
            }
            return String.format(LOG_FORMAT, ZonedDateTime.ofInstant(r.getInstant(), java.time.ZoneId.systemDefault()),
                    r.getSourceClassName(), logger, r.getLevel().getLocalizedName(), formatMessage(r), thrown);
        }
    }

    /**
     * SIGTERM/SIGINT: the first one releases the main thread to shut down in order (status 0); a second one, while
     * that shutdown hangs, exits at once with status 1. sun.misc.Signal rather than a shutdown hook, because the
     * JVM's own handler would exit with 128+signal.
     */
    private static final class Shutdown {
        private final CountDownLatch requested = new CountDownLatch(1);
        private final AtomicInteger count = new AtomicInteger();
        private final Path pidfile;
        private volatile String signal;

        Shutdown(Path pidfile) {
            this.pidfile = pidfile;
        }

        void install(String name) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(name), s -> onSignal(s.getName()));
            } catch (IllegalArgumentException e) {
                // e.g. -Xrs or a signal the VM reserves: the JVM's default behaviour remains.
                LOG.warning("cannot handle SIG" + name + ": " + e.getMessage());
            }
        }

        private void onSignal(String name) {
            if (count.getAndIncrement() == 0) {
                signal = name;
                requested.countDown();
                return;
            }
            LOG.severe("SIG" + name + " during shutdown: exiting now");
            if (pidfile != null) {
                try {
                    Files.deleteIfExists(pidfile);
                } catch (IOException ignored) {
                    // exiting anyway
                }
            }
            Runtime.getRuntime().halt(1);
        }

        /** QMP quit: like the first signal (status 0); a signal during that shutdown still exits at once. */
        void quit() {
            if (count.getAndIncrement() == 0) requested.countDown();
        }

        void await() {
            while (true) {
                try {
                    requested.await();
                    return;
                } catch (InterruptedException e) {
                    // Only a signal ends the daemon.
                }
            }
        }

        String signal() {
            return signal;
        }
    }
}
