package dev.kiln.crac;

/** Agent messages on stderr, prefixed; debug lines only with -Dkiln.agent.debug=true. */
final class Log {
    static final boolean DEBUG = Boolean.getBoolean("kiln.agent.debug");

    private Log() {
    }

    static void warn(String message) {
        System.err.println("[kiln-crac] " + message);
    }

    static void debug(String message) {
        if (DEBUG) {
            System.err.println("[kiln-crac] " + message);
        }
    }
}
