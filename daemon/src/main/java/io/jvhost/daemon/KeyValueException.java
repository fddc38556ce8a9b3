package io.jvhost.daemon;

/** A malformed or invalid {@code key=value,...} option argument; the message is meant for the user. */
public final class KeyValueException extends Exception {
    private static final long serialVersionUID = 1L;

    public KeyValueException(String message) {
        super(message);
    }
}
