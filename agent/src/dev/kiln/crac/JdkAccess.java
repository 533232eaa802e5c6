package dev.kiln.crac;

import java.lang.instrument.Instrumentation;
import java.lang.reflect.Field;
import java.util.Map;
import java.util.Set;

/**
 * Opens the few java.base packages the identity refresh reaches into (the equivalent of
 * {@code --add-opens java.base/java.net=ALL-UNNAMED} etc., but only to the agent's own module),
 * through {@link Instrumentation#redefineModule}. Without the agent (no Instrumentation) the
 * reflective steps fail and are reported as warnings.
 */
final class JdkAccess {
    static final String[] OPENED = {"java.net", "sun.security.provider"};
    private static volatile boolean opened;

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
    }

    private static java.lang.reflect.Method shouldBeInitialized;
    private static Object unsafe;

    /** True when {@code c}'s static initializer has run (false if that cannot be told). */
    static synchronized boolean initialized(Class<?> c) {
        try {
            if (shouldBeInitialized == null) {
                Class<?> u = Class.forName("jdk.internal.misc.Unsafe");
                unsafe = u.getMethod("getUnsafe").invoke(null);
                shouldBeInitialized = u.getMethod("shouldBeInitialized", Class.class);
            }
            return !(Boolean) shouldBeInitialized.invoke(unsafe, c);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return false;
        }
    }

    static Class<?> load(String name) throws ClassNotFoundException {
        return Class.forName(name, false, null);
    }

    static boolean isOpened() {
        return opened;
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
