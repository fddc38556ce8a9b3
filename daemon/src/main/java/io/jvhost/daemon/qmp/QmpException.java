package io.jvhost.daemon.qmp;

/** A QMP error reply: {@code {"error": {"class": errorClass(), "desc": getMessage()}}}. */
public final class QmpException extends Exception {
    private static final long serialVersionUID = 1L;

    public static final String GENERIC_ERROR = "GenericError";
    public static final String COMMAND_NOT_FOUND = "CommandNotFound";

    private final String errorClass;

    /** A GenericError, the class of nearly every QEMU error. */
    public QmpException(String desc) {
        this(GENERIC_ERROR, desc);
    }

    public QmpException(String errorClass, String desc) {
        super(desc);
        this.errorClass = errorClass;
    }

    public String errorClass() {
        return errorClass;
    }
}
