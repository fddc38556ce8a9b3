package io.jvhost.block.job;

import java.util.Locale;

/** QEMU's JobStatus, with its transition table (job.c JobSTT). */
public enum JobStatus {
    UNDEFINED, CREATED, RUNNING, PAUSED, READY, STANDBY, WAITING, PENDING, ABORTING, CONCLUDED, NULL;

    private static final boolean[][] ALLOWED = {
        /*            U  C  R  P  Y  S  W  D  X  E  N */
        /* U */ row(0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        /* C */ row(0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1),
        /* R */ row(0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0),
        /* P */ row(0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0),
        /* Y */ row(0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0),
        /* S */ row(0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0),
        /* W */ row(0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0),
        /* D */ row(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0),
        /* X */ row(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0),
        /* E */ row(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
        /* N */ row(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    };

    private static boolean[] row(int... v) {
        boolean[] b = new boolean[v.length];
        for (int i = 0; i < v.length; i++) b[i] = v[i] != 0;
        return b;
    }

    public boolean canMoveTo(JobStatus to) {
        return ALLOWED[ordinal()][to.ordinal()];
    }

    /** The QAPI spelling ("running", "null"). */
    public String qapiName() {
        return name().toLowerCase(Locale.ROOT);
    }
}
