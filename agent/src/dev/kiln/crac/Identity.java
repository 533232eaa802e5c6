package dev.kiln.crac;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodType;
import java.lang.ref.WeakReference;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;

/**
 * What makes a restored copy itself rather than the process it was copied from; applied on the
 * coordinator thread before any afterRestore callback. Writes nothing to disk. Every step that
 * fails is reported as a warning (restore.done lists them) and does not fail the restore.
 */
final class Identity {
    private static final List<WeakReference<SecureRandom>> registered = new ArrayList<>();

    private Identity() {
    }

    static void registerSecureRandom(SecureRandom random) {
        synchronized (registered) {
            registered.removeIf(r -> r.get() == null);
            registered.add(new WeakReference<>(random));
        }
    }

    /** Applies {@code request} (keys instance, hostname); returns the warnings. */
    static List<String> apply(Map<String, String> request) {
        List<String> warnings = new ArrayList<>();
        String instance = request.get("instance");
        if (instance != null && !instance.isEmpty()) {
            System.setProperty("kiln.instance", instance);
        }
        String hostname = request.get("hostname");
        if (hostname != null && !hostname.isEmpty()) {
            System.setProperty("kiln.hostname", hostname);
        }
        step(warnings, "dns cache", Identity::flushDnsCache);
        step(warnings, "local host", () -> refreshLocalHost(hostname, warnings));
        if (!"false".equals(System.getProperty("kiln.agent.reseed"))) { // false: diagnosis only
            step(warnings, "secure random", () -> reseed(warnings));
        }
        return warnings;
    }

    interface Step {
        void run() throws Throwable;
    }

    private static void step(List<String> warnings, String name, Step step) {
        long t0 = System.nanoTime();
        try {
            step.run();
            Log.debug("identity refresh, " + name + ": " + (System.nanoTime() - t0) / 1000 + " us");
        } catch (Throwable t) {
            warnings.add(name + ": " + t);
            Log.warn("identity refresh, " + name + ": " + t);
        }
    }

    /** Empties InetAddress's positive and negative lookup cache. */
    static void flushDnsCache() throws ReflectiveOperationException {
        Object cache = JdkAccess.get(InetAddress.class, "cache", null);
        Object expiry = JdkAccess.get(InetAddress.class, "expirySet", null);
        synchronized (cache) {
            ((Map<?, ?>) cache).clear();
            ((Collection<?>) expiry).clear();
        }
    }

    /**
     * Drops InetAddress's cached local host (kept 5 s by the JDK), so that getLocalHost() asks the
     * kernel again: kiln sets each copy's UTS hostname before it signals. When the kernel's name is
     * not the requested one (kiln could not set it), the requested name is pinned in the cache
     * instead, with the address it resolves to (loopback if it resolves to nothing).
     */
    static void refreshLocalHost(String hostname, List<String> warnings) throws Exception {
        Field cached = JdkAccess.field(InetAddress.class, "cachedLocalHost");
        cached.set(null, null);
        if (hostname == null || hostname.isEmpty()) {
            return;
        }
        String kernel = Files.readString(Path.of("/proc/sys/kernel/hostname"), StandardCharsets.UTF_8).strip();
        if (kernel.equals(hostname)) {
            return;
        }
        InetAddress addr;
        try {
            InetAddress resolved = InetAddress.getByName(hostname);
            addr = InetAddress.getByAddress(hostname, resolved.getAddress());
        } catch (IOException e) {
            addr = InetAddress.getByAddress(hostname, InetAddress.getLoopbackAddress().getAddress());
        }
        Class<?> clh = Class.forName("java.net.InetAddress$CachedLocalHost");
        Constructor<?> ctor = clh.getDeclaredConstructor(String.class, InetAddress.class);
        ctor.setAccessible(true);
        Object entry = ctor.newInstance(hostname, addr);
        Field expiry = JdkAccess.field(clh, "expiryTime");
        expiry.setLong(entry, System.nanoTime() + Long.MAX_VALUE / 2);
        cached.set(null, entry);
        warnings.add("local host: kernel hostname is " + kernel + ", pinned " + hostname + " in InetAddress");
    }

    static byte[] entropy(int n) throws IOException {
        byte[] b = new byte[n];
        try (InputStream in = new FileInputStream("/dev/urandom")) {
            int off = 0;
            while (off < n) {
                int r = in.read(b, off, n - off);
                if (r < 0) {
                    throw new IOException("EOF on /dev/urandom");
                }
                off += r;
            }
        }
        return b;
    }

    /**
     * Reseeds what a clone would otherwise share with its siblings: the SHA1PRNG that seeds every
     * new unseeded SHA1PRNG, the HashDrbg that seeds every new DRBG, NativePRNG's mixing SHA1PRNG
     * and its buffer of /dev/urandom bytes, and every SecureRandom given to Kiln.registerSecureRandom.
     */
    static void reseed(List<String> warnings) throws Exception {
        // Holders whose static initializer has not run yet are left alone: they will be seeded
        // fresh in this copy when first used (initializing them here would only cost time).
        MethodHandle setSeed = sha1SetSeed();
        step(warnings, "SHA1PRNG seeder", () -> {
            Class<?> holder = JdkAccess.load("sun.security.provider.SecureRandom$SeederHolder");
            if (JdkAccess.initialized(holder)) {
                setSeed.invokeExact(JdkAccess.get(holder, "seeder", null), entropy(32));
            }
        });
        // DRBG seeder: a lambda over a HashDrbg whose own entropy source is SeedGenerator.
        step(warnings, "DRBG seeder", () -> {
            Class<?> holder = JdkAccess.load("sun.security.provider.AbstractDrbg$SeederHolder");
            if (!JdkAccess.initialized(holder)) {
                return;
            }
            Object lambda = JdkAccess.get(holder, "seeder", null);
            Class<?> abstractDrbg = JdkAccess.load("sun.security.provider.AbstractDrbg");
            Object drbg = null;
            for (Field f : lambda.getClass().getDeclaredFields()) {
                if (abstractDrbg.isAssignableFrom(f.getType())) {
                    f.setAccessible(true);
                    drbg = f.get(lambda);
                }
            }
            if (drbg == null) {
                throw new IllegalStateException("no HashDrbg in " + lambda.getClass());
            }
            drbgReseed(abstractDrbg).invokeExact(drbg, (java.security.SecureRandomParameters) null);
        });
        // NativePRNG (what new SecureRandom() is on Linux): XORs /dev/urandom bytes, buffered for
        // up to 100 ms of wall-clock time, with a SHA1PRNG; both are copied by the snapshot.
        step(warnings, "NativePRNG", () -> {
            Class<?> io = JdkAccess.load("sun.security.provider.NativePRNG$RandomIO");
            for (String name : new String[] {"sun.security.provider.NativePRNG",
                "sun.security.provider.NativePRNG$Blocking", "sun.security.provider.NativePRNG$NonBlocking"}) {
                Class<?> holder = JdkAccess.load(name);
                if (!JdkAccess.initialized(holder)) {
                    continue;
                }
                Object rio = JdkAccess.get(holder, "INSTANCE", null);
                if (rio == null) {
                    continue;
                }
                Object lock = JdkAccess.get(io, "LOCK_GET_BYTES", rio);
                synchronized (lock) {
                    JdkAccess.field(io, "buffered").setInt(rio, 0);
                    Object mix = JdkAccess.get(io, "mixRandom", rio);
                    if (mix != null) {
                        setSeed.invokeExact(mix, entropy(32));
                    }
                }
            }
        });
        List<SecureRandom> list = new ArrayList<>();
        synchronized (registered) {
            registered.removeIf(r -> r.get() == null);
            for (WeakReference<SecureRandom> r : registered) {
                SecureRandom s = r.get();
                if (s != null) {
                    list.add(s);
                }
            }
        }
        for (SecureRandom s : list) {
            step(warnings, "registered " + s.getAlgorithm(), () -> reseedOne(s));
        }
    }

    private static MethodHandle sha1SetSeed;
    private static MethodHandle drbgReseed;

    /** sun.security.provider.SecureRandom.engineSetSeed as (Object, byte[]) void. */
    private static synchronized MethodHandle sha1SetSeed() throws ReflectiveOperationException {
        if (sha1SetSeed == null) {
            Method m = JdkAccess.load("sun.security.provider.SecureRandom").getMethod("engineSetSeed", byte[].class);
            sha1SetSeed = JdkAccess.handle(m).asType(MethodType.methodType(void.class, Object.class, byte[].class));
        }
        return sha1SetSeed;
    }

    /** AbstractDrbg.engineReseed as (Object, SecureRandomParameters) void. */
    private static synchronized MethodHandle drbgReseed(Class<?> abstractDrbg) throws ReflectiveOperationException {
        if (drbgReseed == null) {
            Method m = abstractDrbg.getDeclaredMethod("engineReseed", java.security.SecureRandomParameters.class);
            drbgReseed = JdkAccess.handle(m)
                .asType(MethodType.methodType(void.class, Object.class, java.security.SecureRandomParameters.class));
        }
        return drbgReseed;
    }

    static void reseedOne(SecureRandom s) throws IOException {
        try {
            s.reseed(); // DRBG: fresh entropy from its source (the seeder above, or SeedGenerator)
        } catch (UnsupportedOperationException e) {
            s.setSeed(entropy(32)); // SHA1PRNG, NativePRNG: mixed into the state
        }
    }
}
