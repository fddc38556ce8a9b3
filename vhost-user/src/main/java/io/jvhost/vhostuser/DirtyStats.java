package io.jvhost.vhostuser;

import java.util.regex.Pattern;

/**
 * Dirty-page logging (live migration) done by one front-end connection since it connected.
 *
 * @param pagesMarked distinct 4 KiB guest pages jvhost has marked in the dirty log (data buffers filled by reads,
 *     status bytes, used rings of rings logged with VHOST_VRING_F_LOG)
 * @param usedRingPagesMarked how many of the {@code usedRingPages} are among them
 * @param usedRingPages distinct pages spanned, at their SET_VRING_ADDR log address, by the used rings of every ring
 *     that was given VHOST_VRING_F_LOG on this connection
 * @param marksOutsideLog writes that could not be marked because the log was too small for their page (a
 *     front-end bug; each is a page migration may miss)
 */
public record DirtyStats(long pagesMarked, int usedRingPagesMarked, int usedRingPages, long marksOutsideLog) {
    public static final DirtyStats NONE = new DirtyStats(0, 0, 0, 0);

    /**
     * The INFO log line's text after "export ID conn#N: " (logged when logging is switched off, when the device is
     * reset with logging on, and when the front-end disconnects with logging on). Test harnesses parse it:
     * keep the format.
     */
    public static final Pattern LOG_LINE = Pattern.compile("dirty log: (\\d+) distinct pages marked \\(used-ring pages: (\\d+)/(\\d+)\\)");

    /** {@code dirty log: <N> distinct pages marked (used-ring pages: <a>/<b>)} (matches {@link #LOG_LINE}). */
    public String logText() {
        return "dirty log: " + pagesMarked + " distinct pages marked (used-ring pages: " + usedRingPagesMarked + "/" + usedRingPages + ")";
    }
}
