package io.jvhost.vhostuser.frontend;

import java.io.IOException;

/** A protocol-level failure seen by the test front-end: a NACK, a malformed reply, or a closed connection. */
public class VhostUserException extends IOException {
    private static final long serialVersionUID = 1L;
    private final long ackValue;

    public VhostUserException(String message) {
        this(message, 0);
    }

    public VhostUserException(String message, long ackValue) {
        super(message);
        this.ackValue = ackValue;
    }

    /** The non-zero REPLY_ACK value when this exception reports a NACK, else 0. */
    public long ackValue() {
        return ackValue;
    }
}
