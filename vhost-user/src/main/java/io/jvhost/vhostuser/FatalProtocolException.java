package io.jvhost.vhostuser;

/** A front-end error after which the connection cannot continue (framing lost, message with no error path). */
final class FatalProtocolException extends ProtocolException {
    FatalProtocolException(String message) {
        super(message);
    }
}
