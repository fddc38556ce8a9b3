package io.jvhost.testvm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.parallel.ResourceLock;

/**
 * Reset trial: the guest's {@code reset} test keeps generations of data on the disk (see the on-disk
 * protocol in guest/init) while the host resets it with QMP {@code system_reset} and has it reboot
 * itself with sysrq b, alternately, {@value #ROUNDS} times in one QEMU (no -no-reboot), each aimed at
 * one of the four steps of writing a generation (every step is hit by both kinds of reset). Every boot
 * must find and verify every committed generation, and no generation the guest reported committed
 * before a reset may be lost. After the last boot the guest stops cleanly, the back-end exits 0 on
 * SIGTERM, and the host checks the committed generations in the image itself.
 */
@ResourceLock(TestVm.VM_LOCK)
class GuestResetTest {
    private static final long IMAGE_BYTES = 64 * HostDisk.MIB;
    private static final int QUEUES = 2;
    private static final int SLOTS = 4;
    private static final int AREA_BLOCKS = 128;
    private static final long DATA_BLOCK = 256; // first block of area 0, as in guest/init
    private static final int BLOCK = 4096;
    /** Resets per run: even rounds by QMP system_reset, odd rounds by the guest (sysrq b). */
    private static final int ROUNDS = 8;
    /**
     * The guest's progress line after which round r resets: the step (r + r/2) mod 4 of the
     * generation after the committed ones, which gives each kind of reset all four steps.
     */
    private static final String[] STEPS = {"commit", "zeroed", "written", "verified"};
    /** Generations the guest must commit after each boot before the host resets it. */
    private static final int COMMITS_PER_BOOT = 2;

    private static final Pattern START = Pattern.compile("JVTEST-START reset\\b");
    private static final Pattern VERIFY = Pattern.compile("JVTEST-RESET-VERIFY PASS last=(\\d+) gens=(\\S+)");
    private static final Pattern COMMIT = Pattern.compile("JVTEST-RESET-COMMIT gen=(\\d+) area=\\d+ end");
    private static final Pattern FINAL = Pattern.compile("JVTEST-RESET-FINAL PASS last=(\\d+) gens=(\\S+)");
    private static final Pattern RESULT = Pattern.compile("JVTEST-RESULT ");

    private static GuestArtifacts guest;

    @BeforeAll
    @Timeout(value = 30, unit = TimeUnit.MINUTES) // a first-time guest build downloads a kernel
    static void buildGuest() throws Exception {
        guest = GuestArtifacts.get();
    }

    @Test
    @Timeout(value = 5, unit = TimeUnit.MINUTES)
    void committedDataSurvivesResetsAndReboots() throws Exception {
        Backend.Kind kind = Backend.Kind.fromSystemProperty();
        Path run = TestVm.newRunDir("GuestResetTest-" + kind.name().toLowerCase());
        Path image = HostDisk.createSparse(run.resolve("disk.img"), IMAGE_BYTES);
        Path sockets = TestVm.newSocketDir();
        Path socket = sockets.resolve("vhost.sock");
        Path pidFile = run.resolve("backend.pid");
        long t0 = System.nanoTime();
        try (Backend backend = Backend.start(kind, Backend.vhostUserBlkArgs(image, socket, QUEUES, pidFile),
                socket, pidFile, run, TestVm.timeout(Duration.ofSeconds(60)))) {
            List<String> report = new ArrayList<>();
            int printedMax = 0; // highest generation the guest said it committed (after its flush)
            int finalLast;
            String finalGens;
            try (QemuGuest vm = QemuGuest.start(new QemuGuest.Options()
                    .name("reset")
                    .runDir(run)
                    .artifacts(guest)
                    .test("reset")
                    .param("queues", QUEUES)
                    .param("sectors", IMAGE_BYTES / 512)
                    .param("slots", SLOTS)
                    .param("area_blocks", AREA_BLOCKS)
                    .noReboot(false) // resets and reboots must restart the guest in this QEMU
                    .cpus(2)
                    .memoryMiB(512)
                    .watchdog(TestVm.timeout(Duration.ofSeconds(150)))
                    .disk(QemuGuest.VhostUserBlkDisk.of(socket, QUEUES)))) {
                Steps s = new Steps(vm, backend);
                QmpClient qmp = vm.qmp(); // connect now: events are only sent after the handshake
                s.await(START, Duration.ofSeconds(120), "the first boot's JVTEST-START");
                long bootStart = System.nanoTime();
                for (int boot = 0; ; boot++) {
                    Matcher v = s.await(VERIFY, Duration.ofSeconds(60), "boot " + boot + "'s verification");
                    int last = Integer.parseInt(v.group(1));
                    String gens = v.group(2);
                    report.add(String.format("boot %d: verified %d ms after the %s, last=%d gens=%s (host saw"
                                    + " commits up to %d)", boot, ms(System.nanoTime() - bootStart),
                            boot == 0 ? "first boot's START" : "reset", last, gens, printedMax));
                    if (boot == 0) {
                        assertEquals("0 none", last + " " + gens, "the first boot must find a fresh image; "
                                + s.diag());
                    } else {
                        // the guest prints a commit only after its flush: it must be there after a reset
                        assertTrue(last >= printedMax, "boot " + boot + " found committed generations up to "
                                + last + " but the guest had committed " + printedMax + " before the reset; "
                                + s.diag());
                        assertTrue(last <= printedMax + 1, "boot " + boot + " found generation " + last
                                + " but at most " + (printedMax + 1) + " can have been committed; " + s.diag());
                        assertExpectedGenerations(last, gens, "boot " + boot, s);
                    }
                    for (int c = 0; c < COMMITS_PER_BOOT; c++) {
                        Matcher m = s.await(COMMIT, Duration.ofSeconds(60), "a commit after boot " + boot);
                        printedMax = Math.max(printedMax, Integer.parseInt(m.group(1)));
                    }
                    if (boot == ROUNDS) {
                        break;
                    }
                    boolean byHost = boot % 2 == 0;
                    String step = STEPS[(boot + boot / 2) % STEPS.length];
                    if (!step.equals("commit")) {
                        s.await(Pattern.compile("JVTEST-RESET-STEP gen=" + (printedMax + 1) + " " + step + "$"),
                                Duration.ofSeconds(60), "step '" + step + "' of generation " + (printedMax + 1));
                    }
                    // SeaBIOS resets the machine once more right after each reset, and the kernel's
                    // reboot tries several methods: each gives a RESET event, so match on the reason
                    qmp.skipEvents();
                    if (byHost) {
                        qmp.execute("system_reset", TestVm.timeout(Duration.ofSeconds(30)));
                    } else {
                        vm.sendLine("reboot");
                    }
                    String reason = byHost ? "host-qmp-system-reset" : "guest-reset";
                    Optional<Map<String, Object>> reset = qmp.awaitEvent(e -> "RESET".equals(e.get("event"))
                            && e.get("data") instanceof Map<?, ?> d && reason.equals(d.get("reason")),
                            TestVm.timeout(Duration.ofSeconds(30)));
                    assertTrue(reset.isPresent(), "no RESET event with reason " + reason + " after "
                            + (byHost ? "system_reset" : "sysrq b") + "; events " + qmp.events() + s.diag());
                    report.add(String.format("reset %d: %s after step '%s' of generation %d", boot + 1,
                            byHost ? "QMP system_reset" : "guest sysrq b", step, printedMax + 1));
                    bootStart = System.nanoTime();
                    // commits printed before the reset took effect still count; the next line that
                    // matters is the new boot's START
                    while (true) {
                        Matcher m = s.await(Pattern.compile(COMMIT.pattern() + "|" + START.pattern()),
                                Duration.ofSeconds(60), "boot " + (boot + 1) + "'s JVTEST-START", true);
                        if (m.group(1) == null) {
                            break;
                        }
                        printedMax = Math.max(printedMax, Integer.parseInt(m.group(1)));
                    }
                }

                vm.sendLine("stop");
                while (true) {
                    Matcher m = s.await(Pattern.compile(COMMIT.pattern() + "|" + FINAL.pattern()),
                            Duration.ofSeconds(60), "the final verification");
                    if (m.group(1) != null) {
                        printedMax = Math.max(printedMax, Integer.parseInt(m.group(1)));
                        continue;
                    }
                    finalLast = Integer.parseInt(m.group(2));
                    finalGens = m.group(3);
                    break;
                }
                report.add("final: last=" + finalLast + " gens=" + finalGens);
                assertEquals(printedMax, finalLast, "after stop the last committed generation is the last one"
                        + " the guest printed; " + s.diag());
                assertExpectedGenerations(finalLast, finalGens, "the final check", s);

                GuestResult result = vm.awaitResult(TestVm.timeout(Duration.ofSeconds(60)));
                assertTrue(result.passed(), () -> result.describe() + s.diag());
                Optional<Integer> exit = vm.awaitExit(TestVm.timeout(Duration.ofSeconds(60)));
                assertEquals(Optional.of(0), exit, "QEMU exit status after the guest powered off; " + s.diag());
                long hostResets = qmp.events().stream().filter(e -> e.get("data") instanceof Map<?, ?> d
                        && "host-qmp-system-reset".equals(d.get("reason"))).count();
                assertEquals((ROUNDS + 1) / 2, hostResets, "system_reset RESET events: " + qmp.events());
            }

            assertTrue(backend.isAlive(), "back-end exited; " + backend.log() + ":\n" + TestVm.tail(backend.log(), 30));
            int status = backend.stop(TestVm.timeout(Duration.ofSeconds(30)));
            assertEquals(0, status, "back-end exit status after SIGTERM; " + backend.log() + ":\n"
                    + TestVm.tail(backend.log(), 30));

            // The image, read by the host after the back-end exited.
            TreeSet<Integer> onDisk = checkImage(image);
            assertEquals(parseGens(finalGens), onDisk, "committed generations in " + image
                    + " (the guest's final check found " + finalGens + ")");
            assertEquals(finalLast, onDisk.isEmpty() ? 0 : onDisk.last(), "last committed generation in " + image);
            assertTrue(finalLast >= ROUNDS * COMMITS_PER_BOOT, "only " + finalLast + " generations committed");

            long tEnd = System.nanoTime();
            if (!Boolean.getBoolean("jvhost.testvm.keepImages")) {
                Files.delete(image);
            }
            report.forEach(l -> System.out.println("GuestResetTest: " + l));
            System.out.printf("GuestResetTest[%s]: %d resets (%d system_reset, %d sysrq b), %d generations,"
                            + " total %d ms; logs in %s%n", kind, ROUNDS, (ROUNDS + 1) / 2, ROUNDS / 2, finalLast,
                    ms(tEnd - t0), run);
        } finally {
            TestVm.deleteTree(sockets);
        }
    }

    /**
     * The protocol keeps the newest generations in their slots: with last committed generation L,
     * the slots hold L-K+2 .. L and possibly L-K+1 (unless the interrupted generation L+1 already
     * zeroed its slot), and nothing else.
     */
    private static void assertExpectedGenerations(int last, String gens, String when, Steps s) {
        TreeSet<Integer> got = parseGens(gens);
        for (int g = Math.max(1, last - SLOTS + 2); g <= last; g++) {
            assertTrue(got.contains(g), when + ": committed generation " + g + " is missing (last " + last
                    + ", found " + gens + "); " + s.diag());
        }
        for (int g : got) {
            assertTrue(g > last - SLOTS && g <= last, when + ": unexpected generation " + g + " (last " + last
                    + ", found " + gens + "); " + s.diag());
        }
    }

    /** Parses and checks every slot of the image like the guest does; returns the committed generations. */
    private static TreeSet<Integer> checkImage(Path image) throws Exception {
        long patternBlocks = guest.patternBytes() / BLOCK;
        TreeSet<Integer> gens = new TreeSet<>();
        for (int slot = 0; slot < SLOTS; slot++) {
            byte[] raw = HostDisk.read(image, (long) slot * BLOCK, BLOCK);
            String text = new String(raw, StandardCharsets.ISO_8859_1).replace("\0", "");
            int nl = text.indexOf('\n');
            String line = nl < 0 ? text : text.substring(0, nl);
            if (line.isEmpty()) {
                continue;
            }
            String[] f = line.split(" ");
            assertTrue(f.length == 6 && f[0].equals("JVRESET1") && f[1].startsWith("gen=") && f[2].startsWith("area=")
                    && f[3].startsWith("po=") && f[4].startsWith("sha=") && f[5].startsWith("chk="),
                    "slot " + slot + " of " + image + " holds '" + line + "'");
            String body = String.join(" ", f[0], f[1], f[2], f[3], f[4]);
            assertEquals(sha256(body.getBytes(StandardCharsets.ISO_8859_1)), f[5].substring(4),
                    "record checksum of slot " + slot + ": " + line);
            int gen = Integer.parseInt(f[1].substring(4));
            long po = Long.parseLong(f[3].substring(3));
            assertEquals(slot, Integer.parseInt(f[2].substring(5)), "area of slot " + slot + ": " + line);
            assertEquals(slot, gen % SLOTS, "generation in slot " + slot + ": " + line);
            assertEquals((gen * 131L) % (patternBlocks - AREA_BLOCKS), po, "pattern offset of " + line);
            byte[] want = HostDisk.read(guest.pattern(), po * BLOCK, AREA_BLOCKS * BLOCK);
            assertEquals(sha256(want), f[4].substring(4), "data checksum recorded in slot " + slot);
            byte[] got = HostDisk.read(image, (DATA_BLOCK + (long) slot * AREA_BLOCKS) * BLOCK, AREA_BLOCKS * BLOCK);
            assertArrayEquals(want, got, "area " + slot + " of " + image + " must hold generation " + gen);
            assertTrue(gens.add(gen), "generation " + gen + " committed twice");
        }
        return gens;
    }

    /** The guest's list ("none" or comma-separated, in slot order) as a set. */
    private static TreeSet<Integer> parseGens(String gens) {
        TreeSet<Integer> set = new TreeSet<>();
        if (!gens.equals("none")) {
            for (String g : gens.split(",")) {
                set.add(Integer.parseInt(g));
            }
        }
        return set;
    }

    private static String sha256(byte[] b) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
    }

    private static long ms(long nanos) {
        return nanos / 1_000_000;
    }

    /** Console waits that fail fast, with the logs, on a guest result or an unexpected boot. */
    static final class Steps {
        private final QemuGuest vm;
        private final Backend backend;

        Steps(QemuGuest vm, Backend backend) {
            this.vm = vm;
            this.backend = backend;
        }

        Matcher await(Pattern wanted, Duration timeout, String what) throws InterruptedException {
            return await(wanted, timeout, what, false);
        }

        /**
         * Waits for the next console line matching {@code wanted}; a JVTEST-RESULT line (the guest
         * failed or finished early) or, unless {@code startExpected}, a JVTEST-START line (an
         * unexpected boot) fails the test at once.
         */
        Matcher await(Pattern wanted, Duration timeout, String what, boolean startExpected) throws InterruptedException {
            Optional<QemuGuest.ConsoleLine> l = vm.awaitLine(t -> wanted.matcher(t).find()
                    || RESULT.matcher(t).find() || START.matcher(t).find(), TestVm.timeout(timeout));
            if (l.isEmpty()) {
                fail("no " + what + " within " + timeout + (vm.isAlive() ? "" : " (QEMU exited)") + "; " + diag());
            }
            Matcher m = wanted.matcher(l.get().text());
            if (!m.find()) {
                fail("waiting for " + what + ", got '" + l.get().text() + "'"
                        + (START.matcher(l.get().text()).find() && !startExpected ? " (unexpected boot)" : "")
                        + "; " + diag());
            }
            return m;
        }

        String diag() {
            return "\nconsole " + vm.serialLog() + ":\n" + TestVm.tail(vm.serialLog(), 40)
                    + "\nQEMU stderr " + vm.stderrLog() + ":\n" + TestVm.tail(vm.stderrLog(), 10)
                    + "\nback-end log " + backend.log() + ":\n" + TestVm.tail(backend.log(), 20);
        }
    }
}
