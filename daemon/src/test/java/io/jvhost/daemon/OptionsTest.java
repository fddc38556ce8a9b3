package io.jvhost.daemon;

import io.jvhost.daemon.DaemonConfig.Action;
import io.jvhost.daemon.DaemonConfig.ExportSpec;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class OptionsTest {
    private static final String NODE = "--blockdev=null-co,node-name=n0,size=1G";

    /** Output and status of {@link Main#check}, the in-process command-line path. */
    record Result(int status, String out, String err) {}

    static Result check(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = Main.check(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Result(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    /** Asserts status 1, nothing on stdout and exactly this one line on stderr. */
    static void assertError(String expectedLine, String... args) {
        Result r = check(args);
        assertEquals(1, r.status(), () -> "status for " + Arrays.toString(args) + ", stderr: " + r.err());
        assertEquals(expectedLine + System.lineSeparator(), r.err(), () -> "stderr for " + Arrays.toString(args));
        assertEquals("", r.out());
    }

    private static String[] withNode(String... args) {
        List<String> l = new ArrayList<>();
        l.add(NODE);
        l.addAll(List.of(args));
        return l.toArray(new String[0]);
    }

    private static final String UNIX = "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=/tmp/x.sock";

    @Test
    void fullCommandLineInBothForms() throws Exception {
        DaemonConfig cfg = Options.parse(new String[] {
                "--blockdev", "driver=file,node-name=disk0,filename=/img/a,,b.raw,cache.direct=on",
                "--blockdev=null-co,node-name=n1,size=64M,read-only=on",
                "--object", "iothread,id=io0,poll-max-ns=32768",
                "--object=iothread,id=io1",
                "--export", "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=/run/a.sock,"
                        + "writable=on,num-queues=4,logical-block-size=4k,iothread.0=io0,iothread.1=io1,serial=SN1",
                "--export=vhost-user-blk,id=exp1,node-name=n1,addr.type=fd,addr.str=3,iothread=io1",
                "--pidfile", "/run/jvhost.pid"});
        assertEquals(Action.RUN, cfg.action());
        assertEquals(2, cfg.blockdevs().size());
        assertEquals(Map.of("driver", "file", "node-name", "disk0", "filename", "/img/a,b.raw", "cache.direct", "on"),
                cfg.blockdevs().get(0));
        assertEquals("null-co", cfg.blockdevs().get(1).get("driver"));   // implied key
        assertEquals(List.of("io0", "io1"), cfg.iothreads().stream().map(DaemonConfig.IothreadSpec::id).toList());
        assertEquals(Path.of("/run/jvhost.pid"), cfg.pidfile());
        assertNull(cfg.demo());

        ExportSpec e0 = cfg.exports().get(0);
        assertEquals("exp0", e0.id());
        assertEquals("disk0", e0.nodeName());
        assertEquals("/run/a.sock", e0.socketPath());
        assertEquals(-1, e0.listenFd());
        assertTrue(e0.writable());
        assertEquals(4, e0.numQueues());
        assertEquals(4096, e0.logicalBlockSize());
        assertEquals("SN1", e0.serial());
        // Queue i runs in list[i % n].
        assertEquals(List.of("io0", "io1", "io0", "io1"), List.of(e0.iothreadOf(0), e0.iothreadOf(1), e0.iothreadOf(2), e0.iothreadOf(3)));

        ExportSpec e1 = cfg.exports().get(1);
        assertNull(e1.socketPath());
        assertEquals(3, e1.listenFd());
        assertEquals("fd 3", e1.address());
        assertFalse(e1.writable());
        assertEquals("io1", e1.iothreadOf(0));
    }

    @Test
    void exportDefaultsFollowQsd() throws Exception {
        DaemonConfig cfg = Options.parse(withNode("--export", UNIX));
        ExportSpec e = cfg.exports().get(0);
        assertFalse(e.writable());
        assertEquals(1, e.numQueues());
        assertEquals(512, e.logicalBlockSize());
        assertNull(e.serial());
        assertTrue(e.iothreads().isEmpty());
        assertNull(e.iothreadOf(0));
        assertEquals("e0-vq0", e.ownIothreadName(0));
        assertNull(cfg.pidfile());
    }

    @Test
    void numbersAndBooleansInQemuSpellings() throws Exception {
        ExportSpec e = Options.parse(withNode("--export", UNIX + ",num-queues=0x10,logical-block-size=0x1000,writable=yes"))
                .exports().get(0);
        assertEquals(16, e.numQueues());
        assertEquals(4096, e.logicalBlockSize());
        assertTrue(e.writable());
        e = Options.parse(withNode("--export", UNIX + ",num-queues=010,logical-block-size=64k,writable=off")).exports().get(0);
        assertEquals(8, e.numQueues());     // octal, as qemu_strtou64 with base 0
        assertEquals(65536, e.logicalBlockSize());
        assertFalse(e.writable());
    }

    @Test
    void oneIothreadServesAllQueues() throws Exception {
        ExportSpec e = Options.parse(withNode("--object", "iothread,id=io0", "--export", UNIX + ",num-queues=3,iothread=io0"))
                .exports().get(0);
        assertEquals(List.of("io0"), e.iothreads());
        for (int q = 0; q < 3; q++) assertEquals("io0", e.iothreadOf(q));
    }

    @Test
    void demoMode(@TempDir Path dir) throws Exception {
        DaemonConfig cfg = Options.parse(new String[] {"--demo", dir.toString()});
        assertEquals(dir.resolve(Options.DEMO_IMAGE_NAME), cfg.demo().image());
        assertEquals(1L << 30, cfg.demo().imageSize());
        assertEquals(dir.resolve(Options.DEMO_SOCKET_NAME).toString(), cfg.demo().socketPath());
        ExportSpec e = cfg.exports().get(0);
        assertTrue(e.writable());
        assertEquals(2, e.numQueues());
        assertEquals(cfg.demo().socketPath(), e.socketPath());
        assertEquals(cfg.demo().image().toString(), cfg.blockdevs().get(0).get("filename"));
        assertEquals("file", cfg.blockdevs().get(0).get("driver"));

        // Without a directory: the current one for the image, /tmp for the socket; the next option is not a dir.
        cfg = Options.parse(new String[] {"--demo", "--pidfile", "/tmp/p"});
        assertEquals(Path.of("").toAbsolutePath().resolve(Options.DEMO_IMAGE_NAME), cfg.demo().image());
        assertEquals("/tmp/jvhost-demo.sock", cfg.demo().socketPath());
        assertEquals(Path.of("/tmp/p"), cfg.pidfile());
        assertEquals(dir.resolve(Options.DEMO_IMAGE_NAME), Options.parse(new String[] {"--demo=" + dir}).demo().image());

        // A directory too deep for sun_path keeps the socket in /tmp.
        String deep = "/tmp/" + "d".repeat(120);
        assertEquals("/tmp/jvhost-demo.sock", Options.parse(new String[] {"--demo", deep}).demo().socketPath());
    }

    @Test
    void helpAndVersionWinOverLaterArguments() {
        Result r = check("--help", "--bogus");
        assertEquals(0, r.status());
        assertTrue(r.out().startsWith("Usage: jvhost [options]"));
        assertEquals("", r.err());
        r = check("-V", "--bogus");
        assertEquals(0, r.status());
        assertEquals("jvhost " + Main.version() + System.lineSeparator(), r.out());
        // ... but an earlier error still counts, as with getopt.
        assertError("jvhost: unknown option '--bogus'", "--bogus", "--help");
    }

    @Test
    void commandLineErrors() {
        assertError("jvhost: unknown option '--bogus'", "--bogus");
        assertError("jvhost: unknown option '--bogus'", "--bogus=1");
        assertError("jvhost: unknown option '-x'", "-x");
        assertError("jvhost: unknown option '--daemonize'", "--daemonize");
        assertError("jvhost: unexpected argument 'foo' (options start with --; see --help)", "foo");
        assertError("jvhost: option '--export' requires an argument", "--export");
        assertError("jvhost: option '--help' doesn't allow an argument", "--help=1");
        assertError("jvhost: nothing to do: give at least one --export or --monitor (or --demo); see --help");
        assertError("jvhost: nothing to do: give at least one --export or --monitor (or --demo); see --help", NODE);
        assertError("jvhost: --pidfile: given more than once", withNode("--export", UNIX, "--pidfile", "/a", "--pidfile", "/b"));
        assertError("jvhost: --pidfile: empty path", withNode("--export", UNIX, "--pidfile="));
        assertError("jvhost: --demo: given more than once", "--demo", "--demo");
    }

    @Test
    void blockdevErrors() {
        assertError("jvhost: --blockdev: parameter 'node-name' is missing", "--blockdev", "null-co,size=1G");
        assertError("jvhost: --blockdev: parameter 'driver' is missing", "--blockdev", "node-name=n0");
        assertError("jvhost: --blockdev: node name 'n0' is already in use", NODE, NODE);
        assertError("jvhost: --blockdev: parameter 'size' is given more than once", "--blockdev", "null-co,node-name=n0,size=1,size=2");
        assertError("jvhost: --blockdev: JSON arguments are not supported; use key=value,...", "--blockdev", "{\"driver\":\"file\"}");
        assertError("jvhost: --blockdev: expected '=' after parameter 'n0'", "--blockdev", "null-co,n0");
    }

    @Test
    void objectErrors() {
        assertError("jvhost: --object: object type 'memory-backend-ram' is not supported (only 'iothread' and 'throttle-group')",
                "--object", "memory-backend-ram,id=m");
        assertError("jvhost: --object: parameter 'id' is missing", "--object", "iothread");
        assertError("jvhost: --object: unknown parameter 'foo'", "--object", "iothread,id=a,foo=1");
        assertError("jvhost: --object: id 'a' is already in use", "--object", "iothread,id=a", "--object", "iothread,id=a");
        assertError("jvhost: --object: invalid id '1a' (a letter, then letters, digits, '-', '.', '_')", "--object", "iothread,id=1a");
        assertError("jvhost: --object: parameter 'poll-max-ns' expects a non-negative integer, not 'x'",
                "--object", "iothread,id=a,poll-max-ns=x");
    }

    @Test
    void exportErrors() {
        assertError("jvhost: --export: unknown parameter 'foo'", withNode("--export", UNIX + ",foo=1"));
        assertError("jvhost: --export: unknown parameter 'addr.str'", withNode("--export", UNIX + ",addr.str=3"));
        assertError("jvhost: --export: node 'x' not found",
                withNode("--export", "type=vhost-user-blk,id=e0,node-name=x,addr.type=unix,addr.path=/tmp/s"));
        assertError("jvhost: --export: iothread 'y' not found", withNode("--export", UNIX + ",iothread=y"));
        assertError("jvhost: --export: iothread 'y' not found",
                withNode("--object", "iothread,id=a", "--export", UNIX + ",iothread.0=a,iothread.1=y"));
        assertError("jvhost: --export: parameters 'iothread.*' used inconsistently",
                withNode("--object", "iothread,id=a", "--export", UNIX + ",iothread=a,iothread.0=a"));
        assertError("jvhost: --export: parameter 'iothread.0' missing", withNode("--export", UNIX + ",iothread.1=a"));
        assertError("jvhost: --export: export type 'nbd' is not supported (only 'vhost-user-blk')",
                withNode("--export", "nbd,id=e0,node-name=n0"));
        assertError("jvhost: --export: parameter 'type' is missing", withNode("--export", "id=e0"));
        assertError("jvhost: --export: parameter 'id' is missing", withNode("--export", "vhost-user-blk,node-name=n0"));
        assertError("jvhost: --export: parameter 'addr.type' is missing", withNode("--export", "vhost-user-blk,id=e0,node-name=n0"));
        assertError("jvhost: --export: parameter 'addr.path' is missing",
                withNode("--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=unix"));
        assertError("jvhost: --export: addr.type 'inet' is not supported (only 'unix' and 'fd')",
                withNode("--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=inet"));
        assertError("jvhost: --export: parameter 'addr.str' expects a non-negative integer, not 'mon-fd'",
                withNode("--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=fd,addr.str=mon-fd"));
        assertError("jvhost: --export: parameter 'writable' expects 'on' or 'off', not 'maybe'", withNode("--export", UNIX + ",writable=maybe"));
        assertError("jvhost: --export: parameter 'num-queues' must be between 1 and 64, not 0", withNode("--export", UNIX + ",num-queues=0"));
        assertError("jvhost: --export: parameter 'num-queues' must be between 1 and 64, not 65", withNode("--export", UNIX + ",num-queues=65"));
        assertError("jvhost: --export: parameter 'num-queues' expects a non-negative integer, not '-1'", withNode("--export", UNIX + ",num-queues=-1"));
        assertError("jvhost: --export: parameter 'num-queues' is too large: 99999999999", withNode("--export", UNIX + ",num-queues=99999999999"));
        assertError("jvhost: --export: parameter 'logical-block-size' must be a power of two from 512 to 64k, not 1000",
                withNode("--export", UNIX + ",logical-block-size=1000"));
        assertError("jvhost: --export: parameter 'logical-block-size' must be a power of two from 512 to 64k, not 256",
                withNode("--export", UNIX + ",logical-block-size=256"));
        assertError("jvhost: --export: parameter 'logical-block-size' must be a power of two from 512 to 64k, not 128k",
                withNode("--export", UNIX + ",logical-block-size=128k"));
        assertError("jvhost: --export: parameter 'logical-block-size' expects a size (e.g. 4096 or 4k), not '4q'",
                withNode("--export", UNIX + ",logical-block-size=4q"));
        assertError("jvhost: --export: parameter 'serial' is longer than 20 bytes", withNode("--export", UNIX + ",serial=" + "s".repeat(21)));
        assertError("jvhost: --export: invalid id 'e 0' (a letter, then letters, digits, '-', '.', '_')",
                withNode("--export", "vhost-user-blk,id=e 0,node-name=n0,addr.type=unix,addr.path=/tmp/s"));
        String longPath = "/tmp/" + "p".repeat(103);
        assertError("jvhost: --export: socket path is 108 bytes long, the limit is 107: '" + longPath + "'",
                withNode("--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=" + longPath));
    }

    @Test
    void exportCompatibilityOptions() throws Exception {
        ExportSpec e = Options.parse(withNode("--export", UNIX + ",writethrough=off,fixed-iothread=on")).exports().get(0);
        assertEquals("e0", e.id());
        assertError("jvhost: --export: writethrough=on is not supported yet", withNode("--export", UNIX + ",writethrough=on"));
        assertError("jvhost: --export: parameter 'fixed-iothread' expects 'on' or 'off', not 'x'",
                withNode("--export", UNIX + ",fixed-iothread=x"));
    }

    @Test
    void monitorsInQsdSyntax() throws Exception {
        DaemonConfig cfg = Options.parse(new String[] {
                "--chardev", "socket,id=qmp0,path=/tmp/q0.sock,server=on,wait=off",
                "--monitor", "chardev=qmp0",
                "--chardev=socket,id=qmp1,path=/tmp/q1.sock,server=on",
                "--monitor", "qmp1,mode=control,pretty=off,id=mon1"});
        assertEquals(List.of(new DaemonConfig.MonitorSpec("qmp0", "/tmp/q0.sock"), new DaemonConfig.MonitorSpec("qmp1", "/tmp/q1.sock")),
                cfg.monitors());
        assertTrue(cfg.exports().isEmpty());   // a monitor alone is something to do: exports come over QMP
        // Order does not matter: a --monitor may name a --chardev given later.
        cfg = Options.parse(new String[] {"--monitor", "c", "--chardev", "socket,id=c,path=/tmp/c.sock,server=on,wait=off"});
        assertEquals("c", cfg.monitors().get(0).chardev());
    }

    @Test
    void monitorErrors() {
        String c = "socket,id=c,path=/tmp/c.sock,server=on,wait=off";
        assertError("jvhost: --chardev: chardev backend 'stdio' is not supported (only 'socket')", "--chardev", "stdio,id=c", "--monitor", "c");
        assertError("jvhost: --chardev: only server=on is supported (jvhost listens for QMP clients)",
                "--chardev", "socket,id=c,path=/tmp/c.sock", "--monitor", "c");
        assertError("jvhost: --chardev: wait=on is not supported (jvhost does not wait for a client); use wait=off",
                "--chardev", "socket,id=c,path=/tmp/c.sock,server=on,wait=on", "--monitor", "c");
        assertError("jvhost: --chardev: unknown parameter 'telnet'", "--chardev", c + ",telnet=on", "--monitor", "c");
        assertError("jvhost: --chardev: parameter 'path' is missing", "--chardev", "socket,id=c,server=on", "--monitor", "c");
        assertError("jvhost: --chardev: id 'c' is already in use", "--chardev", c, "--chardev", c, "--monitor", "c");
        assertError("jvhost: --chardev: chardev 'c' is not used by any --monitor (jvhost uses chardevs only for QMP monitors)",
                withNode("--chardev", c, "--export", UNIX));
        assertError("jvhost: --monitor: chardev 'd' not found", "--chardev", c, "--monitor", "d");
        assertError("jvhost: --monitor: chardev 'c' is already used by another monitor", "--chardev", c, "--monitor", "c", "--monitor", "c");
        assertError("jvhost: --monitor: mode 'readline' is not supported (only 'control', i.e. QMP)", "--chardev", c, "--monitor", "c,mode=readline");
        assertError("jvhost: --monitor: pretty=on is not supported", "--chardev", c, "--monitor", "c,pretty=on");
        assertError("jvhost: --chardev: chardevs 'c' and 'd' have the same path /tmp/./c.sock",
                "--chardev", c, "--chardev", "socket,id=d,path=/tmp/./c.sock,server=on", "--monitor", "c", "--monitor", "d");
        assertError("jvhost: --export: export 'e0' listens on /tmp/c.sock like QMP monitor 'c'",
                withNode("--chardev", c, "--monitor", "c", "--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=/tmp/c.sock"));
    }

    @Test
    void exportCrossChecks() {
        assertError("jvhost: --export: export id 'e0' is already in use",
                withNode("--export", UNIX, "--export", "vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=/tmp/other"));
        assertError("jvhost: --export: node 'n0' is already exported writable by 'e0'",
                withNode("--export", UNIX + ",writable=on",
                        "--export", "vhost-user-blk,id=e1,node-name=n0,addr.type=unix,addr.path=/tmp/other,writable=on"));
        assertError("jvhost: --export: node 'ro' is read-only, it cannot be exported writable",
                "--blockdev", "null-co,node-name=ro,size=1M,read-only=on",
                "--export", "vhost-user-blk,id=e0,node-name=ro,addr.type=unix,addr.path=/tmp/s,writable=on");
        assertError("jvhost: --export: export 'e1' listens on /tmp/x.sock like export 'e0'",
                withNode("--export", UNIX, "--export", "vhost-user-blk,id=e1,node-name=n0,addr.type=unix,addr.path=/tmp/x.sock"));
        // A node may be exported read-only any number of times, and writable once besides.
        Result ok = check(withNode("--export", UNIX + ",writable=on",
                "--export", "vhost-user-blk,id=e1,node-name=n0,addr.type=unix,addr.path=/tmp/y.sock",
                "--export", "vhost-user-blk,id=e2,node-name=n0,addr.type=unix,addr.path=/tmp/z.sock"));
        assertEquals(0, ok.status(), ok.err());
        assertEquals("", ok.err());
    }
}
