package dev.kiln.crac;

import java.lang.invoke.MethodHandle;
import java.lang.reflect.Method;

/**
 * Gives the JVM's free malloc memory back to the kernel: HotSpot's {@code System.trim_native_heap}
 * diagnostic command (glibc's {@code malloc_trim}; JDK 17.0.9+, 21+), run in process through the
 * {@code jdk.management} module's own entry point, without the attach mechanism or an MBean server.
 *
 * <p>Why kiln asks for it (PROTOCOL.md, {@code trim.request}): a {@code ready} standby copy runs
 * its afterRestore and a few requests before it is frozen, and the JIT compiles what they set
 * off. The compilers' scratch memory goes back to malloc's free lists a few seconds later
 * (HotSpot's chunk-pool cleaner runs every 5 s), where it stays dirty, the copy's own: 0.7-3 MiB
 * of the Spring sample's 12-16 MiB per frozen copy, with the bake. Trimmed, those pages are gone
 * before the freeze.
 * glibc does not rely on the content of what it trims (free chunks' interiors; a later calloc
 * clears them), so in a copy whose heap is mapped from page images a trimmed page that comes
 * back with the image's bytes instead of zeros is as good (patches/criu/test.sh checks it).
 *
 * <p>{@link #prepare()} runs at every checkpoint, in the original: the classes it loads and the
 * method handle it links are then in the snapshot, and a copy's first trim loads nothing (loading
 * them in each copy would write more memory than the trim gives back).
 */
final class NativeHeap {
    static final String COMMAND = "System.trim_native_heap";
    /** {@code DiagnosticCommandImpl.executeDiagnosticCommand(String)} bound to the JVM's instance. */
    private static MethodHandle execute;
    private static String unavailable;

    private NativeHeap() {
    }

    /** Links the diagnostic command entry point once; false (and why, in {@link #unavailable()}) when this JVM has none. */
    static synchronized boolean prepare() {
        if (execute != null) {
            return true;
        }
        if (unavailable != null) {
            return false;
        }
        try {
            if (!JdkAccess.isManagementOpened()) {
                throw new IllegalStateException("the jdk.management module is not open to the agent");
            }
            // Its static initializer loads libmanagement_ext, where the native method lives.
            Class.forName("com.sun.management.internal.PlatformMBeanProviderImpl", true, null);
            Class<?> impl = Class.forName("com.sun.management.internal.DiagnosticCommandImpl", true, null);
            Method get = impl.getDeclaredMethod("getDiagnosticCommandMBean");
            get.setAccessible(true);
            Object instance = get.invoke(null);
            if (instance == null) {
                throw new IllegalStateException("this JVM runs no diagnostic commands from Java");
            }
            MethodHandle handle = JdkAccess.handle(impl.getDeclaredMethod("executeDiagnosticCommand", String.class)).bindTo(instance);
            // An unknown command's help is "Help unavailable : 'NAME' : No such command".
            String help = (String) handle.invoke("help " + COMMAND);
            if (help == null || !help.contains(COMMAND) || help.contains("No such command")) {
                throw new IllegalStateException("this JVM has no " + COMMAND + " (JDK 17.0.9 or later has)");
            }
            execute = handle;
            return true;
        } catch (Throwable t) {
            unavailable = String.valueOf(t);
            Log.debug("native heap trim unavailable: " + unavailable);
            return false;
        }
    }

    static synchronized String unavailable() {
        return unavailable;
    }

    /** Runs the trim; returns the JVM's one-line report ("Trim native heap: RSS+Swap: 129M->124M (-4656K)"). */
    static String trim() throws Throwable {
        MethodHandle handle;
        synchronized (NativeHeap.class) {
            if (!prepare()) {
                throw new IllegalStateException(unavailable);
            }
            handle = execute;
        }
        String out = (String) handle.invoke(COMMAND);
        return out == null ? "" : out.strip().replace('\n', ' ');
    }
}
