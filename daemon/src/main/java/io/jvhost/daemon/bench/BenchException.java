package io.jvhost.daemon.bench;

import java.io.IOException;

/** The back-end (or the setup) failed the run: protocol error, error status, timeout. The message is for the user. */
public class BenchException extends IOException {
    public BenchException(String msg) {
        super(msg);
    }

    public BenchException(String msg, Throwable cause) {
        super(msg, cause);
    }
}
