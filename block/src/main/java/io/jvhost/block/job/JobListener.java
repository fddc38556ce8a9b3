package io.jvhost.block.job;

/**
 * Observer of block jobs; the management interface turns these into QMP events (JOB_STATUS_CHANGE,
 * BLOCK_JOB_READY, BLOCK_JOB_COMPLETED, BLOCK_JOB_CANCELLED). Called on the job's AioContext thread, in order;
 * implementations must not block.
 */
public interface JobListener {
    /** JOB_STATUS_CHANGE: the job entered {@code status}. */
    default void statusChanged(BlockJob job, JobStatus status) {}

    /** BLOCK_JOB_READY: the job may be completed now. */
    default void ready(BlockJob job) {}

    /** BLOCK_JOB_COMPLETED: the job finished; {@code error} is null on success. */
    default void completed(BlockJob job, String error) {}

    /** BLOCK_JOB_CANCELLED. */
    default void cancelled(BlockJob job) {}
}
