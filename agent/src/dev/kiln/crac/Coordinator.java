package dev.kiln.crac;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Runs checkpoints for kiln (PROTOCOL.md). One thread runs both phases of one checkpoint: the
 * coordinator thread when kiln asks (checkpoint.request + signal), the application's own thread
 * when it calls Core.checkpointRestore(). Between the phases that thread is parked until kiln's
 * next signal finds restore.request; nothing polls.
 */
final class Coordinator {
    static final String SIGNAL = "WINCH";
    static final int PROTOCOL = 1;

    private static volatile Coordinator instance;

    final ControlDir dir;
    private final Object signals = new Object();
    private long signalCount;
    private long lastSignalNanos;
    private final ReentrantLock cycle = new ReentrantLock();
    private volatile boolean cycleActive;
    private Thread thread;

    private Coordinator(Path dir) {
        this.dir = new ControlDir(dir);
    }

    static Coordinator get() {
        return instance;
    }

    /** Starts the coordinator on {@code dir}: installs the signal handler, writes agent.ready. */
    static synchronized Coordinator start(Path dir) throws IOException {
        if (instance != null) {
            return instance;
        }
        Files.createDirectories(dir);
        Coordinator c = new Coordinator(dir);
        // An earlier handler (a terminal library's, for resizes) keeps being called.
        sun.misc.SignalHandler[] previous = new sun.misc.SignalHandler[1];
        previous[0] = sun.misc.Signal.handle(new sun.misc.Signal(SIGNAL), s -> {
            c.onSignal();
            sun.misc.SignalHandler p = previous[0];
            if (p != null && p != sun.misc.SignalHandler.SIG_DFL && p != sun.misc.SignalHandler.SIG_IGN) {
                p.handle(s);
            }
        });
        c.thread = new Thread(c::loop, "kiln-crac-coordinator");
        c.thread.setDaemon(true);
        instance = c;
        c.thread.start();
        Map<String, Object> ready = new LinkedHashMap<>();
        ready.put("protocol", PROTOCOL);
        ready.put("pid", ProcessHandle.current().pid());
        ready.put("signal", "SIG" + SIGNAL);
        ready.put("java.version", System.getProperty("java.version"));
        ready.put("compat", System.getProperty("org.crac.Core.Compat", ""));
        c.dir.write(ControlDir.AGENT_READY, ControlDir.properties(ready));
        return c;
    }

    private void onSignal() {
        synchronized (signals) {
            signalCount++;
            lastSignalNanos = System.nanoTime();
            signals.notifyAll();
        }
    }

    /** Parks until a signal newer than {@code seen} arrives; returns the new count. */
    private long awaitSignal(long seen) throws InterruptedException {
        synchronized (signals) {
            while (signalCount == seen) {
                signals.wait();
            }
            return signalCount;
        }
    }

    private long signalCount() {
        synchronized (signals) {
            return signalCount;
        }
    }

    private long lastSignalNanos() {
        synchronized (signals) {
            return lastSignalNanos;
        }
    }

    private void loop() {
        long seen = 0;
        Identity.warmUp();
        // A request written before the handler was installed is taken without a signal.
        boolean first = true;
        while (true) {
            try {
                if (!first) {
                    seen = awaitSignal(seen);
                }
                first = false;
                if (cycleActive) {
                    continue; // the thread running the checkpoint takes this signal
                }
                if (dir.remove(ControlDir.CHECKPOINT_REQUEST)) {
                    try {
                        checkpointRestore(false);
                    } catch (CheckpointException | RestoreException e) {
                        Log.debug("kiln checkpoint: " + e + " " + List.of(e.getSuppressed()));
                    }
                } else if (dir.exists(ControlDir.RESTORE_REQUEST) && !cycleActive) {
                    Log.warn("restore.request without a checkpoint in progress: ignored");
                }
            } catch (InterruptedException e) {
                return;
            } catch (Throwable t) {
                Log.warn("coordinator: " + t);
            }
        }
    }

    /**
     * One checkpoint, both phases on the calling thread. {@code app}: asked for by the application
     * (Core.checkpointRestore) rather than by kiln's checkpoint.request.
     */
    void checkpointRestore(boolean app) throws CheckpointException, RestoreException {
        if (cycle.isHeldByCurrentThread()) {
            CheckpointException ce = new CheckpointException();
            ce.addSuppressed(new IllegalStateException("Recursive checkpoint is not allowed"));
            throw ce;
        }
        cycle.lock();
        try {
            cycleActive = true;
            runCycle(app);
        } finally {
            cycleActive = false;
            cycle.unlock();
        }
    }

    private void runCycle(boolean app) throws CheckpointException, RestoreException {
        long start = app ? System.nanoTime() : lastSignalNanos();
        // Results of an earlier cycle go (kiln also removes a result before it asks again).
        dir.remove(ControlDir.CHECKPOINT_READY);
        dir.remove(ControlDir.CHECKPOINT_FAILED);
        dir.remove(ControlDir.IO_STACKS);
        long seen = signalCount();
        if (app) {
            Map<String, Object> req = new LinkedHashMap<>();
            req.put("thread", Thread.currentThread().getName());
            req.put("pid", ProcessHandle.current().pid());
            writeQuietly(ControlDir.CHECKPOINT_APP_REQUEST, ControlDir.properties(req));
        }
        OrderedContext<Resource> global = Core.global();
        int resources = global.size();
        Failures<CheckpointException> checkpointFailures = new Failures<>(CheckpointException::new);
        try {
            global.beforeCheckpoint(null);
        } catch (CheckpointException e) {
            checkpointFailures.takeSuppressed(e);
        } catch (Throwable t) {
            checkpointFailures.add(t);
        }
        if (checkpointFailures.any()) {
            // No dump: the original goes on, after its afterRestore callbacks.
            try {
                global.afterRestore(null);
            } catch (RestoreException e) {
                checkpointFailures.takeSuppressed(e);
            } catch (Throwable t) {
                checkpointFailures.add(t);
            }
            writeQuietly(ControlDir.CHECKPOINT_FAILED, Json.failure("beforeCheckpoint", checkpointFailures.get()));
            dir.remove(ControlDir.CHECKPOINT_APP_REQUEST);
            throw checkpointFailures.get();
        }
        if (IoStacks.active()) {
            // Before checkpoint.ready, so kiln's preflight finds it: the stacks of the sockets and
            // files still open after every beforeCheckpoint (kiln bake --preflight only).
            try {
                writeQuietly(ControlDir.IO_STACKS, IoStacks.collect());
            } catch (Throwable t) {
                Log.warn("io-stacks: " + t);
            }
        }
        Map<String, Object> ready = new LinkedHashMap<>();
        ready.put("pid", ProcessHandle.current().pid());
        ready.put("resources", resources);
        ready.put("elapsed_us", (System.nanoTime() - start) / 1000);
        writeQuietly(ControlDir.CHECKPOINT_READY, ControlDir.properties(ready));
        Log.debug("checkpoint ready (" + resources + " resources), waiting for restore.request");

        // kiln dumps the process now. Park until a signal finds restore.request: in a restored
        // copy, or in the original when the dump failed.
        Map<String, String> request;
        boolean interrupted = false;
        while (true) {
            try {
                seen = awaitSignal(seen);
            } catch (InterruptedException e) {
                // The thread must come back after the restore: keep waiting, restore the flag after.
                interrupted = true;
                continue;
            }
            try {
                request = dir.readProperties(ControlDir.RESTORE_REQUEST);
            } catch (IOException e) {
                Log.warn("cannot read restore.request: " + e);
                request = null;
            }
            if (request != null) {
                break;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        long restoreStart = lastSignalNanos();
        // After a restore only its own result is in the directory.
        for (String consumed : new String[] {ControlDir.RESTORE_REQUEST, ControlDir.CHECKPOINT_APP_REQUEST,
            ControlDir.CHECKPOINT_READY, ControlDir.RESTORE_DONE, ControlDir.RESTORE_FAILED}) {
            dir.remove(consumed);
        }
        List<String> warnings = Identity.apply(request);
        long identityNanos = System.nanoTime();
        Failures<RestoreException> restoreFailures = new Failures<>(RestoreException::new);
        try {
            global.afterRestore(null);
        } catch (RestoreException e) {
            restoreFailures.takeSuppressed(e);
        } catch (Throwable t) {
            restoreFailures.add(t);
        }
        String dumpError = request.get("checkpoint.error");
        Map<String, Object> done = new LinkedHashMap<>();
        done.put("pid", ProcessHandle.current().pid());
        done.put("instance", System.getProperty("kiln.instance", ""));
        done.put("resources", resources);
        done.put("elapsed_us", (System.nanoTime() - restoreStart) / 1000);
        done.put("identity_us", (identityNanos - restoreStart) / 1000);
        for (int i = 0; i < warnings.size(); i++) {
            done.put("warning." + (i + 1), warnings.get(i));
        }
        if (restoreFailures.any()) {
            writeQuietly(ControlDir.RESTORE_FAILED, Json.failure("afterRestore", restoreFailures.get()));
        } else {
            writeQuietly(ControlDir.RESTORE_DONE, ControlDir.properties(done));
        }
        if (dumpError != null) {
            // The dump failed: this is the original, and the caller learns it as CRaC tells it.
            checkpointFailures.add(new RuntimeException("checkpoint failed: " + dumpError));
            if (restoreFailures.any()) {
                checkpointFailures.takeSuppressed(restoreFailures.get());
            }
            throw checkpointFailures.get();
        }
        restoreFailures.throwIfAny();
    }

    private void writeQuietly(String name, String content) {
        try {
            dir.write(name, content);
        } catch (IOException e) {
            Log.warn("cannot write " + name + ": " + e);
        }
    }
}
