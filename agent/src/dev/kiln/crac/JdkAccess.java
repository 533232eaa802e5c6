package dev.kiln.crac;

import java.lang.instrument.Instrumentation;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.Map;
import java.util.Set;

/**
 * Opens the few java.base packages the identity refresh reaches into (the equivalent of
 * {@code --add-opens java.base/java.net=ALL-UNNAMED} etc., but only to the agent's own module),
 * through {@link Instrumentation#redefineModule}. Without the agent (no Instrumentation) the
 * reflective steps fail and are reported as warnings.
 *
 * <p>Methods are called through method handles, not {@link Method#invoke}: JDK 17's reflection
 * counts the calls of each method and, at the 16th, generates and loads a class to make later calls
 * faster ("inflation", 1-3 ms). The restore path calls these methods a few times per checkpoint
 * (its rehearsals included), so that 16th call fell into some copy's restore: the identity
 * refresh of hello-jdk took ~6 ms instead of ~2 in every copy of a snapshot baked with kiln's
 * restore rehearsal. A method handle is linked once, at its first call (in a rehearsal, before the
 * dump), and costs the same ever after.
 */
final class JdkAccess {
    static final String[] OPENED = {"java.net", "sun.security.provider"};
    /** Of {@code jdk.management}: the diagnostic command entry point ({@link NativeHeap}). */
    static final String MANAGEMENT_INTERNAL = "com.sun.management.internal";
    private static volatile boolean opened;
    private static volatile boolean managementOpened;

    private JdkAccess() {
    }

    static void open(Instrumentation inst) {
        Module base = Object.class.getModule();
        Module me = JdkAccess.class.getModule();
        Map<String, Set<Module>> opens = new java.util.HashMap<>();
        for (String p : OPENED) {
            opens.put(p, Set.of(me));
        }
        // jdk.internal.misc: Unsafe.shouldBeInitialized, to leave alone what the JDK has not set up yet
        inst.redefineModule(base, Set.of(), Map.of("jdk.internal.misc", Set.of(me)), opens, Set.of(), Map.of());
        opened = true;
        // Absent from a runtime image linked without it: NativeHeap then says so. Its own try:
        // java.base's packages are open whatever happens here.
        try {
            ModuleLayer.boot().findModule("jdk.management").ifPresent(management -> {
                inst.redefineModule(management, Set.of(), Map.of(), Map.of(MANAGEMENT_INTERNAL, Set.of(me)), Set.of(), Map.of());
                managementOpened = true;
            });
        } catch (RuntimeException e) {
            Log.debug("cannot open jdk.management's internals, no native heap trim: " + e);
        }
    }

    /** Unsafe.shouldBeInitialized bound to the Unsafe instance: (Class) boolean. */
    private static MethodHandle shouldBeInitialized;

    /** True when {@code c}'s static initializer has run (false if that cannot be told). */
    static synchronized boolean initialized(Class<?> c) {
        try {
            if (shouldBeInitialized == null) {
                Class<?> u = Class.forName("jdk.internal.misc.Unsafe");
                Object unsafe = u.getMethod("getUnsafe").invoke(null);
                shouldBeInitialized = handle(u.getMethod("shouldBeInitialized", Class.class)).bindTo(unsafe);
            }
            return !(boolean) shouldBeInitialized.invokeExact(c);
        } catch (Error e) {
            throw e;
        } catch (Throwable e) {
            return false;
        }
    }

    /** A method handle for {@code method} (made accessible: the agent's module has it opened). */
    static MethodHandle handle(Method method) throws IllegalAccessException {
        method.setAccessible(true);
        return MethodHandles.lookup().unreflect(method);
    }

    static Class<?> load(String name) throws ClassNotFoundException {
        return Class.forName(name, false, null);
    }

    static boolean isOpened() {
        return opened;
    }

    static boolean isManagementOpened() {
        return managementOpened;
    }

    static Field field(Class<?> c, String name) throws ReflectiveOperationException {
        Field f = c.getDeclaredField(name);
        f.setAccessible(true);
        return f;
    }

    static Object get(Class<?> c, String name, Object target) throws ReflectiveOperationException {
        return field(c, name).get(target);
    }
}
