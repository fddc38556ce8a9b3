package io.jvhost.block;

/**
 * A user of a node through a {@link BdrvChild} edge (QEMU's BdrvChildClass): a {@link BlockBackend}, a parent
 * node, or a block job. Drain talks to parents through these callbacks (phase 3 and 5 of the seed's drain).
 *
 * <p>The callbacks run on the draining thread with the block graph lock held. They must not block; they are
 * counted (one begin per edge whose child became quiesced, matched by one end), and may nest.
 */
public interface BlockParent {
    /** For messages: "backend of 'disk0'", "node 'raw0'", "job 'm0'". */
    String parentName();

    /** The child behind {@code c} became quiesced: stop issuing new requests through it at a safe point. */
    default void childDrainedBegin(BdrvChild c) {}

    /** The child behind {@code c} is no longer quiesced: resume. */
    default void childDrainedEnd(BdrvChild c) {}

    /**
     * Drain phase 4 keeps waiting while this returns true: the parent still has work in progress that may issue
     * requests to the drained nodes (a job's copy operation, a backend's requests in flight). Any thread; must
     * only read state (it is called under the wait lock).
     */
    default boolean childDrainedPoll(BdrvChild c) {
        return false;
    }

    /** The child behind {@code c} changed its length; called after the drained section, graph lock not held. */
    default void childResized(BdrvChild c) {}
}
