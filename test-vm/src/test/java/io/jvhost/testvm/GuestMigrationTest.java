package io.jvhost.testvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.parallel.ResourceLock;
import org.opentest4j.AssertionFailedError;

/**
 * Migration trial: live migration over TCP on loopback between QEMUs on this machine, ping-pong
 * ({@value #HOPS} hops: A to B, then B to a new QEMU on A), while the guest runs a continuous
 * write + read + verify workload ({@code migrate} in guest/init).
 *
 * <p>With the disk, QEMU n is attached to jvhost daemon A or B, both serving the same image with
 * {@code locking=off}. The guest's own checks cannot see a back-end that does not mark the pages it
 * writes (vm-facts.md), so after each hop the source daemon's log must contain its count of
 * distinct pages marked in the dirty log, used-ring pages included.
 *
 * <p>The control runs first: the same migrations with no disk ({@code migrate_control}: CPU and
 * memory load with its own checks). QEMU 7.2's TCG migration can break a guest by itself; when the
 * control fails, that is the cause, not the back-end. Guest RAM is a /dev/shm file and the downtime
 * is QEMU's default, the settings under which the control has been reliable.
 */
@ResourceLock(TestVm.VM_LOCK)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class GuestMigrationTest {
    private static final int HOPS = 2;
    private static final int QUEUES = 2;
    private static final int MEMORY_MIB = 512;
    private static final long IMAGE_BYTES = 64 * HostDisk.MIB;
    /** Heartbeats to see before migrating, and on each destination before going on. */
    private static final int HEARTBEATS = 3;
    private static final Duration MIGRATION_TIMEOUT = Duration.ofMinutes(5); // 5-17 MB/s here

    private static final Pattern START = Pattern.compile("JVTEST-START ");
    private static final Pattern RESULT = Pattern.compile("JVTEST-RESULT ");
    private static final Pattern READY = Pattern.compile("JVTEST-MIGRATE-READY ");
    private static final Pattern HEARTBEAT = Pattern.compile("JVTEST-HB n=(\\d+) ");
    private static final Pattern VERIFY = Pattern.compile("JVTEST-MIGRATE-VERIFY PASS iterations=(\\d+) chunks=(\\d+)");
    private static final Pattern AREA = Pattern.compile("JVTEST-CHECKSUM migrate-area sha256=(\\w+) offset=(\\d+) bytes=(\\d+)");
    /** Printed by a source daemon when dirty logging is switched off or its front-end disconnects. */
    static final Pattern DIRTY_LOG = Pattern.compile(
            "dirty log: (\\d+) distinct pages marked \\(used-ring pages: (\\d+)/(\\d+)\\)");
    private static final String DIRTY_LOG_FORMAT = "dirty log: <N> distinct pages marked (used-ring pages: <a>/<b>)";

    private static GuestArtifacts guest;
    /** Outcome of the control in this JVM: null if it did not run. */
    private static volatile Boolean controlPassed;

    @BeforeAll
    @Timeout(value = 30, unit = TimeUnit.MINUTES) // a first-time guest build downloads a kernel
    static void buildGuest() throws Exception {
        guest = GuestArtifacts.get();
    }

    @Test
    @Order(1)
    @Timeout(value = 12, unit = TimeUnit.MINUTES)
    void controlWithoutDisk() throws Exception {
        try {
            new Trial(false).run();
            controlPassed = true;
        } catch (AssertionFailedError | IOException e) {
            controlPassed = false;
            throw new AssertionFailedError("the TCG migration itself failed: the control guest has no vhost-user"
                    + " disk, so QEMU 7.2 (TCG) migration broke it without any back-end involved. " + e.getMessage(), e);
        }
    }

    @Test
    @Order(2)
    @Timeout(value = 12, unit = TimeUnit.MINUTES)
    void pingPongWithDisk() throws Exception {
        try {
            new Trial(true).run();
        } catch (AssertionFailedError | IOException e) {
            if (Boolean.FALSE.equals(controlPassed)) {
                throw new AssertionFailedError("(the control migration without a disk failed too in this run, so"
                        + " QEMU's TCG migration is suspect before the back-end) " + e.getMessage(), e);
            }
            throw e;
        }
    }

    /** One ping-pong run; with or without the disk. */
    private static final class Trial {
        private final boolean withDisk;
        private final Backend.Kind kind = Backend.Kind.fromSystemProperty();
        private final Path run;
        private final List<String> report = new ArrayList<>();
        private final List<String> dirtyLogProblems = new ArrayList<>();
        private final List<QemuGuest> guests = new ArrayList<>();
        private final Backend[] daemons = new Backend[2];
        private final Path[] sockets = new Path[2];
        private Path image;

        Trial(boolean withDisk) {
            this.withDisk = withDisk;
            this.run = TestVm.newRunDir("GuestMigrationTest-" + (withDisk ? kind.name().toLowerCase() : "control"));
        }

        void run() throws Exception {
            long t0 = System.nanoTime();
            Path socketDir = TestVm.newSocketDir();
            try {
                if (withDisk) {
                    image = HostDisk.createSparse(run.resolve("disk.img"), IMAGE_BYTES);
                    for (int i = 0; i < 2; i++) {
                        String n = i == 0 ? "a" : "b";
                        sockets[i] = socketDir.resolve("vhost-" + n + ".sock");
                        Path pid = run.resolve("daemon-" + n + ".pid");
                        // both daemons open the image for writing at once: no image lock
                        daemons[i] = Backend.start(kind, Backend.vhostUserBlkArgs(image, sockets[i], QUEUES, pid,
                                        ",locking=off"), sockets[i], pid, Files.createDirectories(run.resolve("daemon-" + n)),
                                TestVm.timeout(Duration.ofSeconds(60)));
                    }
                }
                pingPong();
                if (withDisk) {
                    for (int i = 0; i < 2; i++) {
                        assertTrue(daemons[i].isAlive(), daemonName(i) + " exited; " + daemonLog(i));
                        int status = daemons[i].stop(TestVm.timeout(Duration.ofSeconds(30)));
                        assertEquals(0, status, daemonName(i) + " exit status after SIGTERM; " + daemonLog(i));
                    }
                }
                report.forEach(l -> System.out.println("GuestMigrationTest: " + l));
                System.out.printf("GuestMigrationTest[%s]: %d hops, total %d ms; logs in %s%n",
                        withDisk ? kind : "control", HOPS, (System.nanoTime() - t0) / 1_000_000, run);
                if (!dirtyLogProblems.isEmpty()) {
                    fail("the guest migrated " + HOPS + " times and its verification passed, but the dirty-log check"
                            + " failed:\n  " + String.join("\n  ", dirtyLogProblems));
                }
                if (withDisk && !Boolean.getBoolean("jvhost.testvm.keepImages")) {
                    Files.delete(image);
                }
            } finally {
                for (QemuGuest g : guests) {
                    g.close(); // kills QEMU if still running, removes its /dev/shm file
                }
                for (Backend d : daemons) {
                    if (d != null) {
                        d.close();
                    }
                }
                TestVm.deleteTree(socketDir);
            }
        }

        private void pingPong() throws Exception {
            QemuGuest src = start(0, null);
            QmpClient qsrc = src.qmp();
            await(src, READY, Duration.ofSeconds(120), "the workload to start");
            long lastBeat = awaitHeartbeats(src, 0, HEARTBEATS);
            for (int hop = 1; hop <= HOPS; hop++) {
                int port = 0;
                QemuGuest dst = null;
                QmpClient qdst = null;
                for (int attempt = 1; qdst == null; attempt++) {
                    port = freePort();
                    dst = start(hop, "tcp:127.0.0.1:" + port);
                    try {
                        qdst = dst.qmp();
                        // answered from the main loop, i.e. after QEMU set up -incoming
                        assertEquals("inmigrate", status(qdst), "destination state before hop " + hop);
                    } catch (IOException e) {
                        // the port was free a moment ago; another process may have taken it since
                        if (attempt < 3 && dst.awaitExit(Duration.ofSeconds(10)).isPresent()
                                && TestVm.tail(dst.stderrLog(), 10).contains("Address already in use")) {
                            qdst = null;
                            continue;
                        }
                        throw e;
                    }
                }
                for (QmpClient q : List.of(qsrc, qdst)) {
                    q.execute("migrate-set-capabilities", Map.of("capabilities",
                            List.of(Map.of("capability", "events", "state", true))), TestVm.timeout(Duration.ofSeconds(30)));
                    q.skipEvents();
                }
                int srcDaemon = (hop - 1) % 2;
                long logFrom = withDisk ? LogWatch.size(daemons[srcDaemon].log()) : 0;

                long tm = System.nanoTime();
                try {
                    qsrc.execute("migrate", Map.of("uri", "tcp:127.0.0.1:" + port), TestVm.timeout(Duration.ofSeconds(30)));
                } catch (QmpClient.QmpException e) {
                    fail("QEMU refused to start migration hop " + hop + ": " + e.getMessage() + diag(src));
                }
                Optional<Map<String, Object>> end = qsrc.awaitEvent(e -> "MIGRATION".equals(e.get("event"))
                        && e.get("data") instanceof Map<?, ?> d
                        && Set.of("completed", "failed", "cancelled").contains(d.get("status")),
                        TestVm.timeout(MIGRATION_TIMEOUT));
                Map<?, ?> info = (Map<?, ?>) qsrc.execute("query-migrate", TestVm.timeout(Duration.ofSeconds(30)));
                if (end.isEmpty()) {
                    fail("migration hop " + hop + " did not end within " + MIGRATION_TIMEOUT + "; query-migrate: " + info
                            + diag(src) + diag(dst));
                }
                Object st = ((Map<?, ?>) end.get().get("data")).get("status");
                if (!"completed".equals(st)) {
                    fail("migration hop " + hop + " " + st + ": " + info.get("error-desc") + "; query-migrate: " + info
                            + diag(src) + diag(dst));
                }
                Optional<Map<String, Object>> resume = qdst.awaitEvent("RESUME", TestVm.timeout(Duration.ofSeconds(60)));
                assertTrue(resume.isPresent(), "the destination of hop " + hop + " did not resume; events "
                        + qdst.events() + diag(dst));
                long migrated = System.nanoTime() - tm;
                assertEquals("running", status(qdst), "destination state after hop " + hop);
                assertEquals("postmigrate", status(qsrc), "source state after hop " + hop);

                // The same guest goes on: its heartbeat counter continues on the destination's console.
                long before = lastBeat;
                lastBeat = lastHeartbeat(src, lastBeat);
                long first = awaitHeartbeats(dst, lastBeat, 1);
                lastBeat = awaitHeartbeats(dst, first, HEARTBEATS - 1);
                // asked again: the MIGRATION event comes before QEMU has filled in the final times
                info = (Map<?, ?>) qsrc.execute("query-migrate", TestVm.timeout(Duration.ofSeconds(30)));
                Map<?, ?> ram = (Map<?, ?>) info.get("ram");
                report.add(String.format("hop %d (%s): %d ms until the destination resumed; QEMU total-time %s ms,"
                                + " downtime %s ms, setup %s ms, RAM sent %s bytes; heartbeats %d (before) -> %d (last"
                                + " on the source) -> %d (first on the destination)", hop,
                        withDisk ? daemonName(srcDaemon) + " -> " + daemonName(hop % 2) : "no disk", migrated / 1_000_000,
                        info.get("total-time"), info.get("downtime"), info.get("setup-time"),
                        ram == null ? "?" : ram.get("transferred"), before, lastHeartbeat(src, 0), first));

                // The source QEMU leaves; its daemon then reports what it marked in the dirty log.
                quit(src, qsrc);
                if (withDisk && kind == Backend.Kind.JVHOST) {
                    checkDirtyLog(hop, srcDaemon, logFrom);
                } else if (withDisk) {
                    report.add("hop " + hop + ": dirty-log count not checked: " + kind + " does not report it");
                }
                src = dst;
                qsrc = qdst;
            }

            src.sendLine("stop");
            Matcher v = await(src, VERIFY, Duration.ofSeconds(120), "the guest's final verification");
            report.add("guest: " + v.group(1) + " iterations, " + v.group(2) + " chunks verified at the end");
            Matcher area = null;
            if (withDisk) {
                area = await(src, AREA, Duration.ofSeconds(60), "the guest's checksum of its work area");
            }
            GuestResult result = src.awaitResult(TestVm.timeout(Duration.ofSeconds(60)));
            assertTrue(result.passed(), () -> result.describe() + diag(null));
            assertEquals(Optional.of(0), src.awaitExit(TestVm.timeout(Duration.ofSeconds(60))),
                    "QEMU exit status after the guest powered off" + diag(src));
            if (withDisk) {
                // what the last destination's daemon wrote is in the image
                String onDisk = HostDisk.sha256(image, Long.parseLong(area.group(2)), Long.parseLong(area.group(3)));
                assertEquals(area.group(1), onDisk, "work area in " + image + " vs the guest's final read");
            }
        }

        private QemuGuest start(int index, String incoming) throws IOException {
            // identical on every side of a migration but for the socket (daemon A or B) and -incoming
            QemuGuest.Options o = new QemuGuest.Options()
                    .name("vm" + index)
                    .runDir(run)
                    .artifacts(guest)
                    .test(withDisk ? "migrate" : "migrate_control")
                    .kernelArg("init_on_alloc=0") // pages the device fills are not first zeroed by the CPU
                    .cpus(2)
                    .memoryMiB(MEMORY_MIB)
                    .watchdog(TestVm.timeout(Duration.ofSeconds(600)));
            if (withDisk) {
                o.param("queues", QUEUES).param("sectors", IMAGE_BYTES / 512)
                        .disk(new QemuGuest.VhostUserBlkDisk("vub0", sockets[index % 2], QUEUES, 128, false));
            }
            if (incoming != null) {
                o.incoming(incoming);
            }
            QemuGuest g = QemuGuest.start(o);
            guests.add(g);
            return g;
        }

        private void quit(QemuGuest vm, QmpClient qmp) throws Exception {
            try {
                qmp.execute("quit", TestVm.timeout(Duration.ofSeconds(30)));
            } catch (IOException e) {
                // QEMU may exit before its reply arrives; its exit is what matters
                if (vm.isAlive() && qmp.isConnected()) {
                    throw e;
                }
            }
            assertTrue(vm.awaitExit(TestVm.timeout(Duration.ofSeconds(60))).isPresent(),
                    "the migration source did not quit" + diag(vm));
        }

        private void checkDirtyLog(int hop, int daemon, long from) throws Exception {
            Optional<Matcher> m = LogWatch.awaitLine(daemons[daemon].log(), from, DIRTY_LOG,
                    TestVm.timeout(Duration.ofSeconds(20)));
            if (m.isEmpty()) {
                dirtyLogProblems.add("hop " + hop + ": the line '" + DIRTY_LOG_FORMAT + "' was missing from the"
                        + " source " + daemonName(daemon) + "'s log " + daemons[daemon].log()
                        + " (20 s after its QEMU quit)");
                return;
            }
            long pages = Long.parseLong(m.get().group(1));
            long usedMarked = Long.parseLong(m.get().group(2));
            long usedTotal = Long.parseLong(m.get().group(3));
            report.add("hop " + hop + ": source " + daemonName(daemon) + " logged '" + m.get().group() + "'");
            // The guest's I/O never stops, so requests complete while logging is on: besides the
            // used rings, their status bytes and read buffers must have been marked.
            if (pages <= usedMarked) {
                dirtyLogProblems.add("hop " + hop + ": " + daemonName(daemon) + " marked no page besides the used"
                        + " rings although the guest's I/O ran throughout: '" + m.get().group() + "'");
            }
            if (usedTotal <= 0 || usedMarked != usedTotal) {
                dirtyLogProblems.add("hop " + hop + ": " + daemonName(daemon) + " did not mark every used-ring page"
                        + " (a == b > 0 expected): '" + m.get().group() + "'");
            }
        }

        /**
         * Waits for the next {@code count} heartbeats, each numbered above the one before (the first
         * above {@code after}: a destination continues the source's count); returns the last number.
         * The guest failing (JVTEST-RESULT) or booting again (JVTEST-START) ends the test.
         */
        private long awaitHeartbeats(QemuGuest vm, long after, int count) throws InterruptedException {
            long n = after;
            for (int i = 0; i < count; i++) {
                Matcher m = await(vm, HEARTBEAT, Duration.ofSeconds(60), "heartbeat after " + n);
                long k = Long.parseLong(m.group(1));
                if (k <= n) {
                    fail("heartbeat " + k + " on " + vm.serialLog().getFileName() + " after " + n
                            + ": the guest's counter went back" + diag(null));
                }
                n = k;
            }
            return n;
        }

        /** The highest heartbeat on {@code vm}'s console so far (at least {@code floor}). */
        private static long lastHeartbeat(QemuGuest vm, long floor) {
            long n = floor;
            for (QemuGuest.ConsoleLine l : vm.consoleLines()) {
                Matcher m = HEARTBEAT.matcher(l.text());
                if (m.find()) {
                    n = Math.max(n, Long.parseLong(m.group(1)));
                }
            }
            return n;
        }

        private Matcher await(QemuGuest vm, Pattern wanted, Duration timeout, String what) throws InterruptedException {
            // before READY the guest's own JVTEST-START comes; after it a START means the guest rebooted
            boolean startFails = wanted != READY;
            Optional<QemuGuest.ConsoleLine> l = vm.awaitLine(t -> wanted.matcher(t).find() || RESULT.matcher(t).find()
                    || (startFails && START.matcher(t).find()), TestVm.timeout(timeout));
            if (l.isEmpty()) {
                fail("no " + what + " on " + vm.serialLog().getFileName() + " within " + timeout
                        + (vm.isAlive() ? "" : " (QEMU exited)") + diag(vm));
            }
            Matcher m = wanted.matcher(l.get().text());
            if (!m.find()) {
                fail("waiting for " + what + ", " + vm.serialLog().getFileName() + " printed '" + l.get().text() + "'"
                        + diag(vm));
            }
            return m;
        }

        private static String status(QmpClient q) throws Exception {
            return String.valueOf(((Map<?, ?>) q.execute("query-status", TestVm.timeout(Duration.ofSeconds(30))))
                    .get("status"));
        }

        private static String daemonName(int i) {
            return i == 0 ? "daemon A" : "daemon B";
        }

        private String daemonLog(int i) {
            return daemons[i].log() + ":\n" + TestVm.tail(daemons[i].log(), 30);
        }

        /** Logs for a failure message: the guest's console and QEMU's stderr (or every guest's), daemon logs. */
        private String diag(QemuGuest vm) {
            StringBuilder sb = new StringBuilder();
            for (QemuGuest g : vm == null ? guests : List.of(vm)) {
                sb.append("\nconsole ").append(g.serialLog()).append(":\n").append(TestVm.tail(g.serialLog(), 25))
                        .append("\nQEMU stderr ").append(g.stderrLog()).append(":\n").append(TestVm.tail(g.stderrLog(), 10));
            }
            for (int i = 0; i < 2; i++) {
                if (daemons[i] != null) {
                    sb.append('\n').append(daemonName(i)).append(' ').append(daemonLog(i));
                }
            }
            return sb.toString();
        }
    }

    /** A TCP port on loopback that was free a moment ago, for {@code -incoming}. */
    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
