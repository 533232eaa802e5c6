package dev.kiln.samples.petclinic;

import java.security.NoSuchAlgorithmException;
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

    /**
     * @param secureRandomAlgorithm null for {@code new SecureRandom()} (NativePRNG on Linux, which
     *        mixes fresh /dev/urandom bytes into every call), or a name such as "DRBG" or "SHA1PRNG":
     *        generators that never reseed on their own, so restored clones repeat each other.
     */
    public AppState(long startedAtMillis, long startNanos, String secureRandomAlgorithm)
            throws NoSuchAlgorithmException {
        this.startedAtMillis = startedAtMillis;
        this.startNanos = startNanos;
        this.secureRandom = secureRandomAlgorithm == null
                ? new SecureRandom() : SecureRandom.getInstance(secureRandomAlgorithm);
        // Seeded now, as applications do with their session-id or token generators, so its state is
        // part of any snapshot taken later: exactly what clone-uniqueness tests need to look at.
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
