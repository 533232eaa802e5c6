package dev.kiln.samples.boot.testcrac;

public class RestoreException extends Exception {
    public RestoreException(String message, Throwable cause) { super(message, cause); }
}
