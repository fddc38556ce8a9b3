package io.jvhost.testvm;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The outcome of a guest test as read from the serial console.
 *
 * @param outcome  PASS/FAIL from the guest's {@code JVTEST-RESULT} line, or why there was none
 * @param reason   the text after {@code JVTEST-RESULT FAIL}, or a harness explanation
 * @param markers  every {@code JVTEST-*} line seen (text from the marker on)
 * @param elapsed  time from QEMU start to the result (or to giving up)
 */
public record GuestResult(Outcome outcome, String reason, List<String> markers, Duration elapsed,
                          Path serialLog, Path stderrLog) {

    public enum Outcome { PASS, FAIL, TIMEOUT, QEMU_EXITED }

    private static final Pattern KV = Pattern.compile("(\\w+)=(\\S*)");

    public boolean passed() {
        return outcome == Outcome.PASS;
    }

    /**
     * The value of {@code key=} on the first marker line starting with {@code prefix}, e.g.
     * {@code value("JVTEST-GUEST vda", "queues")}.
     */
    public Optional<String> value(String prefix, String key) {
        for (String m : markers) {
            if (m.startsWith(prefix)) {
                Matcher kv = KV.matcher(m.substring(prefix.length()));
                while (kv.find()) {
                    if (kv.group(1).equals(key)) {
                        return Optional.of(kv.group(2));
                    }
                }
            }
        }
        return Optional.empty();
    }

    /** A multi-line description for assertion messages: outcome, markers, console and stderr tails. */
    public String describe() {
        StringBuilder sb = new StringBuilder();
        sb.append("guest ").append(outcome).append(reason.isEmpty() ? "" : ": " + reason)
                .append(" after ").append(elapsed.toMillis()).append(" ms\n");
        sb.append("markers:\n");
        for (String m : markers) {
            sb.append("  ").append(m).append('\n');
        }
        if (!passed()) {
            sb.append("serial console (").append(serialLog).append("), last lines:\n")
                    .append(TestVm.tail(serialLog, 40)).append('\n');
            sb.append("QEMU stderr (").append(stderrLog).append("):\n").append(TestVm.tail(stderrLog, 20)).append('\n');
        }
        return sb.toString();
    }
}
