package io.jvhost.vhostuser;

/** A front-end message we refuse: answered with a failure ack where the protocol allows, else disconnect. */
class ProtocolException extends Exception {
    ProtocolException(String message) {
        super(message);
    }
}
