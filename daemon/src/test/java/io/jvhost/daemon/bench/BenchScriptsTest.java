package io.jvhost.daemon.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.jvhost.daemon.Daemon;
import io.jvhost.daemon.Options;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32;
import java.util.zip.Inflater;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * bench/summarize.py and bench/plot.py (what compare.sh runs after the measurements) on real bench JSON: the
 * summary has its tables and summary.json, the plot is a valid PNG (chunk CRCs, image data of the stated size).
 * Both "daemons" are the in-process jvhost here: this checks the scripts' plumbing, not any number.
 */
class BenchScriptsTest {
    private static final Path BENCH_DIR = Path.of("..", "bench").toAbsolutePath().normalize();

    record Proc(int status, String out, String err) {}

    private static Proc python(Path dir, String... args) throws Exception {
        String[] cmd = new String[args.length + 1];
        cmd[0] = "python3";
        System.arraycopy(args, 0, cmd, 1, args.length);
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).start();
        p.getOutputStream().close();
        CompletableFuture<String> out = CompletableFuture.supplyAsync(() -> readAll(p.getInputStream()));
        CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> readAll(p.getErrorStream()));
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "python did not finish");
        return new Proc(p.exitValue(), out.get(10, TimeUnit.SECONDS), err.get(10, TimeUnit.SECONDS));
    }

    private static String readAll(InputStream in) {
        try {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    @Test
    void summaryAndPlotFromBenchResults(@TempDir Path dir) throws Exception {
        assumeTrue(BenchSmokeTest.onPath("python3"), "python3 not installed");
        assumeTrue(Files.isRegularFile(BENCH_DIR.resolve("plot.py")), "no " + BENCH_DIR);
        Path sock = dir.resolve("s.sock");
        try (Daemon d = Daemon.start(Options.parse(new String[] {
                "--blockdev", "null-co,node-name=n,size=16M,read-zeroes=on",
                "--export", "vhost-user-blk,id=bench-scripts,node-name=n,addr.type=unix,addr.path=" + sock}))) {
            for (String impl : new String[] {"jvhost", "qsd"}) {
                for (int round = 1; round <= 2; round++) {
                    String[] args = {"--socket", sock.toString(), "--iodepth", "4", "--time", "300ms", "--ramp", "0",
                            "--progress", "off", "--json", dir.resolve("null-qd32-" + impl + "-r" + round + ".json").toString(),
                            "--label", "null-qd32/" + impl + "/" + round,
                            "--target-pid", Long.toString(ProcessHandle.current().pid())};
                    ByteArrayOutputStream err = new ByteArrayOutputStream();
                    int st = BenchMain.run(args, new PrintStream(new ByteArrayOutputStream()), new PrintStream(err, true, StandardCharsets.UTF_8));
                    assertEquals(0, st, err.toString(StandardCharsets.UTF_8));
                }
            }
        }
        Files.writeString(dir.resolve("unrelated.json"), "{\"not\": \"a bench result\"}"); // must be skipped

        Proc sum = python(dir, BENCH_DIR.resolve("summarize.py").toString(), dir.toString());
        assertEquals(0, sum.status(), sum.err());
        assertTrue(sum.out().contains("| null-qd32 | jvhost | 2 |"), sum.out());
        assertTrue(sum.out().contains("| null-qd32 | **ratio** |"), sum.out());
        assertTrue(sum.out().contains("## Targets of issue 5"), sum.out());
        JsonNode s = new ObjectMapper().readTree(dir.resolve("summary.json").toFile());
        assertTrue(s.path("scenarios").path("null-qd32").path("ratio").path("iops").asDouble() > 0, s.toString());
        assertEquals(2, s.path("scenarios").path("null-qd32").path("runs").path("qsd").size());

        Path png = dir.resolve("out.png");
        Proc plot = python(dir, BENCH_DIR.resolve("plot.py").toString(), dir.toString(), "-o", png.toString());
        assertEquals(0, plot.status(), plot.err());
        checkPng(Files.readAllBytes(png));
    }

    /** Signature, chunk CRCs, IHDR (8-bit RGB) and an IDAT that inflates to height * (1 + 3 * width) bytes. */
    private static void checkPng(byte[] b) throws Exception {
        assertArrayEquals(new byte[] {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}, Arrays.copyOf(b, 8));
        DataInputStream in = new DataInputStream(new java.io.ByteArrayInputStream(b, 8, b.length - 8));
        int width = 0, height = 0;
        ByteArrayOutputStream idat = new ByteArrayOutputStream();
        boolean end = false;
        while (!end) {
            int len = in.readInt();
            byte[] type = in.readNBytes(4), data = in.readNBytes(len);
            int crc = in.readInt();
            CRC32 c = new CRC32();
            c.update(type);
            c.update(data);
            assertEquals((int) c.getValue(), crc, "bad CRC in " + new String(type, StandardCharsets.US_ASCII));
            switch (new String(type, StandardCharsets.US_ASCII)) {
                case "IHDR" -> {
                    java.nio.ByteBuffer h = java.nio.ByteBuffer.wrap(data);
                    width = h.getInt();
                    height = h.getInt();
                    assertEquals(8, data[8]);  // bit depth
                    assertEquals(2, data[9]);  // truecolour RGB
                }
                case "IDAT" -> idat.write(data);
                case "IEND" -> end = true;
                default -> { }
            }
        }
        assertTrue(width >= 320 && height >= 200, width + "x" + height);
        Inflater inf = new Inflater();
        inf.setInput(idat.toByteArray());
        byte[] raw = new byte[height * (1 + 3 * width) + 1];
        int n = 0;
        while (!inf.finished() && n < raw.length) n += inf.inflate(raw, n, raw.length - n);
        assertEquals(height * (1 + 3 * width), n);
    }
}
