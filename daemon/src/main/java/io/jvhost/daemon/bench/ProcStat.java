package io.jvhost.daemon.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** Reads a process's CPU time and memory from /proc (Linux), for the bench itself and for the back-end. */
final class ProcStat {
    /** USER_HZ: the unit of utime/stime in /proc/PID/stat; 100 on every Linux ABI the JDK runs on. */
    static final long CLOCK_TICKS_PER_SECOND = 100;

    private ProcStat() {}

    /** utime + stime of {@code pid} ("self" when 0) in nanoseconds, or -1 if unreadable (process gone). */
    static long cpuNanos(long pid) {
        try {
            String s = Files.readString(Path.of("/proc", pid == 0 ? "self" : Long.toString(pid), "stat"));
            // The command name (field 2) may contain spaces and parentheses: fields restart after the last ')'.
            String[] f = s.substring(s.lastIndexOf(')') + 2).trim().split(" ");
            long ticks = Long.parseLong(f[11]) + Long.parseLong(f[12]); // fields 14 (utime) and 15 (stime)
            return ticks * (1_000_000_000L / CLOCK_TICKS_PER_SECOND);
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    /**
     * System-wide CPU time from the first line of /proc/stat in nanoseconds: {busy (user, nice, system, irq,
     * softirq, steal), steal}; null if unreadable. Guest time is already part of user time.
     */
    static long[] systemCpuNanos() {
        try (java.io.BufferedReader r = Files.newBufferedReader(Path.of("/proc/stat"))) {
            String line = r.readLine();
            if (line == null || !line.startsWith("cpu ")) return null;
            String[] f = line.substring(4).trim().split("\\s+");
            long user = Long.parseLong(f[0]), nice = Long.parseLong(f[1]), sys = Long.parseLong(f[2]);
            long irq = Long.parseLong(f[5]), softirq = Long.parseLong(f[6]), steal = f.length > 7 ? Long.parseLong(f[7]) : 0;
            long tick = 1_000_000_000L / CLOCK_TICKS_PER_SECOND;
            return new long[] {(user + nice + sys + irq + softirq + steal) * tick, steal * tick};
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /** A "VmRSS:"-style line of /proc/PID/status in bytes, or -1. */
    static long statusBytes(long pid, String field) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc", pid == 0 ? "self" : Long.toString(pid), "status"))) {
                if (line.startsWith(field + ":")) {
                    String v = line.substring(field.length() + 1).trim();
                    if (v.endsWith("kB")) return Long.parseLong(v.substring(0, v.length() - 2).trim()) * 1024;
                    return Long.parseLong(v);
                }
            }
        } catch (IOException | RuntimeException e) {
            // process gone or not Linux: reported as unknown
        }
        return -1;
    }
}
