package dev.kiln.crac;

/**
 * A checkpoint/restore participant, the backend side of {@code org.crac.Resource}.
 * org.crac 1.5.0 hands every application resource to {@link Context#register} wrapped in a
 * {@code java.lang.reflect.Proxy} that implements this interface.
 */
public interface Resource {
    /** Called before the checkpoint; an exception aborts the checkpoint (no dump). */
    void beforeCheckpoint(Context<? extends Resource> context) throws Exception;

    /** Called after the restore, or in the original process when the checkpoint did not happen. */
    void afterRestore(Context<? extends Resource> context) throws Exception;
}
