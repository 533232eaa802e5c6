package dev.kiln.crac;

/** The process was restored but some afterRestore callbacks failed (suppressed exceptions). */
public class RestoreException extends Exception {
    private static final long serialVersionUID = 1L;

    public RestoreException() {
        super();
    }

    public RestoreException(String message) {
        super(message);
    }
}
