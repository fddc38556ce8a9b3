package io.jvhost.block.job;

import io.jvhost.block.BdrvChild;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockParent;
import io.jvhost.iothread.AioContext;
import io.jvhost.iothread.BottomHalf;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A block job (QEMU's Job/BlockJob): a state machine that runs in one AioContext and re-enters itself through a
 * bottom half ({@link #reenter}), never by calling itself from a completion callback. That is what lets a job
 * drain from its own loop (the seed's mirror fix): a drain issued from the loop polls the job's context, and a
 * completion that arrives meanwhile only schedules the bottom half, which, if it runs inside that nested poll,
 * defers itself until the outer iteration has returned.
 *
 * <p>The job is a {@link BlockParent} of every node it uses ({@link #use}). Drain pauses it at a safe point:
 * {@link #mayStartOp} refuses new operations while a drain (or the user) pauses the job, operations in progress
 * complete normally and count in the nodes' in-flight counters, and {@link BlockParent#childDrainedPoll} reports
 * the job busy until they have.
 *
 * <p>Thread model: the state machine ({@link #iterate}, status changes, events) runs on the job's context
 * thread. The public control methods may be called from any thread; they set flags and schedule the bottom half.
 * Status, progress and error are volatile for readers elsewhere.
 */
public abstract class BlockJob {
    private static final Logger LOG = Logger.getLogger(BlockJob.class.getName());

    private final Jobs jobs;
    private final String id;
    private final String type;
    private final AioContext ctx;
    private final boolean autoDismiss;
    private final BottomHalf bh;
    private final CopyOnWriteArrayList<JobListener> listeners = new CopyOnWriteArrayList<>();
    private final CompletableFuture<JobStatus> finished = new CompletableFuture<>();
    private final List<BdrvChild> edges = new ArrayList<>();
    private final Parent parent = new Parent();

    private volatile JobStatus status = JobStatus.CREATED;
    private volatile long progressCurrent, progressTotal;
    private volatile String error;
    /** Drain and user pauses; new operations start only at zero. */
    private final AtomicInteger pauseCount = new AtomicInteger();
    private boolean userPaused; // guarded by this
    private volatile boolean cancelRequested;
    private volatile boolean completeRequested;
    /** Operations in progress (any requests they still have in flight count on the nodes too). */
    private final AtomicInteger busy = new AtomicInteger();
    /** The job is finishing under its own drained section; other drainers wait for it (see Parent). */
    private volatile boolean finalizing;
    /** The job's thread is inside its own drainedBegin: its own wait must not wait for itself. */
    private volatile boolean inOwnDrain;

    // Context thread only.
    private boolean iterating, reenterPending;

    protected BlockJob(Jobs jobs, String id, String type, AioContext ctx, boolean autoDismiss) {
        this.jobs = jobs;
        this.id = id;
        this.type = type;
        this.ctx = ctx;
        this.autoDismiss = autoDismiss;
        this.bh = ctx.newBottomHalf(this::runIteration);
        jobs.register(this);
    }

    public String id() {
        return id;
    }

    /** QAPI job type ("mirror"). */
    public String type() {
        return type;
    }

    public JobStatus status() {
        return status;
    }

    public long progressCurrent() {
        return progressCurrent;
    }

    public long progressTotal() {
        return progressTotal;
    }

    /** The error the job failed with, or null. */
    public String error() {
        return error;
    }

    public AioContext context() {
        return ctx;
    }

    /** Paused by the user or a drained section. */
    public boolean isPaused() {
        return pauseCount.get() > 0;
    }

    public synchronized boolean isUserPaused() {
        return userPaused;
    }

    /** Operations in progress. */
    public boolean isBusy() {
        return busy.get() > 0;
    }

    public void addListener(JobListener l) {
        listeners.add(l);
    }

    public void removeListener(JobListener l) {
        listeners.remove(l);
    }

    /** Completes with the final status (CONCLUDED, or NULL once dismissed) when the job has concluded. */
    public CompletableFuture<JobStatus> finished() {
        return finished;
    }

    // ------------------------------------------------------------------------------------------- control

    /** CREATED -> RUNNING. */
    public void start() {
        ctx.execute(() -> {
            if (status != JobStatus.CREATED) return;
            transition(JobStatus.RUNNING);
            reenter();
        });
    }

    /** job-pause: the job stops starting operations; those in progress finish. */
    public void pause() {
        synchronized (this) {
            if (userPaused || isTerminal()) return;
            userPaused = true;
        }
        pauseCount.incrementAndGet();
        reenter();
    }

    /** job-resume. */
    public void resume() {
        synchronized (this) {
            if (!userPaused) return;
            userPaused = false;
        }
        pauseCount.decrementAndGet();
        reenter();
    }

    /** job-cancel: stops at the next safe point; the job's target is left as it is. */
    public void cancel() {
        if (isTerminal()) return;
        cancelRequested = true;
        reenter();
    }

    /** job-complete: only once READY. */
    public void complete() {
        JobStatus s = status;
        if (s != JobStatus.READY && s != JobStatus.STANDBY) {
            throw new IllegalStateException("job '" + id + "' is " + s.qapiName() + ", not ready to complete");
        }
        completeRequested = true;
        reenter();
    }

    /** job-dismiss: CONCLUDED -> NULL, the job leaves the registry. */
    public void dismiss() {
        ctx.execute(() -> {
            if (status != JobStatus.CONCLUDED) return;
            transition(JobStatus.NULL);
            jobs.unregister(this);
            finished.complete(JobStatus.NULL);
        });
    }

    // ------------------------------------------------------------------------------- for subclasses

    /** The job's loop body: runs on the job's context, triggered by {@link #reenter}. */
    protected abstract void iterate();

    /** Schedules {@link #iterate} (coalescing; any thread). */
    protected final void reenter() {
        bh.schedule();
    }

    /** Uses {@code bs} through a new edge whose parent is this job. */
    protected final BdrvChild use(BlockDriverState bs, String role) {
        BdrvChild c = bs.attachParent(parent, role);
        edges.add(c);
        return c;
    }

    /** The job as a parent (so a node replacement can leave the job's own edges alone). */
    protected final BlockParent asParent() {
        return parent;
    }

    protected final boolean cancelRequested() {
        return cancelRequested;
    }

    protected final boolean completeRequested() {
        return completeRequested;
    }

    /** True while paused by the user or a drain (unless the job is finalizing under its own drain). */
    protected final boolean pauseRequested() {
        return pauseCount.get() > 0 && !finalizing;
    }

    /**
     * Before an operation that issues requests: returns false (and starts nothing) when the job must pause.
     * Counted first and checked second, so a drain that pauses the job either sees the operation as busy or is
     * seen here.
     */
    protected final boolean mayStartOp() {
        busy.incrementAndGet();
        if (pauseRequested()) {
            opFinished();
            return false;
        }
        return true;
    }

    /** The operation started by {@link #mayStartOp} is over (call it from its last completion callback). */
    protected final void opFinished() {
        busy.decrementAndGet();
        reportProgress();
    }

    protected final int opsBusy() {
        return busy.get();
    }

    /**
     * At a safe point (no operation in progress): reflect a pause in the status (running -> paused, ready ->
     * standby) or its end.
     */
    protected final void pausePoint(boolean paused) {
        JobStatus s = status;
        if (paused) {
            if (s == JobStatus.RUNNING) transition(JobStatus.PAUSED);
            else if (s == JobStatus.READY) transition(JobStatus.STANDBY);
        } else {
            if (s == JobStatus.PAUSED) transition(JobStatus.RUNNING);
            else if (s == JobStatus.STANDBY) transition(JobStatus.READY);
        }
    }

    protected final void setProgress(long current, long total) {
        progressCurrent = current;
        progressTotal = total;
    }

    /** RUNNING -> READY, with the BLOCK_JOB_READY event. */
    protected final void becomeReady() {
        if (status != JobStatus.RUNNING) return;
        transition(JobStatus.READY);
        for (JobListener l : allListeners()) safe(() -> l.ready(this));
    }

    /**
     * Marks the job as finishing under its own drained section: from now on drains by others wait for the job to
     * finish, and pauses no longer hold it. Then drains (subtree) {@code bs} from the job's thread: that polls
     * the job's own context, so the job's completions keep running.
     */
    protected final void drainForFinalize(BlockDriverState bs, long timeoutNs) throws java.util.concurrent.TimeoutException {
        finalizing = true;
        inOwnDrain = true;
        try {
            bs.subtreeDrainedBegin(timeoutNs, java.util.concurrent.TimeUnit.NANOSECONDS);
        } catch (java.util.concurrent.TimeoutException | RuntimeException e) {
            finalizing = false;
            reportProgress();
            throw e;
        } finally {
            inOwnDrain = false;
        }
    }

    protected final boolean isFinalizing() {
        return finalizing;
    }

    /** Success: WAITING -> PENDING -> CONCLUDED, BLOCK_JOB_COMPLETED. Drops the job's edges. */
    protected final void concludeSuccess() {
        releaseEdges();
        moveTo(JobStatus.WAITING);
        moveTo(JobStatus.PENDING);
        transition(JobStatus.CONCLUDED);
        for (JobListener l : allListeners()) safe(() -> l.completed(this, null));
        concluded();
    }

    /** Failure or cancel: ABORTING -> CONCLUDED, BLOCK_JOB_COMPLETED with the error or BLOCK_JOB_CANCELLED. */
    protected final void concludeAborted(String err) {
        releaseEdges();
        if (err != null) error = err;
        moveTo(JobStatus.ABORTING);
        transition(JobStatus.CONCLUDED);
        for (JobListener l : allListeners()) {
            if (err != null) safe(() -> l.completed(this, err));
            else safe(() -> l.cancelled(this));
        }
        concluded();
    }

    /** Hook for subclasses to release resources when the job ends (edges are already gone). */
    protected void cleanup() {}

    // ------------------------------------------------------------------------------------------ internals

    private boolean isTerminal() {
        JobStatus s = status;
        return s == JobStatus.CONCLUDED || s == JobStatus.NULL || s == JobStatus.ABORTING;
    }

    private void runIteration() {
        if (iterating) {
            // Re-entered from a nested poll inside our own iteration (a drain): run again after it returns.
            reenterPending = true;
            return;
        }
        if (isTerminal() || (status == JobStatus.CREATED && !cancelRequested)) return;
        iterating = true;
        try {
            iterate();
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, "job '" + id + "' failed", t);
            if (!isTerminal()) {
                error = String.valueOf(t);
                cancelRequested = true; // the subclass winds down like a cancel, then reports the error
            }
        } finally {
            iterating = false;
        }
        if (reenterPending) {
            reenterPending = false;
            reenter();
        }
    }

    /** Moves along the table, passing through RUNNING/READY when coming from a pause state. */
    private void moveTo(JobStatus to) {
        JobStatus s = status;
        if (!s.canMoveTo(to)) {
            if (s == JobStatus.PAUSED) transition(JobStatus.RUNNING);
            else if (s == JobStatus.STANDBY) transition(JobStatus.READY);
        }
        if (status != to) transition(to);
    }

    private void transition(JobStatus to) {
        JobStatus s = status;
        if (!s.canMoveTo(to)) throw new IllegalStateException("job '" + id + "': " + s + " -> " + to);
        status = to;
        for (JobListener l : allListeners()) safe(() -> l.statusChanged(this, to));
    }

    private void concluded() {
        cleanup();
        finalizing = false;
        reportProgress();
        if (autoDismiss) {
            transition(JobStatus.NULL);
            jobs.unregister(this);
            finished.complete(JobStatus.NULL);
        } else {
            finished.complete(JobStatus.CONCLUDED);
        }
    }

    private void releaseEdges() {
        for (BdrvChild c : edges) c.detach();
    }

    private void reportProgress() {
        if (!edges.isEmpty()) edges.get(0).reportProgress();
    }

    private List<JobListener> allListeners() {
        List<JobListener> all = new ArrayList<>(listeners);
        all.addAll(jobs.listeners);
        return all;
    }

    private void safe(Runnable r) {
        try {
            r.run();
        } catch (Throwable t) {
            LOG.log(Level.WARNING, "job listener failed", t);
        }
    }

    /** The job as a user of its nodes. */
    private final class Parent implements BlockParent {
        @Override
        public String parentName() {
            return "job '" + id + "'";
        }

        @Override
        public void childDrainedBegin(BdrvChild c) {
            pauseCount.incrementAndGet();
            reenter(); // reflect the pause in the status at the next safe point
        }

        @Override
        public void childDrainedEnd(BdrvChild c) {
            pauseCount.decrementAndGet();
            reenter();
        }

        @Override
        public boolean childDrainedPoll(BdrvChild c) {
            if (busy.get() > 0) return true;
            // A job finishing under its own drain keeps others' drains waiting until it is done, but its own
            // drainedBegin (polling on the job's thread) must not wait for itself.
            return finalizing && !(inOwnDrain && ctx.inContextThread());
        }
    }
}
