package io.jvhost.block;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadInfo;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.ReentrantLock;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The block graph's topology (edges, quiesce counters) and the drain algorithm.
 *
 * <p><b>The graph lock</b> is one process-wide recursive mutex ({@link ReentrantLock}): it guards every node's
 * child and parent lists, quiesce counters, the saved phase-1/2 sets, and edge changes (attach, detach, replace).
 * It is held only for short, non-blocking steps: drain phases 1-3 and 5 and graph changes. It is never held while
 * waiting (phase 4), and drain refuses to wait when the caller holds it: an iothread blocked on it could not run
 * the completions the waiter needs. Requests never take it; they read the volatile node behind an edge.
 *
 * <p><b>Drain</b>, in the seed's phases, for each node whose quiesce counter goes 0 -> 1:
 * <ol>
 *   <li>disable throttling in the node's subtree (throttled requests are released at once, never dropped);
 *   <li>disable plugging in the node's subtree (batched submissions are flushed);
 *   <li>tell the node's parents: a parent node is quiesced in turn (so drain propagates up to the roots), a
 *       backend stops its device and parks new requests, a job pauses at its next safe point;
 * </ol>
 * then, without the lock,
 * <ol start="4">
 *   <li>wait until every affected node (the drained ones and their ancestors) has nothing in flight and none of
 *       their parents reports work in progress, looking at one node at a time, parents before children, and
 *       repeating until one whole pass found nothing to wait for. The wait is remote for plain threads; a
 *       context's own thread polls its own context ({@link AioWait}).
 * </ol>
 * On the 1 -> 0 transition (drainedEnd): 5. re-enable plugging and throttling, then resume parents (jobs,
 * devices, parked requests).
 *
 * <p>Subtree drains also remember their depth per node (subtreeQuiesce), and edges added or replaced under a
 * drained parent pass that depth on to the new child, so the matching end always balances.
 */
final class BlockGraph {
    private static final Logger LOG = Logger.getLogger(BlockGraph.class.getName());
    private static final ReentrantLock LOCK = new ReentrantLock();
    /** A drain that has no deadline logs (with a thread dump) this often while it waits. */
    static final long DRAIN_WARN_NS = 30_000_000_000L;

    private BlockGraph() {}

    static void lock() {
        LOCK.lock();
    }

    static void unlock() {
        LOCK.unlock();
    }

    static boolean isLockedByMe() {
        return LOCK.isHeldByCurrentThread();
    }

    // ------------------------------------------------------------------------------------------ edges

    /** Adds an edge from {@code parent} (a node if parentNode != null) to {@code child}. */
    static BdrvChild attach(BlockParent parent, BlockDriverState parentNode, String name, BlockDriverState child) {
        LOCK.lock();
        try {
            if (child.isClosed()) throw new IllegalStateException("node '" + child.nodeName() + "' is closed");
            if (parentNode != null && (parentNode == child || reachable(parentNode, child))) {
                throw new IllegalArgumentException("edge " + parentNode.nodeName() + " -> " + child.nodeName() + " would make a cycle");
            }
            BdrvChild c = new BdrvChild(name, parent, parentNode, child);
            int depth = parentNode == null ? 0 : parentNode.subtreeQuiesce;
            for (int i = 0; i < depth; i++) quiesceTree(child);
            child.parents.add(c);
            if (parentNode != null) parentNode.children.add(c);
            c.attached = true;
            if (child.quiesceCounter > 0) parent.childDrainedBegin(c);
            return c;
        } finally {
            LOCK.unlock();
        }
    }

    static void detach(BdrvChild c) {
        LOCK.lock();
        try {
            if (!c.attached) return;
            BlockDriverState child = c.bs();
            c.attached = false;
            child.parents.remove(c);
            if (c.parentNode != null) c.parentNode.children.remove(c);
            if (child.quiesceCounter > 0) c.parent().childDrainedEnd(c);
            int depth = c.parentNode == null ? 0 : c.parentNode.subtreeQuiesce;
            for (int i = 0; i < depth; i++) unquiesceTree(child);
        } finally {
            LOCK.unlock();
        }
    }

    /**
     * Points edge {@code c} at {@code to}. The parent's drain state moves with the edge: it is told about the new
     * child's quiesce state before being released from the old child's, so it never resumes in between.
     */
    static void replace(BdrvChild c, BlockDriverState to) {
        LOCK.lock();
        try {
            if (!c.attached) throw new IllegalStateException(c + " is detached");
            BlockDriverState from = c.bs();
            if (from == to) return;
            if (to.isClosed()) throw new IllegalStateException("node '" + to.nodeName() + "' is closed");
            if (c.parentNode != null && (c.parentNode == to || reachable(c.parentNode, to))) {
                throw new IllegalArgumentException("edge " + c.parentNode.nodeName() + " -> " + to.nodeName() + " would make a cycle");
            }
            int depth = c.parentNode == null ? 0 : c.parentNode.subtreeQuiesce;
            for (int i = 0; i < depth; i++) quiesceTree(to);
            boolean oldQ = from.quiesceCounter > 0;
            from.parents.remove(c);
            c.setBs(to);
            to.parents.add(c);
            if (to.quiesceCounter > 0) c.parent().childDrainedBegin(c);
            if (oldQ) c.parent().childDrainedEnd(c);
            for (int i = 0; i < depth; i++) unquiesceTree(from);
        } finally {
            LOCK.unlock();
        }
    }

    /** Is {@code target} {@code from} or below it? (An edge target -> from would then close a cycle.) */
    private static boolean reachable(BlockDriverState target, BlockDriverState from) {
        if (target == from) return true;
        for (BdrvChild c : from.children) {
            if (reachable(target, c.bs())) return true;
        }
        return false;
    }

    // ---------------------------------------------------------------------------------------- quiesce

    /** Phases 1-3 for a node whose counter leaves zero. Lock held. */
    static void quiesce(BlockDriverState bs) {
        if (bs.quiesceCounter++ != 0) return;
        List<BlockDriverState> sub = subtree(bs);
        bs.ioControlsOff = sub; // phase 5 undoes exactly this set, whatever the graph looks like by then
        for (BlockDriverState n : sub) n.driver().noThrottleBegin();   // 1
        for (BlockDriverState n : sub) n.driver().ioUnpluggedBegin();  // 2
        for (BdrvChild c : new ArrayList<>(bs.parents)) c.parent().childDrainedBegin(c); // 3
    }

    /** Phase 5 for a node whose counter returns to zero. Lock held. */
    static void unquiesce(BlockDriverState bs) {
        if (bs.quiesceCounter <= 0) throw new IllegalStateException("drainedEnd without drainedBegin on node '" + bs.nodeName() + "'");
        if (--bs.quiesceCounter != 0) return;
        List<BlockDriverState> sub = bs.ioControlsOff;
        bs.ioControlsOff = null;
        for (BlockDriverState n : sub) n.driver().ioUnpluggedEnd();
        for (BlockDriverState n : sub) n.driver().noThrottleEnd();
        for (BdrvChild c : new ArrayList<>(bs.parents)) c.parent().childDrainedEnd(c);
    }

    static void quiesceTree(BlockDriverState bs) {
        bs.subtreeQuiesce++;
        quiesce(bs);
        for (BdrvChild c : new ArrayList<>(bs.children)) quiesceTree(c.bs());
    }

    static void unquiesceTree(BlockDriverState bs) {
        if (bs.subtreeQuiesce <= 0) throw new IllegalStateException("subtree drainedEnd without begin on node '" + bs.nodeName() + "'");
        bs.subtreeQuiesce--;
        unquiesce(bs);
        for (BdrvChild c : new ArrayList<>(bs.children)) unquiesceTree(c.bs());
    }

    /** bs and everything below it, depth first, each node once, children in edge order. Lock held. */
    static List<BlockDriverState> subtree(BlockDriverState bs) {
        List<BlockDriverState> out = new ArrayList<>();
        collectDown(bs, out, Collections.newSetFromMap(new IdentityHashMap<>()));
        return out;
    }

    private static void collectDown(BlockDriverState bs, List<BlockDriverState> out, Set<BlockDriverState> seen) {
        if (!seen.add(bs)) return;
        out.add(bs);
        for (BdrvChild c : bs.children) collectDown(c.bs(), out, seen);
    }

    // ------------------------------------------------------------------------------------------ drain

    static void drainedBegin(BlockDriverState bs, boolean subtree, long timeoutNs) throws TimeoutException {
        if (LOCK.isHeldByCurrentThread()) {
            throw new IllegalStateException("drain of '" + bs.nodeName() + "' while holding the block graph lock");
        }
        WaitItem[] items;
        LOCK.lock();
        try {
            if (subtree) quiesceTree(bs); else quiesce(bs);
            items = waitItems(subtree ? subtree(bs) : List.of(bs));
        } finally {
            LOCK.unlock();
        }
        try {
            waitIdle(bs, items, timeoutNs);
        } catch (TimeoutException | RuntimeException | Error e) {
            // A failed begin leaves nothing to end: undo the quiesce.
            drainedEnd(bs, subtree);
            throw e;
        }
    }

    static void drainedEnd(BlockDriverState bs, boolean subtree) {
        LOCK.lock();
        try {
            if (subtree) unquiesceTree(bs); else unquiesce(bs);
        } finally {
            LOCK.unlock();
        }
    }

    /** What phase 4 waits for at one node: its in-flight counter and its non-node parents' work. */
    private static final class WaitItem {
        final BlockDriverState bs;
        final BdrvChild[] others;

        WaitItem(BlockDriverState bs, BdrvChild[] others) {
            this.bs = bs;
            this.others = others;
        }

        boolean busy() {
            for (BdrvChild c : others) {
                if (c.parent().childDrainedPoll(c)) return true;
            }
            return bs.inFlight() != 0;
        }

        String describe() {
            StringBuilder sb = new StringBuilder("node '").append(bs.nodeName()).append("' in flight ").append(bs.inFlight());
            for (BdrvChild c : others) {
                if (c.parent().childDrainedPoll(c)) sb.append(", ").append(c.parent().parentName()).append(" busy");
            }
            return sb.toString();
        }
    }

    /**
     * The drained nodes plus all their ancestors (their parents were quiesced too and may hold requests that
     * are still to reach the drained nodes), ordered parents before children. Lock held.
     */
    private static WaitItem[] waitItems(List<BlockDriverState> drained) {
        Set<BlockDriverState> affected = Collections.newSetFromMap(new IdentityHashMap<>());
        for (BlockDriverState n : drained) collectUp(n, affected);
        // Top-down: start at nodes without a parent node in the set, walk down within the set.
        List<BlockDriverState> order = new ArrayList<>();
        Set<BlockDriverState> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        List<BlockDriverState> sorted = new ArrayList<>(affected);
        sorted.sort((a, b) -> Long.compare(a.seq, b.seq));
        for (BlockDriverState n : sorted) {
            boolean top = true;
            for (BdrvChild c : n.parents) {
                if (c.parentNode != null && affected.contains(c.parentNode)) {
                    top = false;
                    break;
                }
            }
            if (top) walkDown(n, affected, seen, order);
        }
        for (BlockDriverState n : sorted) walkDown(n, affected, seen, order); // unreachable leftovers (none expected)
        WaitItem[] items = new WaitItem[order.size()];
        for (int i = 0; i < items.length; i++) {
            BlockDriverState n = order.get(i);
            List<BdrvChild> others = new ArrayList<>();
            for (BdrvChild c : n.parents) if (c.parentNode == null) others.add(c);
            items[i] = new WaitItem(n, others.toArray(new BdrvChild[0]));
        }
        return items;
    }

    private static void collectUp(BlockDriverState bs, Set<BlockDriverState> out) {
        if (!out.add(bs)) return;
        for (BdrvChild c : bs.parents) if (c.parentNode != null) collectUp(c.parentNode, out);
    }

    private static void walkDown(BlockDriverState bs, Set<BlockDriverState> affected, Set<BlockDriverState> seen, List<BlockDriverState> out) {
        if (!affected.contains(bs) || !seen.add(bs)) return;
        out.add(bs);
        for (BdrvChild c : bs.children) walkDown(c.bs(), affected, seen, out);
    }

    /**
     * Phase 4. Waits node by node; a pass that had to wait is followed by another, until a pass finds every
     * item idle. Parents are quiesced, so new requests can only come from work that was in progress during the
     * pass, and every such request completes before the work that issued it does.
     */
    private static void waitIdle(BlockDriverState bs, WaitItem[] items, long timeoutNs) throws TimeoutException {
        long start = System.nanoTime();
        long nextWarn = DRAIN_WARN_NS;
        while (true) {
            boolean waited = false;
            for (WaitItem it : items) {
                while (it.busy()) {
                    waited = true;
                    long elapsed = System.nanoTime() - start;
                    long left = timeoutNs == Long.MAX_VALUE ? Long.MAX_VALUE : timeoutNs - elapsed;
                    if (left <= 0) {
                        throw new TimeoutException("drain of '" + bs.nodeName() + "' timed out waiting for " + it.describe());
                    }
                    // Without a deadline, wake up every DRAIN_WARN_NS to log what we are stuck on.
                    boolean unbounded = timeoutNs == Long.MAX_VALUE;
                    long slice = unbounded ? Math.max(1, nextWarn - elapsed) : left;
                    if (!AioWait.waitWhile(it::busy, slice) && unbounded && System.nanoTime() - start >= nextWarn) {
                        LOG.log(Level.WARNING, "drain of '" + bs.nodeName() + "' still waiting for " + it.describe()
                                + "\n" + threadDump());
                        nextWarn += DRAIN_WARN_NS;
                    }
                }
            }
            if (!waited) return;
        }
    }

    /** All threads' stacks, for drain and test diagnostics. */
    static String threadDump() {
        StringBuilder sb = new StringBuilder();
        for (ThreadInfo ti : ManagementFactory.getThreadMXBean().dumpAllThreads(true, true)) {
            sb.append('"').append(ti.getThreadName()).append("\" ").append(ti.getThreadState());
            if (ti.getLockName() != null) sb.append(" on ").append(ti.getLockName());
            if (ti.getLockOwnerName() != null) sb.append(" owned by \"").append(ti.getLockOwnerName()).append('"');
            sb.append('\n');
            for (StackTraceElement e : ti.getStackTrace()) sb.append("\tat ").append(e).append('\n');
        }
        return sb.toString();
    }
}
