package io.jvhost.block;

import java.util.ArrayList;
import java.util.List;

/**
 * Per-thread plugging (QEMU's blk_io_plug, which became the per-thread defer_call): between {@link #begin} and
 * the matching {@link #end} on one thread, drivers that support batching hold that thread's submissions and
 * hand them over at the end. A driver enlists itself the first time it batches in a section
 * ({@link BlockDriver#plug}) and is flushed at the end ({@link BlockDriver#unplug}). Because the state is the
 * thread's, a root replaced in the middle of a section cannot leave a count behind. Drain phase 2 flushes and
 * disables batching per node regardless of who plugged.
 */
final class Plug {
    private Plug() {}

    private static final class State {
        int depth;
        final List<BlockDriver> enlisted = new ArrayList<>(4);
    }

    private static final ThreadLocal<State> STATE = ThreadLocal.withInitial(State::new);

    static void begin() {
        STATE.get().depth++;
    }

    static void end() {
        State s = STATE.get();
        if (s.depth <= 0) throw new IllegalStateException("unplug without plug");
        if (--s.depth > 0) return;
        // A driver's unplug may submit, and so enlist nothing (depth is 0 again); iterate over a stable list.
        for (int i = 0; i < s.enlisted.size(); i++) s.enlisted.get(i).unplug();
        s.enlisted.clear();
    }

    /** If the calling thread is plugged, enlists {@code d} (once per section) and returns true. */
    static boolean enlist(BlockDriver d) {
        State s = STATE.get();
        if (s.depth == 0) return false;
        for (int i = 0; i < s.enlisted.size(); i++) if (s.enlisted.get(i) == d) return true;
        s.enlisted.add(d);
        d.plug();
        return true;
    }
}
