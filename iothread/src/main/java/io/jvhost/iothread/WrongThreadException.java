package io.jvhost.iothread;

/** A handler was about to run in a thread that does not own it (the seed forbids it). */
public final class WrongThreadException extends IllegalStateException {
    public WrongThreadException(String message) {
        super(message);
    }
}
