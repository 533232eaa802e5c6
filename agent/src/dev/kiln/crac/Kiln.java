package dev.kiln.crac;

import java.security.SecureRandom;

/** The agent's small public API for applications. */
public final class Kiln {
    private Kiln() {
    }

    /**
     * Reseeds {@code random} in every restored copy, before the afterRestore callbacks (weakly
     * held): DRBG instances through {@link SecureRandom#reseed()}, others through setSeed with
     * 32 bytes of /dev/urandom. Returns {@code random}.
     */
    public static <T extends SecureRandom> T registerSecureRandom(T random) {
        Identity.registerSecureRandom(random);
        return random;
    }

    /** This copy's instance id (system property kiln.instance), or null before any restore. */
    public static String instance() {
        return System.getProperty("kiln.instance");
    }
}
