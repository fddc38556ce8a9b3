package io.jvhost.daemon;

import org.junit.jupiter.api.Test;

import java.io.InputStream;
import java.util.List;
import java.util.Properties;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class HelpVersionTest {

    @Test
    void helpDocumentsEveryOptionAndParameter() {
        for (String flag : List.of("--help", "-h")) {
            OptionsTest.Result r = OptionsTest.check(flag);
            assertEquals(0, r.status());
            assertEquals("", r.err());
            String help = r.out();
            assertTrue(help.startsWith("Usage: jvhost [options]\n"), help);
            for (String option : List.of("-h, --help", "-V, --version", "--blockdev", "--object iothread,id=<id>",
                    "--export [type=]vhost-user-blk", "--pidfile <path>", "--demo [<dir>]")) {
                assertTrue(help.contains(option), "help lacks " + option);
            }
            for (String parameter : List.of("driver=]file", "driver=]null-co", "node-name=<node>", "filename=<path>",
                    "read-only=on|off", "cache.direct=on|off", "aio=", "size=<bytes>", "read-zeroes=on|off",
                    "latency-ns=<ns>", "poll-max-ns", "driver=]raw", "driver=]throttle", "file=<child-node>",
                    "offset=<bytes>", "throttle-group=<group>", "--object throttle-group,id=<group>", "x-iops-total",
                    "x-bps-total", "id=<id>", "addr.type=unix", "addr.path=<socket-path>",
                    "addr.type=fd", "addr.str=<fd>", "writable=on|off", "num-queues=<n>", "logical-block-size=<b>",
                    "iothread=<id>", "iothread.<i>=<id>", "serial=<string>", "JVHOST_JAVA_OPTS", "SIGTERM", "SIGINT")) {
                assertTrue(help.contains(parameter), "help lacks " + parameter);
            }
            for (String line : help.split("\n")) {
                assertTrue(line.length() <= 100, "help line too long: " + line);
            }
        }
    }

    @Test
    void versionComesFromTheBuild() throws Exception {
        // Running from target/classes there is no manifest: the Maven-filtered resource must carry the version.
        Properties p = new Properties();
        try (InputStream in = Main.class.getResourceAsStream("version.properties")) {
            assertNotNull(in);
            p.load(in);
        }
        String expected = p.getProperty("version");
        assertFalse(expected.contains("${"), "version.properties was not filtered: " + expected);
        assertTrue(expected.matches("\\d+\\.\\d+\\.\\d+.*"), expected);
        assertEquals(expected, Main.version());

        for (String flag : List.of("--version", "-V")) {
            OptionsTest.Result r = OptionsTest.check(flag);
            assertEquals(0, r.status());
            assertEquals("jvhost " + expected + System.lineSeparator(), r.out());
            assertEquals("", r.err());
        }
    }
}
