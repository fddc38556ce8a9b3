package io.jvhost.block;

/**
 * Completion of a block request. Runs in the AioContext that submitted the request (or in a block-layer worker
 * thread when the submitter was a plain thread), never inside the submitting call itself.
 */
@FunctionalInterface
public interface BlockCompletion {
    /** @param ret 0 on success, a negative errno on failure */
    void complete(int ret);
}
