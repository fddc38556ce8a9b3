package io.jvhost.daemon;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.jvhost.block.BlockDriverState;
import io.jvhost.block.BlockNodes;
import io.jvhost.block.job.BlockJob;
import io.jvhost.block.job.JobListener;
import io.jvhost.block.job.JobStatus;
import io.jvhost.block.job.Jobs;
import io.jvhost.block.job.MirrorJob;
import io.jvhost.daemon.qmp.Json;
import io.jvhost.daemon.qmp.QmpException;
import io.jvhost.iothread.AioContext;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.BiConsumer;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The daemon's block jobs: creation (blockdev-mirror), the job verbs with QEMU's verb table and error messages,
 * query-jobs / query-block-jobs, and the QMP events of every job.
 *
 * <p>Each job runs in an AioContext of its own, {@code jvhost-job-<id>}, created with the job and closed once the
 * job has been dismissed. Not the export's iothread, as QEMU would: an export's own iothreads end with the export
 * (block-export-del during a mirror must not stop the mirror), a user iothread could then not be deleted while a
 * job runs in it, and our block layer does not need the job and the guest's requests on one thread (requests
 * complete in their submitter's context, drain works from any context). It also keeps the copy loop off the
 * threads that serve the guest.
 *
 * <p>Threads: the registry below and the verbs are the main loop's; the listener runs on each job's thread and
 * only emits events (QmpServer.emit is thread-safe and keeps one thread's order).
 */
final class BlockJobs {
    private static final Logger LOG = Logger.getLogger(BlockJobs.class.getName());
    static final String DEVICE_NOT_ACTIVE = "DeviceNotActive";

    private final AioContext mainLoop;
    private final Executor mgmt;
    private final BiConsumer<String, ObjectNode> emit;
    private final Jobs jobs = new Jobs();
    /** By job id, until the job has reached NULL and its context is closed (main loop). */
    private final Map<String, Entry> entries = new LinkedHashMap<>();

    /** One job and what was made for it. */
    static final class Entry {
        final MirrorJob job;
        final AioContext ctx;
        final boolean autoDismiss;
        /** job-cancel was accepted (main loop): job-complete is refused from then on, as in QEMU. */
        boolean cancelRequested;
        /** The job ended by cancel (BLOCK_JOB_CANCELLED); query-jobs then reports QEMU's ECANCELED error. */
        volatile boolean cancelled;

        Entry(MirrorJob job, AioContext ctx, boolean autoDismiss) {
            this.job = job;
            this.ctx = ctx;
            this.autoDismiss = autoDismiss;
        }
    }

    BlockJobs(AioContext mainLoop, Executor mgmt, BiConsumer<String, ObjectNode> emit) {
        this.mainLoop = mainLoop;
        this.mgmt = mgmt;
        this.emit = emit;
    }

    /** True while the job holds its nodes (QEMU: the job's op blockers and BlockBackends are in place). */
    static boolean holdsNodes(JobStatus s) {
        return switch (s) {
            case CREATED, RUNNING, PAUSED, READY, STANDBY -> true;
            default -> false;
        };
    }

    /** The job that uses {@code bs} as its source or target right now, or null (main loop). */
    MirrorJob user(BlockDriverState bs) {
        for (BlockJob j : jobs.list()) {
            if (j instanceof MirrorJob m && holdsNodes(m.status()) && (m.source() == bs || m.target() == bs)) return m;
        }
        return null;
    }

    /** QEMU's op-blocker message for a node a job uses. */
    static String busy(BlockDriverState bs, BlockJob j) {
        return "Node '" + bs.nodeName() + "' is busy: block device is in use by block job: " + j.type();
    }

    // ------------------------------------------------------------------------------------------- mirror

    /**
     * Creates and starts a mirror (the caller has checked the nodes). Emits JOB_STATUS_CHANGE "created" before it
     * returns; "running" and the rest follow from the job's thread.
     */
    void startMirror(String jobId, BlockDriverState source, BlockDriverState target, long granularity, int maxOps,
                     boolean autoDismiss) throws QmpException {
        mainLoop.assertInContextThread("startMirror");
        if (jobId == null) throw new QmpException("An explicit job ID is required for this node");
        if (!BlockNodes.isWellFormed(jobId)) throw new QmpException("Invalid job ID '" + jobId + "'");
        BlockJob old = jobs.get(jobId);
        if (old != null && old.status() == JobStatus.NULL) {
            // Its NULL event is out and the job's thread drops it from the registry in the same task: wait for
            // that task (a client may reuse the id as soon as it sees the event). Bounded; the thread may be gone.
            try {
                old.context().call(() -> null, 5, TimeUnit.SECONDS);
            } catch (TimeoutException | java.util.concurrent.ExecutionException | RejectedExecutionException ex) {
                // gone or stuck: the registry answers below
            } catch (InterruptedException ex) {
                Thread.currentThread().interrupt();
            }
            old = jobs.get(jobId);
        }
        if (old != null) throw new QmpException("Job ID '" + jobId + "' already in use");
        AioContext ctx = AioContext.newIoThread("jvhost-job-" + jobId);
        MirrorJob job;
        try {
            job = MirrorJob.create(jobs, jobId, ctx, source, target, granularity, maxOps, autoDismiss);
        } catch (RuntimeException e) {
            // The node checks come first, so this is the block layer's own refusal (or a bug): its words.
            closeLater(ctx);
            throw new QmpException(String.valueOf(e.getMessage()));
        }
        Entry e = new Entry(job, ctx, autoDismiss);
        entries.put(jobId, e);
        job.addListener(new Events(e));
        statusChange(job, JobStatus.CREATED); // the job is born CREATED; its listener sees only later transitions
        LOG.info("job " + jobId + ": mirror of node '" + source.nodeName() + "' to node '" + target.nodeName() + "'");
        job.start();
    }

    // -------------------------------------------------------------------------------------------- verbs

    /** The verb table of QEMU's job.c (JobVerbTable), for the verbs we have. */
    static boolean verbAllowed(String verb, JobStatus s) {
        return switch (verb) {
            case "cancel" -> switch (s) {
                case CREATED, RUNNING, PAUSED, READY, STANDBY, WAITING, PENDING -> true;
                default -> false;
            };
            case "pause", "resume" -> switch (s) {
                case CREATED, RUNNING, PAUSED, READY, STANDBY -> true;
                default -> false;
            };
            case "complete" -> s == JobStatus.READY || s == JobStatus.STANDBY;
            case "dismiss" -> s == JobStatus.CONCLUDED;
            default -> throw new IllegalArgumentException(verb);
        };
    }

    private Entry find(String id) throws QmpException {
        Entry e = entries.get(id);
        // A job that reached NULL is gone for QMP at once (its event is sent before the registry drops it).
        if (e == null || jobs.get(id) != e.job || e.job.status() == JobStatus.NULL) {
            throw new QmpException(DEVICE_NOT_ACTIVE, "Job not found");
        }
        return e;
    }

    /** The jobs QMP sees, newest first as QEMU lists them: not those that reached NULL. */
    private List<BlockJob> visible() {
        List<BlockJob> all = new ArrayList<>();
        for (BlockJob j : jobs.list()) {
            if (j.status() != JobStatus.NULL) all.add(j);
        }
        java.util.Collections.reverse(all);
        return all;
    }

    private static void applyVerb(BlockJob j, String verb) throws QmpException {
        JobStatus s = j.status();
        if (!verbAllowed(verb, s)) throw verbError(j, s, verb);
    }

    private static QmpException verbError(BlockJob j, JobStatus s, String verb) {
        return new QmpException("Job '" + j.id() + "' in state '" + s.qapiName() + "' cannot accept command verb '" + verb + "'");
    }

    void pause(String id) throws QmpException {
        BlockJob j = find(id).job;
        applyVerb(j, "pause");
        if (j.isUserPaused()) throw new QmpException("Job is already paused");
        j.pause();
    }

    void resume(String id) throws QmpException {
        BlockJob j = find(id).job;
        if (!j.isUserPaused()) throw new QmpException("Can't resume a job that was not paused");
        applyVerb(j, "resume");
        j.resume();
    }

    void cancel(String id) throws QmpException {
        Entry e = find(id);
        applyVerb(e.job, "cancel");
        e.cancelRequested = true;
        e.job.cancel();
    }

    void complete(String id) throws QmpException {
        Entry e = find(id);
        applyVerb(e.job, "complete");
        if (e.cancelRequested) throw new QmpException("The active block job '" + id + "' cannot be completed");
        try {
            e.job.complete();
        } catch (IllegalStateException ex) {
            // The job left READY/STANDBY between the check and the call (it only moves on from there).
            throw verbError(e.job, e.job.status(), "complete");
        }
    }

    void dismiss(String id) throws QmpException {
        BlockJob j = find(id).job;
        applyVerb(j, "dismiss");
        j.dismiss();
    }

    // ------------------------------------------------------------------------------------------ queries

    /** query-jobs: JobInfo. */
    ArrayNode queryJobs() {
        ArrayNode out = Json.array();
        for (BlockJob j : visible()) {
            ObjectNode x = out.addObject();
            x.put("id", j.id());
            x.put("type", j.type());
            x.put("status", j.status().qapiName());
            x.put("current-progress", j.progressCurrent());
            x.put("total-progress", j.progressTotal());
            String err = error(j);
            if (err != null) x.put("error", err);
        }
        return out;
    }

    /** query-block-jobs: BlockJobInfo (no rate limit, no I/O status tracking: speed 0, io-status ok). */
    ArrayNode queryBlockJobs() {
        ArrayNode out = Json.array();
        for (BlockJob j : visible()) {
            JobStatus s = j.status();
            ObjectNode x = out.addObject();
            x.put("type", j.type());
            x.put("device", j.id());
            x.put("len", j.progressTotal());
            x.put("offset", j.progressCurrent());
            x.put("busy", j.isBusy());
            x.put("paused", j.isPaused());
            x.put("speed", 0);
            x.put("io-status", "ok");
            x.put("ready", s == JobStatus.READY || s == JobStatus.STANDBY);
            x.put("status", s.qapiName());
            x.put("auto-finalize", true);
            x.put("auto-dismiss", autoDismiss(j));
            String err = error(j);
            if (err != null) x.put("error", err);
        }
        return out;
    }

    private boolean autoDismiss(BlockJob j) {
        Entry e = entries.get(j.id());
        return e != null && e.job == j && e.autoDismiss;
    }

    /** The job's error as QEMU reports it: its failure, or strerror(ECANCELED) once a cancelled job concluded. */
    private String error(BlockJob j) {
        if (j.error() != null) return j.error();
        Entry e = entries.get(j.id());
        return e != null && e.job == j && e.cancelled ? "Operation canceled" : null;
    }

    // ------------------------------------------------------------------------------------------- events

    private void statusChange(BlockJob j, JobStatus s) {
        ObjectNode d = Json.object();
        d.put("id", j.id());
        d.put("status", s.qapiName());
        emit.accept("JOB_STATUS_CHANGE", d);
    }

    private void blockJobEvent(String event, BlockJob j, String error) {
        ObjectNode d = Json.object();
        d.put("type", j.type());
        d.put("device", j.id());
        d.put("len", j.progressTotal());
        d.put("offset", j.progressCurrent());
        d.put("speed", 0);
        if (error != null) d.put("error", error);
        emit.accept(event, d);
    }

    /**
     * One job's events, on the job's thread. The block layer reports CONCLUDED before the completed/cancelled
     * callback; QEMU sends BLOCK_JOB_COMPLETED / BLOCK_JOB_CANCELLED first and then JOB_STATUS_CHANGE "concluded",
     * so "concluded" waits for that callback here.
     */
    private final class Events implements JobListener {
        private final Entry e;
        private boolean finalEventSent;
        private boolean concludedHeld;

        Events(Entry e) {
            this.e = e;
        }

        @Override
        public void statusChanged(BlockJob job, JobStatus status) {
            if (status == JobStatus.CONCLUDED && !finalEventSent) {
                concludedHeld = true;
                return;
            }
            statusChange(job, status);
            if (status == JobStatus.NULL) retire(e);
        }

        @Override
        public void ready(BlockJob job) {
            blockJobEvent("BLOCK_JOB_READY", job, null);
        }

        @Override
        public void completed(BlockJob job, String error) {
            blockJobEvent("BLOCK_JOB_COMPLETED", job, error);
            finished(job);
        }

        @Override
        public void cancelled(BlockJob job) {
            e.cancelled = true;
            blockJobEvent("BLOCK_JOB_CANCELLED", job, null);
            finished(job);
        }

        private void finished(BlockJob job) {
            finalEventSent = true;
            if (concludedHeld) {
                concludedHeld = false;
                statusChange(job, JobStatus.CONCLUDED);
            }
        }
    }

    /** The job reached NULL (job thread): forget it and end its thread. */
    private void retire(Entry e) {
        try {
            mainLoop.execute(() -> {
                entries.remove(e.job.id(), e);
                closeLater(e.ctx);
            });
        } catch (RejectedExecutionException ex) {
            // the daemon is closing: close() ends the context
        }
    }

    /** Closes a context from a management thread (never from its own thread, which close() would wait for). */
    private void closeLater(AioContext ctx) {
        try {
            mgmt.execute(() -> quietlyClose(ctx));
        } catch (RejectedExecutionException ex) {
            quietlyClose(ctx);
        }
    }

    private static void quietlyClose(AioContext ctx) {
        try {
            ctx.close();
        } catch (RuntimeException ex) {
            LOG.log(Level.WARNING, "closing " + ctx.name() + " failed", ex);
        }
    }

    // -------------------------------------------------------------------------------------------- close

    /** The jobs now (main loop), for {@link #close}. */
    List<Entry> snapshot() {
        return List.copyOf(entries.values());
    }

    /**
     * Daemon shutdown (any thread but the jobs'): cancels every job, waits (bounded) for each to conclude, then
     * ends their threads. A job that is completing finishes its completion first.
     */
    static void close(List<Entry> all, long timeout, TimeUnit unit) {
        for (Entry e : all) e.job.cancel();
        long deadline = System.nanoTime() + unit.toNanos(timeout);
        for (Entry e : all) {
            try {
                e.job.finished().get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            } catch (TimeoutException ex) {
                LOG.warning("job " + e.job.id() + " did not end within " + timeout + " " + unit + " (status "
                        + e.job.status().qapiName() + ")");
            } catch (InterruptedException ex) {
                Thread.currentThread().interrupt();
                break;
            } catch (java.util.concurrent.ExecutionException ex) {
                LOG.log(Level.WARNING, "job " + e.job.id() + " failed", ex.getCause());
            }
        }
        for (Entry e : all) quietlyClose(e.ctx);
    }
}
