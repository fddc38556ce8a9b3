package io.jvhost.testvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.parallel.ResourceLock;

/**
 * Control test without any back-end: the guest boots, reaches a console sync point, the host answers
 * over the serial console, QMP works, and the guest powers off with PASS. When this fails the problem
 * is the environment (QEMU, kernel, harness), not the back-end.
 */
@ResourceLock(TestVm.VM_LOCK)
@Timeout(value = 20, unit = TimeUnit.MINUTES)
class GuestHarnessTest {

    @Test
    void consoleSyncQmpAndPowerOff() throws Exception {
        GuestArtifacts guest = GuestArtifacts.get();
        Path run = TestVm.newRunDir("GuestHarnessTest");
        try (QemuGuest vm = QemuGuest.start(new QemuGuest.Options()
                .name("sync")
                .runDir(run)
                .artifacts(guest)
                .test("sync"))) {
            QmpClient qmp = vm.qmp();
            Object status = qmp.execute("query-status", TestVm.timeout(Duration.ofSeconds(30)));
            assertEquals("running", ((Map<?, ?>) status).get("status"), "QMP query-status: " + status);

            vm.sync("one", TestVm.timeout(Duration.ofSeconds(240)));
            GuestResult result = vm.awaitResult(TestVm.timeout(Duration.ofSeconds(60)));
            assertTrue(result.passed(), result::describe);
            assertTrue(result.markers().contains("JVTEST-START sync"), result::describe);

            Optional<Integer> exit = vm.awaitExit(TestVm.timeout(Duration.ofSeconds(60)));
            assertEquals(Optional.of(0), exit, "QEMU exit status; " + vm.stderrLog());
            assertTrue(qmp.awaitEvent("SHUTDOWN", Duration.ofSeconds(10)).isPresent(),
                    "no SHUTDOWN event: " + qmp.events());
            System.out.printf("GuestHarnessTest: result after %d ms; logs in %s%n", result.elapsed().toMillis(), run);
        }
    }
}
