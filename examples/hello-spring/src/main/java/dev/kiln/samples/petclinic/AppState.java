package dev.kiln.samples.petclinic;

import java.security.SecureRandom;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Process-wide state that the instance-identity endpoints report. Created first thing in
 * {@code main} and registered as a singleton, so "startedAt" is the moment the application began.
 */
public class AppState {

    private final long startedAtMillis;
    private final long startNanos;
    private final AtomicLong requests = new AtomicLong();
    private final SecureRandom secureRandom;
    private volatile boolean ready;

    public AppState(long startedAtMillis, long startNanos) {
        this.startedAtMillis = startedAtMillis;
        this.startNanos = startNanos;
        // Seeded now, as applications do with their session-id or token generators, so its state is
        // part of any snapshot taken later: exactly what clone-uniqueness tests need to look at.
        this.secureRandom = new SecureRandom();
        this.secureRandom.nextBytes(new byte[16]);
    }

    public long startedAtMillis() { return startedAtMillis; }

    /** Milliseconds from the start of {@code main} (monotonic clock) until now. */
    public long millisSinceMain() { return (System.nanoTime() - startNanos) / 1_000_000L; }

    public SecureRandom secureRandom() { return secureRandom; }

    public long countRequest() { return requests.incrementAndGet(); }

    public long requests() { return requests.get(); }

    public boolean isReady() { return ready; }

    public void markReady() { ready = true; }
}
