package dev.kiln.crac;

import java.util.function.Supplier;

/**
 * Collects the failures of one phase into one exception of type {@code E}, as suppressed
 * exceptions. An exception of the same class (a nested context's own CheckpointException or
 * RestoreException) is flattened: its suppressed exceptions are taken over, so the caller sees
 * one flat list, as the CRaC JDK does.
 */
final class Failures<E extends Exception> {
    // One call site each, linked once: a method reference at every use would be bootstrapped
    // where it first runs, which for the afterRestore paths is in a restored copy.
    static final Supplier<CheckpointException> CHECKPOINT = CheckpointException::new;
    static final Supplier<RestoreException> RESTORE = RestoreException::new;

    private final Supplier<E> factory;
    private E exception;

    Failures(Supplier<E> factory) {
        this.factory = factory;
    }

    E get() {
        if (exception == null) {
            exception = factory.get();
        }
        return exception;
    }

    boolean any() {
        return exception != null;
    }

    void add(Throwable t) {
        if (t == null) {
            return;
        }
        E e = get();
        if (t.getClass() == e.getClass()) {
            takeSuppressed(t);
        } else {
            if (t instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            e.addSuppressed(t);
        }
    }

    void takeSuppressed(Throwable t) {
        E e = get();
        for (Throwable s : t.getSuppressed()) {
            e.addSuppressed(s);
        }
    }

    void throwIfAny() throws E {
        if (exception != null) {
            throw exception;
        }
    }
}
