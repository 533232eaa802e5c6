package dev.kiln.samples.boot;

import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Process-wide state behind /health, /id and /random. Created first thing in {@code main} and
 * registered as a singleton bean, so "startedAt" is the moment the application began: every copy
 * restored from one snapshot reports the same value.
 */
public final class AppState {

    private final long startedAtMillis;
    private final long startNanos;
    private final AtomicLong requests = new AtomicLong();
    private final SecureRandom secureRandom;
    private volatile boolean ready;

    private AppState(long startedAtMillis, long startNanos, SecureRandom secureRandom) {
        this.startedAtMillis = startedAtMillis;
        this.startNanos = startNanos;
        this.secureRandom = secureRandom;
        // Seeded now, as applications seed their token generators, so its state is part of any
        // snapshot taken later: what clone-uniqueness tests look at.
        this.secureRandom.nextBytes(new byte[16]);
    }

    /**
     * @param algorithm null or blank for {@code new SecureRandom()} (NativePRNG on Linux, which
     *        mixes fresh /dev/urandom bytes into every call), or a name such as "DRBG" or
     *        "SHA1PRNG": generators that never reseed by themselves, so restored copies repeat.
     */
    static AppState create(long startedAtMillis, long startNanos, String algorithm) {
        try {
            SecureRandom random = algorithm == null || algorithm.isBlank()
                    ? new SecureRandom() : SecureRandom.getInstance(algorithm);
            return new AppState(startedAtMillis, startNanos, random);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalArgumentException("SECURE_RANDOM_ALGORITHM: " + e.getMessage(), e);
        }
    }

    public long startedAtMillis() { return startedAtMillis; }

    /** Milliseconds from the start of {@code main} (monotonic clock) until now. */
    public long millisSinceMain() { return (System.nanoTime() - startNanos) / 1_000_000L; }

    public SecureRandom secureRandom() { return secureRandom; }

    public long countRequest() { return requests.incrementAndGet(); }

    public long requests() { return requests.get(); }

    public boolean isReady() { return ready; }

    void markReady() { ready = true; }
}
