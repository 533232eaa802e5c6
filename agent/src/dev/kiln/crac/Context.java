package dev.kiln.crac;

/**
 * A group of resources notified together. A context is itself a {@link Resource}, so contexts
 * nest: registering a context in another one notifies its resources at the parent's turn.
 */
public abstract class Context<R extends Resource> implements Resource {
    protected Context() {
    }

    @Override
    public abstract void beforeCheckpoint(Context<? extends Resource> context) throws CheckpointException;

    @Override
    public abstract void afterRestore(Context<? extends Resource> context) throws RestoreException;

    /** Registers a resource; the context keeps only a weak reference to it. */
    public abstract void register(R resource);

    /** The global context (same as {@link Core#getGlobalContext()}). */
    public static Context<Resource> getGlobalContext() {
        return Core.getGlobalContext();
    }
}
