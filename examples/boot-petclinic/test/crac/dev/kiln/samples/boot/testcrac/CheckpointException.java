package dev.kiln.samples.boot.testcrac;

public class CheckpointException extends Exception {
    public CheckpointException(String message, Throwable cause) { super(message, cause); }
}
