package dev.kiln.crac;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.management.CompilationMXBean;
import java.lang.management.ManagementFactory;
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
        c.startWakeReader();
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

    /**
     * Reads the wake FIFO kiln made in the control directory, on a thread of its own: every byte
     * kiln writes is a signal, delivered in tens of microseconds. The JDK runs a signal's Java
     * handler on a new thread per signal, which took 1.2-2.7 ms in a just-thawed copy. The FIFO
     * is opened read-write: the open does not wait for a writer, and a copy's CRIU opens it again
     * by its path (kiln makes it in each copy's control directory before the restore). No FIFO
     * (an older kiln): signals only.
     */
    private void startWakeReader() {
        File fifo = dir.dir.resolve(ControlDir.WAKE).toFile();
        if (!fifo.exists() || fifo.isFile() || "signal".equals(System.getProperty("kiln.agent.wake"))) { // signal: diagnosis only
            return;
        }
        final RandomAccessFile in;
        try {
            in = new RandomAccessFile(fifo, "rw");
        } catch (IOException e) {
            Log.warn("cannot open the wake FIFO, signals only: " + e);
            return;
        }
        Thread reader = new Thread(() -> {
            byte[] bytes = new byte[64];
            while (true) {
                int n;
                try {
                    n = in.read(bytes);
                } catch (IOException e) {
                    Log.warn("wake FIFO: " + e + "; signals only from now on");
                    return;
                }
                if (n < 0) {
                    return;
                }
                onSignal();
            }
        }, "kiln-crac-wake");
        reader.setDaemon(true);
        reader.start();
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
                } else if (dir.remove(ControlDir.TRIM_REQUEST)) {
                    trimNativeHeap();
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
        Failures<CheckpointException> checkpointFailures = new Failures<>(Failures.CHECKPOINT);
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
        // In the snapshot, so a copy's trim.request loads and links nothing.
        NativeHeap.prepare();
        // The last thing before the dump: the copies' restore path, rehearsed in the state the
        // copies will have (the random generators the application has created by now, ...).
        rehearseRestore();
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
        Failures<RestoreException> restoreFailures = finishRestore(request, global, restoreStart, System.nanoTime(), resources,
            RESTORE_FILES);
        String dumpError = request.get("checkpoint.error");
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

    /**
     * The control files of one run of the restore path: the request it reads, the files of the
     * checkpoint before it, and its two possible results. A restore removes all five before it
     * writes one result: a copy's directory then holds only what this restore wrote.
     */
    private record RestoreFiles(String request, String appRequest, String ready, String done, String failed) {
        List<String> all() {
            return List.of(request, appRequest, ready, done, failed);
        }
    }

    private static final RestoreFiles RESTORE_FILES = new RestoreFiles(ControlDir.RESTORE_REQUEST,
        ControlDir.CHECKPOINT_APP_REQUEST, ControlDir.CHECKPOINT_READY, ControlDir.RESTORE_DONE, ControlDir.RESTORE_FAILED);
    /** The same for the rehearsal: hidden names, which kiln never reads. */
    private static final RestoreFiles REHEARSAL_FILES = new RestoreFiles(".rehearsal.request", ".rehearsal.app-request",
        ".rehearsal.ready", ".rehearsal.done", ".rehearsal.failed");

    /**
     * Everything a copy does between reading restore.request and writing its result: removes the
     * consumed files, refreshes the identity, runs {@code context}'s afterRestore callbacks and
     * writes restore.done (or restore.failed). {@code restoreStart}: when the signal arrived;
     * {@code requestRead}: when the request was read. {@code files}: RESTORE_FILES, or REHEARSAL_FILES.
     */
    private Failures<RestoreException> finishRestore(Map<String, String> request, OrderedContext<Resource> context,
        long restoreStart, long requestRead, int resources, RestoreFiles files) {
        for (String consumed : files.all()) {
            dir.remove(consumed);
        }
        List<String> warnings = Identity.apply(request);
        long identityNanos = System.nanoTime();
        Failures<RestoreException> failures = new Failures<>(Failures.RESTORE);
        try {
            context.afterRestore(null);
        } catch (RestoreException e) {
            failures.takeSuppressed(e);
        } catch (Throwable t) {
            failures.add(t);
        }
        Map<String, Object> done = new LinkedHashMap<>();
        done.put("pid", ProcessHandle.current().pid());
        done.put("instance", System.getProperty("kiln.instance", ""));
        done.put("resources", resources);
        done.put("elapsed_us", (System.nanoTime() - restoreStart) / 1000);
        done.put("identity_us", (identityNanos - restoreStart) / 1000);
        done.put("request_us", (requestRead - restoreStart) / 1000);
        done.put("signal_ns", restoreStart); // CLOCK_MONOTONIC, as kiln's clock: kiln tells the delivery time
        done.put("trim", NativeHeap.prepare() ? 1 : 0); // trim.request is answered
        for (int i = 0; i < warnings.size(); i++) {
            done.put("warning." + (i + 1), warnings.get(i));
        }
        if (failures.any()) {
            writeQuietly(files.failed(), Json.failure("afterRestore", failures.get()));
        } else {
            writeQuietly(files.done(), ControlDir.properties(done));
        }
        return failures;
    }

    /** Rounds of the restore path a JVM rehearses over its checkpoints (kiln.agent.rehearsals). */
    private static final int REHEARSAL_ROUNDS = Integer.getInteger("kiln.agent.rehearsals", 3000);
    /** At most this long per checkpoint, however many rounds are left. */
    private static final long REHEARSAL_BUDGET_NANOS = 1_500_000_000L;
    /** How long the JIT must have compiled nothing before the dump, and how long to wait for it at most. */
    private static final long COMPILER_QUIET_NANOS = 50_000_000L;
    private static final long COMPILER_WAIT_NANOS = 1_000_000_000L;
    private int rehearsalRounds;

    /**
     * Waits (at most {@link #COMPILER_WAIT_NANOS}) until the JIT has compiled nothing for
     * {@link #COMPILER_QUIET_NANOS}, and returns how long that took. A compilation in progress
     * at the dump would go on in every copy, on the CPU its restore and first requests need (a
     * profile of a thaw showed C2 on a fifth of the copy's CPU time).
     */
    private static long awaitQuietCompiler() {
        long start = System.nanoTime();
        CompilationMXBean compiler;
        try {
            compiler = ManagementFactory.getCompilationMXBean();
        } catch (LinkageError e) { // a runtime image without java.management
            return 0;
        }
        if (compiler == null || !compiler.isCompilationTimeMonitoringSupported()) {
            return 0;
        }
        long last = compiler.getTotalCompilationTime();
        long quietSince = System.nanoTime();
        while (System.nanoTime() - start < COMPILER_WAIT_NANOS) {
            try {
                Thread.sleep(5);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
            long now = compiler.getTotalCompilationTime();
            if (now != last) {
                last = now;
                quietSince = System.nanoTime();
            } else if (System.nanoTime() - quietSince >= COMPILER_QUIET_NANOS) {
                break;
            }
        }
        return System.nanoTime() - start;
    }

    /**
     * Runs the restore path just before the dump, on an empty context of its own and with hidden
     * file names, up to {@link #REHEARSAL_ROUNDS} times (then waits until the JIT is quiet): in a
     * restored copy every method, class and call site of that path has run, and compiled, already,
     * in the state the copy starts from. Code a JVM runs for the first time pays for
     * loading, linking and resolving it: a copy paid that on its restore path (the agent's part
     * was ~6 ms of which ~5 ms such first runs, in copies of hello-jdk; a second run takes <1 ms).
     * Sets no identity; what it empties (the DNS cache, the cached local host) should be empty in
     * a snapshot anyway, and reseeding is always safe; its files are removed.
     */
    private void rehearseRestore() {
        long t0 = System.nanoTime();
        try {
            OrderedContext<Resource> empty = new OrderedContext<>("rehearsal");
            empty.beforeCheckpoint(null);
            // The kernel's own hostname: the local host step reads it and, as it matches, pins nothing.
            String hostname = Files.readString(Path.of("/proc/sys/kernel/hostname")).strip();
            String before = System.getProperty("kiln.hostname");
            // Many rounds, not one: the JIT compiles what runs often, and this path runs once in
            // each copy. Interpreted, the agent's part of a copy's afterRestore took ~4 ms (hello-jdk
            // standby copies); after 3,000 rounds here ~1.3 ms. A JVM checkpointed again (the bake's
            // own rehearsal, then the real checkpoint) runs the rounds it has left.
            int rounds = Math.max(1, REHEARSAL_ROUNDS - rehearsalRounds);
            long deadline = t0 + REHEARSAL_BUDGET_NANOS;
            Failures<RestoreException> failures = null;
            for (int i = 0; i < rounds && (i == 0 || System.nanoTime() < deadline); i++) {
                dir.write(REHEARSAL_FILES.request(), ControlDir.properties(Map.of("hostname", hostname)));
                Map<String, String> request = dir.readProperties(REHEARSAL_FILES.request());
                failures = finishRestore(request, empty, t0, System.nanoTime(), 0, REHEARSAL_FILES);
                rehearsalRounds++;
            }
            if (before == null) {
                System.clearProperty("kiln.hostname");
            }
            Json.failure("rehearsal", new RestoreException()); // the restore.failed path's JSON
            dir.remove(REHEARSAL_FILES.done());
            dir.remove(REHEARSAL_FILES.failed());
            long rehearsed = System.nanoTime();
            long compiling = awaitQuietCompiler();
            Log.debug("restore rehearsal: " + (rehearsed - t0) / 1000 + " us (" + rehearsalRounds + " rounds so far), compiler quiet after "
                + compiling / 1000 + " us, failures " + failures.any());
        } catch (Throwable t) {
            Log.debug("restore rehearsal: " + t);
        }
    }

    /** kiln's trim.request: the JVM's free malloc memory back to the kernel; the result in trim.done. */
    private void trimNativeHeap() {
        long start = System.nanoTime();
        Map<String, Object> done = new LinkedHashMap<>();
        try {
            done.put("result", NativeHeap.trim());
        } catch (Throwable t) {
            done.put("error", String.valueOf(t));
        }
        done.put("elapsed_us", (System.nanoTime() - start) / 1000);
        writeQuietly(ControlDir.TRIM_DONE, ControlDir.properties(done));
    }

    private void writeQuietly(String name, String content) {
        try {
            dir.write(name, content);
        } catch (IOException e) {
            Log.warn("cannot write " + name + ": " + e);
        }
    }
}
