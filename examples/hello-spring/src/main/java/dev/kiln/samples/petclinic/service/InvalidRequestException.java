package dev.kiln.samples.petclinic.service;

/** Input that the service refuses (missing field, unknown pet type...); the web layer answers 400. */
public class InvalidRequestException extends RuntimeException {

    public InvalidRequestException(String message) {
        super(message);
    }
}
