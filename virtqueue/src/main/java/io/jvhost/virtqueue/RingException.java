package io.jvhost.virtqueue;

/** The driver put something malformed in the ring: the device must stop using this queue (NEEDS_RESET). */
public class RingException extends Exception {
    private static final long serialVersionUID = 1L;

    public RingException(String message) {
        super(message);
    }

    public RingException(String message, Throwable cause) {
        super(message, cause);
    }
}
