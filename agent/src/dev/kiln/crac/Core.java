package dev.kiln.crac;

/**
 * The backend org.crac 1.5.0 dispatches to when {@code -Dorg.crac.Core.Compat=dev.kiln.crac}
 * (the agent sets it). org.crac needs exactly: {@code Core.getGlobalContext()},
 * {@code Core.checkpointRestore()}, {@code Context.register(Resource)}, and the two exceptions.
 */
public final class Core {
    private static final OrderedContext<Resource> GLOBAL = new OrderedContext<>("global");

    private Core() {
    }

    public static Context<Resource> getGlobalContext() {
        return GLOBAL;
    }

    static OrderedContext<Resource> global() {
        return GLOBAL;
    }

    /**
     * Asks kiln for a checkpoint and returns in the restored copy once its afterRestore callbacks
     * ran (RestoreException if some failed). CheckpointException when beforeCheckpoint failed or
     * the dump failed (the callbacks' afterRestore then ran in this, the original, process), or
     * when no agent control directory is configured (then no callback runs).
     */
    public static void checkpointRestore() throws CheckpointException, RestoreException {
        Coordinator c = Coordinator.get();
        if (c == null) {
            CheckpointException ce = new CheckpointException();
            ce.addSuppressed(new UnsupportedOperationException(
                "kiln's agent has no control directory (-Dkiln.agent.dir): checkpoint not possible"));
            throw ce;
        }
        c.checkpointRestore(true);
    }
}
