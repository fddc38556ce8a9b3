package io.jvhost.block;

/** A node could not be created or opened; the message names the offending option ("blockdev: ..."). */
public class BlockException extends Exception {
    private static final long serialVersionUID = 1L;

    public BlockException(String message) {
        super(message);
    }

    public BlockException(String message, Throwable cause) {
        super(message, cause);
    }
}
