package dev.kiln.crac;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Objects;

/**
 * The context kiln uses for the global context and offers for nested ones.
 *
 * <ul>
 * <li>Resources are held weakly: a resource that only this context references is collected and
 *     never notified (org.crac's proxy lives exactly as long as the application's resource).
 *     Entries are compared by identity: org.crac's proxy forwards hashCode/equals to a resource
 *     that may already be gone.</li>
 * <li>{@code beforeCheckpoint} runs in reverse order of registration, {@code afterRestore} in
 *     order of registration, each for the resources whose {@code beforeCheckpoint} ran (even if it
 *     threw). Every callback runs even when an earlier one failed; failures are suppressed
 *     exceptions of one CheckpointException / RestoreException.</li>
 * <li>From the start of {@code beforeCheckpoint} until {@code afterRestore} starts, a registration
 *     from any other thread waits (as CRaC's BlockingOrderedContext). A registration from the
 *     thread running the checkpoint (from within a callback) does not wait: the resource is
 *     recorded and takes part from the next checkpoint on, neither in this beforeCheckpoint nor in
 *     this afterRestore (as CRaC's OrderedContext, whose snapshot is taken when the phase starts).</li>
 * <li>The resources notified in beforeCheckpoint are held strongly until afterRestore, so a
 *     resource cannot vanish between the two phases.</li>
 * </ul>
 */
public class OrderedContext<R extends Resource> extends Context<R> {
    private static final class Entry<R> {
        final WeakReference<R> ref;
        final long order;

        Entry(R resource, long order) {
            this.ref = new WeakReference<>(resource);
            this.order = order;
        }
    }

    private final String name;
    private final Object lock = new Object();
    private final List<Entry<R>> entries = new ArrayList<>(); // in registration order
    private long nextOrder;
    private boolean checkpointing;
    private Thread checkpointThread;
    private List<R> restoreList; // strong refs from beforeCheckpoint to afterRestore, registration order

    public OrderedContext() {
        this("context");
    }

    public OrderedContext(String name) {
        this.name = name;
    }

    @Override
    public void register(R resource) {
        Objects.requireNonNull(resource, "resource");
        synchronized (lock) {
            while (checkpointing && Thread.currentThread() != checkpointThread) {
                // Name of this state in thread dumps: a registration waiting for a checkpoint.
                if (Thread.currentThread().isInterrupted()) {
                    throw new RuntimeException("interrupted thread tried to register " + describe(resource)
                        + " in " + this + " during a checkpoint");
                }
                try {
                    lock.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new RuntimeException("interrupted while waiting to register " + describe(resource)
                        + " in " + this + " during a checkpoint", e);
                }
            }
            if ((nextOrder & 63) == 0) {
                prune();
            }
            entries.add(new Entry<>(resource, nextOrder++));
        }
    }

    private void prune() {
        for (Iterator<Entry<R>> it = entries.iterator(); it.hasNext();) {
            if (it.next().ref.get() == null) {
                it.remove();
            }
        }
    }

    /** Live resources registered so far. */
    public int size() {
        synchronized (lock) {
            prune();
            return entries.size();
        }
    }

    @Override
    public void beforeCheckpoint(Context<? extends Resource> context) throws CheckpointException {
        List<R> snapshot = new ArrayList<>();
        synchronized (lock) {
            checkpointing = true;
            checkpointThread = Thread.currentThread();
            prune();
            for (Entry<R> e : entries) {
                R r = e.ref.get();
                if (r != null) {
                    snapshot.add(r);
                }
            }
        }
        // afterRestore runs for what beforeCheckpoint reached, in registration order.
        List<R> reached = new ArrayList<>(snapshot.size());
        restoreList = reached;
        Failures<CheckpointException> failures = new Failures<>(Failures.CHECKPOINT);
        for (int i = snapshot.size() - 1; i >= 0; i--) {
            R r = snapshot.get(i);
            snapshot.set(i, null);
            reached.add(0, r);
            try {
                r.beforeCheckpoint(this);
            } catch (Exception e) {
                failures.add(e);
            }
        }
        failures.throwIfAny();
    }

    @Override
    public void afterRestore(Context<? extends Resource> context) throws RestoreException {
        List<R> list;
        synchronized (lock) {
            // Waiting registrations go on before the afterRestore callbacks, as in CRaC.
            checkpointing = false;
            lock.notifyAll();
            list = restoreList;
            restoreList = null;
        }
        Failures<RestoreException> failures = new Failures<>(Failures.RESTORE);
        if (list != null) {
            for (int i = 0; i < list.size(); i++) {
                R r = list.get(i);
                list.set(i, null);
                try {
                    r.afterRestore(this);
                } catch (Exception e) {
                    failures.add(e);
                }
            }
        }
        synchronized (lock) {
            if (!checkpointing) {
                checkpointThread = null;
            }
        }
        failures.throwIfAny();
    }

    private static String describe(Object resource) {
        // Not resource.toString(): org.crac's proxy forwards it, and it is the application's code.
        return resource.getClass().getName() + "@" + Integer.toHexString(System.identityHashCode(resource));
    }

    @Override
    public String toString() {
        return "OrderedContext[" + name + "]";
    }
}
