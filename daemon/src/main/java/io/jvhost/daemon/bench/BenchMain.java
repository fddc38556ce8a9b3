package io.jvhost.daemon.bench;

import java.io.IOException;
import java.io.PrintStream;

/**
 * {@code jvhost-bench}: the command-line front of {@link BenchRun} (launcher: bin/jvhost-bench). Summary on stdout,
 * progress and errors on stderr. Exit status 0 done, 1 bad options, 2 the run failed.
 */
public final class BenchMain {
    private BenchMain() {}

    public static void main(String[] args) {
        int status = run(args, System.out, System.err);
        System.exit(status);
    }

    /** Runs the tool; returns its exit status instead of exiting (tests). */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        BenchOptions o;
        try {
            o = BenchOptions.parse(args);
        } catch (BenchOptions.UsageException e) {
            err.println("jvhost-bench: " + e.getMessage());
            return 1;
        }
        if (o == null) {
            out.print(BenchOptions.usage());
            return 0;
        }
        try {
            BenchResult r = BenchRun.run(o, err);
            out.print(r.summary());
            out.flush();
            if (o.json() != null) r.writeJson(o.json());
            return 0;
        } catch (BenchException e) {
            err.println("jvhost-bench: " + e.getMessage());
            return 2;
        } catch (IOException e) {
            err.println("jvhost-bench: " + e);
            return 2;
        } catch (IllegalArgumentException e) {
            err.println("jvhost-bench: " + e.getMessage());
            return 1;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            err.println("jvhost-bench: interrupted");
            return 2;
        }
    }
}
