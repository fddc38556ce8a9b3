package io.jvhost.daemon;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * blockdev-mirror and the job commands over real unix sockets against a real daemon: a mirror of a file image
 * driven to completion with its events, cancel, pause/resume, QEMU's verb errors, and the argument errors.
 */
class QmpJobsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String GE = "GenericError";
    private final List<AutoCloseable> toClose = new ArrayList<>();
    private Daemon daemon;
    private QmpClient qmp;       // monitor 0
    private QmpClient other;     // monitor 1: sees the same events

    @AfterEach
    void tearDown() throws Exception {
        for (int i = toClose.size() - 1; i >= 0; i--) toClose.get(i).close();
        if (daemon != null) daemon.close();
    }

    private void start(Path dir) throws Exception {
        daemon = Daemon.start(Options.parse(new String[] {
                "--chardev", "socket,id=m0,path=" + dir.resolve("m0.sock") + ",server=on,wait=off", "--monitor", "m0",
                "--chardev", "socket,id=m1,path=" + dir.resolve("m1.sock") + ",server=on,wait=off", "--monitor", "m1"}));
        qmp = QmpClient.negotiated(dir.resolve("m0.sock"));
        toClose.add(qmp);
        other = QmpClient.negotiated(dir.resolve("m1.sock"));
        toClose.add(other);
    }

    private static JsonNode json(String s) throws IOException {
        return JSON.readTree(s);
    }

    private static List<Thread> threadsNamed(String prefix) {
        return Thread.getAllStackTraces().keySet().stream().filter(t -> t.getName().startsWith(prefix)).toList();
    }

    private static void assertThreadsEnd(List<Thread> threads) throws InterruptedException {
        for (Thread t : threads) {
            t.join(10_000);
            assertFalse(t.isAlive(), t.getName() + " still runs");
        }
    }

    /** "JOB_STATUS_CHANGE ready", "BLOCK_JOB_READY", ...: the next event of job {@code id}, checked and named. */
    private static String nextJobEvent(QmpClient c, String id) throws InterruptedException {
        JsonNode e = c.nextEvent();
        String name = e.get("event").asText();
        JsonNode d = e.get("data");
        if (name.equals("JOB_STATUS_CHANGE")) {
            assertEquals(id, d.get("id").asText(), e.toString());
            assertEquals(2, d.size(), e.toString());
            return name + " " + d.get("status").asText();
        }
        assertTrue(name.startsWith("BLOCK_JOB_"), e.toString());
        assertEquals(id, d.get("device").asText(), e.toString());
        assertEquals("mirror", d.get("type").asText(), e.toString());
        return name;
    }

    /**
     * The job's events up to and including {@code last}. Pause flips that drains may cause (running -> paused ->
     * running, ready -> standby -> ready) are left out, so the list shows the job's own course.
     */
    private static List<String> jobEventsUntil(QmpClient c, String id, String last) throws InterruptedException {
        List<String> seq = new ArrayList<>();
        String status = null;   // the last status that was not a pause
        while (true) {
            String e = nextJobEvent(c, id);
            if (e.startsWith("JOB_STATUS_CHANGE ")) {
                String s = e.substring("JOB_STATUS_CHANGE ".length());
                if (s.equals("paused") || s.equals("standby")) continue;
                if (s.equals(status)) continue;   // back from a pause
                status = s;
            }
            seq.add(e);
            if (e.equals(last)) return seq;
        }
    }

    private static Path patternImage(Path p, int len, long seed) throws IOException {
        byte[] b = new byte[len];
        new Random(seed).nextBytes(b);
        Files.write(p, b);
        return p;
    }

    private static String mirrorArgs(String id, String device, String target, String more) {
        return "{" + (id == null ? "" : "\"job-id\": \"" + id + "\", ") + "\"device\": \"" + device + "\", \"target\": \""
                + target + "\", \"sync\": \"full\"" + more + "}";
    }

    @Test
    void mirrorOfAnExportedImageDrivenToCompletion(@TempDir Path dir) throws Exception {
        start(dir);
        int len = 4 << 20;
        byte[] data = Files.readAllBytes(patternImage(dir.resolve("src.img"), len, 42));
        Path tgtImg = dir.resolve("tgt.img");
        Files.write(tgtImg, new byte[len]);
        qmp.ok("blockdev-add", "{\"driver\": \"file\", \"node-name\": \"src\", \"filename\": \"" + dir.resolve("src.img") + "\"}");
        qmp.ok("blockdev-add", "{\"driver\": \"file\", \"node-name\": \"tgt\", \"filename\": \"" + tgtImg + "\"}");
        qmp.ok("block-export-add", "{\"type\": \"vhost-user-blk\", \"id\": \"e0\", \"node-name\": \"src\", \"writable\": true, "
                + "\"addr\": {\"type\": \"unix\", \"path\": \"" + dir.resolve("e0.sock") + "\"}}");

        assertEquals(json("{}"), qmp.ok("blockdev-mirror", mirrorArgs("m0", "src", "tgt",
                ", \"granularity\": 65536, \"buf-size\": 262144, \"speed\": 0, \"on-source-error\": \"report\", "
                        + "\"on-target-error\": \"report\", \"copy-mode\": \"background\", \"auto-finalize\": true, "
                        + "\"auto-dismiss\": false, \"replaces\": \"src\"")));
        assertEquals(List.of("JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE ready",
                "BLOCK_JOB_READY"), jobEventsUntil(qmp, "m0", "BLOCK_JOB_READY"));
        assertEquals(List.of("JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE ready",
                "BLOCK_JOB_READY"), jobEventsUntil(other, "m0", "BLOCK_JOB_READY"));

        JsonNode jobs = qmp.ok("query-jobs", null);
        assertEquals(1, jobs.size(), jobs.toString());
        JsonNode j = jobs.get(0);
        assertEquals("m0", j.get("id").asText());
        assertEquals("mirror", j.get("type").asText());
        assertTrue(j.get("status").asText().equals("ready") || j.get("status").asText().equals("standby"), j.toString());
        assertEquals(len, j.get("current-progress").asLong(), j.toString());
        assertEquals(len, j.get("total-progress").asLong(), j.toString());
        assertNull(j.get("error"));
        JsonNode bj = qmp.ok("query-block-jobs", null).get(0);
        assertEquals("m0", bj.get("device").asText());
        assertEquals("mirror", bj.get("type").asText());
        assertTrue(bj.get("ready").asBoolean(), bj.toString());
        assertEquals(len, bj.get("len").asLong());
        assertEquals(0, bj.get("speed").asLong());
        assertEquals("ok", bj.get("io-status").asText());
        assertFalse(bj.get("auto-dismiss").asBoolean());
        assertTrue(bj.get("auto-finalize").asBoolean());

        // While the job holds its nodes.
        qmp.fails(GE, "Node src is in use", "blockdev-del", "{\"node-name\": \"src\"}");
        qmp.fails(GE, "Node tgt is in use", "blockdev-del", "{\"node-name\": \"tgt\"}");
        qmp.fails(GE, "Node 'tgt' is busy: block device is in use by block job: mirror", "block-export-add",
                "{\"type\": \"vhost-user-blk\", \"id\": \"e1\", \"node-name\": \"tgt\", "
                        + "\"addr\": {\"type\": \"unix\", \"path\": \"" + dir.resolve("e1.sock") + "\"}}");
        qmp.fails(GE, "Node 'tgt' is busy: block device is in use by block job: mirror", "blockdev-add",
                "{\"driver\": \"raw\", \"node-name\": \"r\", \"file\": \"tgt\"}");
        qmp.fails(GE, "Node 'src' is busy: block device is in use by block job: mirror", "blockdev-mirror",
                mirrorArgs("m1", "src", "tgt", ""));
        qmp.fails(GE, "Job 'm0' in state 'ready' cannot accept command verb 'dismiss'", "job-dismiss", "{\"id\": \"m0\"}");
        assertEquals("src", qmp.ok("query-block-exports", null).get(0).get("node-name").asText());

        assertEquals(json("{}"), qmp.ok("job-complete", "{\"id\": \"m0\"}"));
        List<String> done = List.of("JOB_STATUS_CHANGE waiting", "JOB_STATUS_CHANGE pending", "BLOCK_JOB_COMPLETED",
                "JOB_STATUS_CHANGE concluded");
        assertEquals(done, jobEventsUntil(qmp, "m0", "JOB_STATUS_CHANGE concluded"));
        assertEquals(done, jobEventsUntil(other, "m0", "JOB_STATUS_CHANGE concluded"));

        // The export now serves the target; the source is free.
        assertEquals(json("[{\"type\": \"vhost-user-blk\", \"id\": \"e0\", \"node-name\": \"tgt\", \"shutting-down\": false}]"),
                qmp.ok("query-block-exports", null));
        j = qmp.ok("query-jobs", null).get(0);
        assertEquals("concluded", j.get("status").asText());
        assertEquals(len, j.get("current-progress").asLong());
        assertNull(j.get("error"), j.toString());
        qmp.fails(GE, "Job 'm0' in state 'concluded' cannot accept command verb 'complete'", "job-complete", "{\"id\": \"m0\"}");
        qmp.fails(GE, "Job 'm0' in state 'concluded' cannot accept command verb 'cancel'", "job-cancel", "{\"id\": \"m0\"}");
        qmp.fails(GE, "Job 'm0' in state 'concluded' cannot accept command verb 'pause'", "job-pause", "{\"id\": \"m0\"}");
        assertEquals(json("{}"), qmp.ok("job-dismiss", "{\"id\": \"m0\"}"));
        assertEquals("JOB_STATUS_CHANGE null", nextJobEvent(qmp, "m0"));
        assertEquals(json("[]"), qmp.ok("query-jobs", null));
        assertEquals(json("[]"), qmp.ok("query-block-jobs", null));
        qmp.fails("DeviceNotActive", "Job not found", "job-dismiss", "{\"id\": \"m0\"}");
        assertThreadsEnd(threadsNamed("jvhost-job-m0"));

        qmp.fails(GE, "Node tgt is in use", "blockdev-del", "{\"node-name\": \"tgt\"}");
        assertEquals(json("{}"), qmp.ok("blockdev-del", "{\"node-name\": \"src\"}"));
        // Byte for byte: what was in the source image is in the target image.
        assertArrayEquals(data, Files.readAllBytes(tgtImg));
    }

    @Test
    void pauseResumeCancelAndVerbErrors(@TempDir Path dir) throws Exception {
        start(dir);
        // 64 MiB read at 50 ms per 64 KiB chunk, 16 at a time: seconds of copying, far more than this test needs.
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"ns\", \"size\": 67108864, \"latency-ns\": 50000000}");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"nt\", \"size\": 67108864}");
        qmp.ok("blockdev-mirror", mirrorArgs("m1", "ns", "nt", ", \"auto-dismiss\": false"));
        assertEquals(List.of("JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running"),
                jobEventsUntil(qmp, "m1", "JOB_STATUS_CHANGE running"));

        qmp.fails(GE, "Job 'm1' in state 'running' cannot accept command verb 'complete'", "job-complete", "{\"id\": \"m1\"}");
        qmp.fails(GE, "Job 'm1' in state 'running' cannot accept command verb 'dismiss'", "job-dismiss", "{\"id\": \"m1\"}");
        qmp.fails(GE, "Can't resume a job that was not paused", "job-resume", "{\"id\": \"m1\"}");
        qmp.fails("DeviceNotActive", "Job not found", "job-pause", "{\"id\": \"nope\"}");
        qmp.fails("DeviceNotActive", "Job not found", "job-cancel", "{\"id\": \"nope\"}");
        qmp.fails(GE, "Parameter 'id' is missing", "job-cancel", "{}");
        qmp.fails(GE, "Parameter 'force' is unexpected", "job-cancel", "{\"id\": \"m1\", \"force\": true}");
        qmp.fails(GE, "Node 'ns' is busy: block device is in use by block job: mirror", "blockdev-del", "{\"node-name\": \"ns\"}");
        qmp.fails(GE, "Node nt is in use", "blockdev-del", "{\"node-name\": \"nt\"}");

        assertEquals(json("{}"), qmp.ok("job-pause", "{\"id\": \"m1\"}"));
        assertEquals("JOB_STATUS_CHANGE paused", nextJobEvent(qmp, "m1"));
        JsonNode j = qmp.ok("query-jobs", null).get(0);
        assertEquals("paused", j.get("status").asText());
        long progress = j.get("current-progress").asLong();
        assertTrue(progress < 64L << 20, j.toString());
        JsonNode bj = qmp.ok("query-block-jobs", null).get(0);
        assertTrue(bj.get("paused").asBoolean(), bj.toString());
        assertFalse(bj.get("ready").asBoolean(), bj.toString());
        assertEquals("paused", bj.get("status").asText());
        qmp.fails(GE, "Job is already paused", "job-pause", "{\"id\": \"m1\"}");
        qmp.fails(GE, "Job 'm1' in state 'paused' cannot accept command verb 'complete'", "job-complete", "{\"id\": \"m1\"}");
        assertEquals(json("{}"), qmp.ok("job-resume", "{\"id\": \"m1\"}"));
        assertEquals("JOB_STATUS_CHANGE running", nextJobEvent(qmp, "m1"));

        assertEquals(json("{}"), qmp.ok("job-cancel", "{\"id\": \"m1\"}"));
        assertEquals(List.of("JOB_STATUS_CHANGE aborting", "BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE concluded"),
                jobEventsUntil(qmp, "m1", "JOB_STATUS_CHANGE concluded"));
        assertEquals(List.of("JOB_STATUS_CHANGE created", "JOB_STATUS_CHANGE running", "JOB_STATUS_CHANGE aborting",
                "BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE concluded"), jobEventsUntil(other, "m1", "JOB_STATUS_CHANGE concluded"));
        j = qmp.ok("query-jobs", null).get(0);
        assertEquals("concluded", j.get("status").asText());
        assertEquals("Operation canceled", j.get("error").asText());   // QEMU: strerror(ECANCELED)
        qmp.fails(GE, "Job 'm1' in state 'concluded' cannot accept command verb 'cancel'", "job-cancel", "{\"id\": \"m1\"}");
        qmp.fails(GE, "Can't resume a job that was not paused", "job-resume", "{\"id\": \"m1\"}");
        // The nodes are free as soon as the job has concluded, dismissed or not.
        qmp.ok("blockdev-del", "{\"node-name\": \"nt\"}");
        qmp.ok("job-dismiss", "{\"id\": \"m1\"}");
        assertEquals("JOB_STATUS_CHANGE null", nextJobEvent(qmp, "m1"));
        qmp.fails("DeviceNotActive", "Job not found", "job-pause", "{\"id\": \"m1\"}");
        assertThreadsEnd(threadsNamed("jvhost-job-m1"));

        // Auto-dismissed (the default): cancelled at once, it goes to null by itself; its id is free again.
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"nt\", \"size\": 67108864}");
        qmp.ok("blockdev-mirror", mirrorArgs("m1", "ns", "nt", ""));
        qmp.ok("job-cancel", "{\"id\": \"m1\"}");
        List<String> seq = jobEventsUntil(qmp, "m1", "JOB_STATUS_CHANGE null");
        assertEquals(List.of("JOB_STATUS_CHANGE aborting", "BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE concluded",
                "JOB_STATUS_CHANGE null"), seq.subList(seq.indexOf("JOB_STATUS_CHANGE aborting"), seq.size()));
        assertEquals("JOB_STATUS_CHANGE created", seq.get(0));
        assertEquals(json("[]"), qmp.ok("query-jobs", null));
        qmp.ok("blockdev-del", "{\"node-name\": \"ns\"}");
        qmp.ok("blockdev-del", "{\"node-name\": \"nt\"}");
        assertThreadsEnd(threadsNamed("jvhost-job-m1"));
    }

    @Test
    void blockdevMirrorArgumentAndNodeErrors(@TempDir Path dir) throws Exception {
        start(dir);
        String mib = "\"size\": 1048576";
        for (String n : List.of("a", "b", "base", "e")) {
            qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"" + n + "\", " + mib + "}");
        }
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"big\", \"size\": 2097152}");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"ro\", " + mib + ", \"read-only\": true}");
        qmp.ok("blockdev-add", "{\"driver\": \"raw\", \"node-name\": \"r\", \"file\": \"base\"}");
        qmp.ok("block-export-add", "{\"type\": \"vhost-user-blk\", \"id\": \"ex\", \"node-name\": \"e\", "
                + "\"addr\": {\"type\": \"unix\", \"path\": \"" + dir.resolve("ex.sock") + "\"}}");

        qmp.fails(GE, "Cannot find device='nope' nor node-name='nope'", "blockdev-mirror", mirrorArgs("j", "nope", "b", ""));
        qmp.fails(GE, "Cannot find device='nope' nor node-name='nope'", "blockdev-mirror", mirrorArgs("j", "a", "nope", ""));
        qmp.fails(GE, "Need a root block node", "blockdev-mirror", mirrorArgs("j", "base", "a", ""));
        qmp.fails(GE, "Can't mirror node into itself", "blockdev-mirror", mirrorArgs("j", "a", "a", ""));
        qmp.fails(GE, "Source and target image have different sizes", "blockdev-mirror", mirrorArgs("j", "a", "big", ""));
        qmp.fails(GE, "Block node is read-only", "blockdev-mirror", mirrorArgs("j", "a", "ro", ""));
        qmp.fails(GE, "Target node 'e' is in use by export 'ex'", "blockdev-mirror", mirrorArgs("j", "a", "e", ""));
        qmp.fails(GE, "Target node 'base' is in use by node 'r'", "blockdev-mirror", mirrorArgs("j", "a", "base", ""));
        qmp.fails(GE, "An explicit job ID is required for this node", "blockdev-mirror", mirrorArgs(null, "a", "b", ""));
        qmp.fails(GE, "Invalid job ID '1j'", "blockdev-mirror", mirrorArgs("1j", "a", "b", ""));

        qmp.fails(GE, "Parameter 'sync' is missing", "blockdev-mirror", "{\"job-id\": \"j\", \"device\": \"a\", \"target\": \"b\"}");
        qmp.fails(GE, "Parameter 'target' is missing", "blockdev-mirror", "{\"job-id\": \"j\", \"device\": \"a\", \"sync\": \"full\"}");
        qmp.fails(GE, "Parameter 'sync' does not accept value 'all'", "blockdev-mirror",
                "{\"job-id\": \"j\", \"device\": \"a\", \"target\": \"b\", \"sync\": \"all\"}");
        for (String sync : List.of("top", "none", "incremental", "bitmap")) {
            qmp.fails(GE, "Sync mode '" + sync + "' is not supported (only 'full')", "blockdev-mirror",
                    "{\"job-id\": \"j\", \"device\": \"a\", \"target\": \"b\", \"sync\": \"" + sync + "\"}");
        }
        qmp.fails(GE, "Invalid parameter 'speed'", "blockdev-mirror", mirrorArgs("j", "a", "b", ", \"speed\": -1"));
        qmp.fails(GE, "speed limits are not supported (only 0, unlimited)", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"speed\": 1048576"));
        qmp.fails(GE, "Parameter 'granularity' expects a power of 2", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"granularity\": 1000"));
        qmp.fails(GE, "Parameter 'granularity' expects a value in range [512B, 64MB]", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"granularity\": 256"));
        qmp.fails(GE, "Parameter 'granularity' expects a value in range [512B, 64MB]", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"granularity\": 134217728"));
        qmp.fails(GE, "Parameter 'granularity' expects uint32", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"granularity\": 4294967296"));
        qmp.fails(GE, "Invalid parameter 'buf-size'", "blockdev-mirror", mirrorArgs("j", "a", "b", ", \"buf-size\": -1"));
        qmp.fails(GE, "Parameter 'buf-size' expects a value in range [0, 256MB]", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"buf-size\": 1073741824"));
        qmp.fails(GE, "on-source-error 'stop' is not supported (only 'report')", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"on-source-error\": \"stop\""));
        qmp.fails(GE, "on-target-error 'ignore' is not supported (only 'report')", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"on-target-error\": \"ignore\""));
        qmp.fails(GE, "Parameter 'on-target-error' does not accept value 'never'", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"on-target-error\": \"never\""));
        qmp.fails(GE, "copy-mode 'write-blocking' is not supported (only 'background')", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"copy-mode\": \"write-blocking\""));
        qmp.fails(GE, "auto-finalize=false is not supported (jobs always finalize on their own)", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"auto-finalize\": false"));
        qmp.fails(GE, "filter-node-name is not supported (jvhost's mirror inserts no filter node)", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"filter-node-name\": \"f\""));
        qmp.fails(GE, "replaces is not supported (the mirror replaces its source, 'a')", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"replaces\": \"e\""));
        qmp.fails(GE, "Invalid parameter type for 'auto-dismiss', expected: boolean", "blockdev-mirror",
                mirrorArgs("j", "a", "b", ", \"auto-dismiss\": \"off\""));
        qmp.fails(GE, "Parameter 'unmap' is unexpected", "blockdev-mirror", mirrorArgs("j", "a", "b", ", \"unmap\": true"));
        assertEquals(json("[]"), qmp.ok("query-jobs", null));
        assertTrue(threadsNamed("jvhost-job-").isEmpty(), "a refused mirror leaves no thread");
        assertFalse(qmp.hasPendingEvent(), "a refused mirror sends no event");

        // Busy nodes and a job id in use; a job that is running when the daemon closes is cancelled and ends.
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"slow\", \"size\": 67108864, \"latency-ns\": 50000000}");
        qmp.ok("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"slow-t\", \"size\": 67108864}");
        qmp.ok("blockdev-mirror", mirrorArgs("j0", "slow", "slow-t", ""));
        qmp.fails(GE, "Job ID 'j0' already in use", "blockdev-mirror", mirrorArgs("j0", "a", "b", ""));
        qmp.fails(GE, "Node 'slow' is busy: block device is in use by block job: mirror", "blockdev-mirror",
                mirrorArgs("j1", "slow", "b", ""));
        qmp.fails(GE, "Node 'slow-t' is busy: block device is in use by block job: mirror", "blockdev-mirror",
                mirrorArgs("j1", "a", "slow-t", ""));
        qmp.fails(GE, "Node 'slow-t' is busy: block device is in use by block job: mirror", "blockdev-mirror",
                mirrorArgs("j1", "slow-t", "b", ""));
        assertEquals(1, qmp.ok("query-jobs", null).size());
        List<Thread> jobThreads = threadsNamed("jvhost-job-j0");
        assertEquals(1, jobThreads.size());
        daemon.close();
        assertThreadsEnd(jobThreads);
    }
}
