package io.jvhost.virtqueue;

/** A guest-physical (or front-end virtual) address range that is not backed by a mapped region. */
public class InvalidGuestAddressException extends Exception {
    private static final long serialVersionUID = 1L;

    public InvalidGuestAddressException(String message) {
        super(message);
    }

    public InvalidGuestAddressException(String message, Throwable cause) {
        super(message, cause);
    }

    static InvalidGuestAddressException of(String what, long addr, long len) {
        return new InvalidGuestAddressException(what + " [0x" + Long.toHexString(addr) + ", +" + Long.toUnsignedString(len) + ")");
    }
}
