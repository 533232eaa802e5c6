package dev.kiln.samples.petclinic.service;

/** A requested entity does not exist; the web layer turns it into a 404. */
public class NotFoundException extends RuntimeException {

    public NotFoundException(String message) {
        super(message);
    }
}
