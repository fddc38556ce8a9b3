package io.jvhost.vhostuser;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Records, for the whole test JVM, where every virtqueue handler entry ran ({@link BlkQueue#probe}): the thread
 * is compared with the queue's own iothread independently of BlkQueue's own check. Tests that call a handler on
 * the wrong thread on purpose declare it ({@link #expectWrongThread}), so the suite-end check can demand that
 * nothing else ever ran on a wrong thread.
 */
final class HandlerRuns {
    static final AtomicLong RUNS = new AtomicLong();
    /** Queue name -> names of the threads its handlers ran on (right thread only). */
    static final Map<String, Set<String>> THREADS = new ConcurrentHashMap<>();
    /** Queue name -> name of its iothread. */
    static final Map<String, String> CONTEXT = new ConcurrentHashMap<>();
    /** Queue object per name, weakly (tests reach a running queue through it). */
    private static final Map<String, WeakReference<BlkQueue>> QUEUES = new ConcurrentHashMap<>();
    private static final List<String> WRONG = new ArrayList<>();
    private static final List<String> EXPECTED_WRONG = new ArrayList<>();

    private HandlerRuns() {}

    static synchronized void install() {
        if (BlkQueue.probe != null) return;
        BlkQueue.probe = (q, t) -> {
            RUNS.incrementAndGet();
            WeakReference<BlkQueue> known = QUEUES.get(q.name());
            if (known == null || known.get() != q) QUEUES.put(q.name(), new WeakReference<>(q));
            CONTEXT.putIfAbsent(q.name(), q.context().name());
            if (t == q.context().thread()) {
                THREADS.computeIfAbsent(q.name(), k -> ConcurrentHashMap.newKeySet()).add(t.getName());
            } else {
                synchronized (HandlerRuns.class) {
                    WRONG.add(q.name() + " in " + t.getName());
                }
            }
        };
    }

    /** The live queue with this name whose handlers have run, or null. */
    static BlkQueue queue(String name) {
        WeakReference<BlkQueue> r = QUEUES.get(name);
        return r == null ? null : r.get();
    }

    /** Declares a deliberate wrong-thread call about to be made. */
    static synchronized void expectWrongThread(BlkQueue q, Thread t) {
        EXPECTED_WRONG.add(q.name() + " in " + t.getName());
    }

    static synchronized List<String> wrong() {
        return new ArrayList<>(WRONG);
    }

    static synchronized List<String> expectedWrong() {
        return new ArrayList<>(EXPECTED_WRONG);
    }
}
