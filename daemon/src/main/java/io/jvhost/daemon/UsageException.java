package io.jvhost.daemon;

/** A command-line error: {@link #getMessage()} is the one line printed on stderr (without the "jvhost: " prefix). */
public final class UsageException extends Exception {
    private static final long serialVersionUID = 1L;

    private final String detail;

    /** An error in the argument of {@code option} (e.g. "--export"), or of the command line when it is null. */
    public UsageException(String option, String message) {
        super(option == null ? message : option + ": " + message);
        this.detail = message;
    }

    /** The message without the option, for QMP, where the same checks answer a command instead. */
    public String detail() {
        return detail;
    }
}
