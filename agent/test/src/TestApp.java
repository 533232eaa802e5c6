import java.io.IOException;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

import org.crac.Context;
import org.crac.Core;
import org.crac.Resource;

/**
 * The application side of the agent tests: a JVM started with the agent, the real org.crac 1.5.0
 * jar on its class path, and one scenario. It reports what happens as lines in the file named by
 * -Dtest.events (opened, appended and closed per line: no file stays open across a CRIU dump).
 */
public class TestApp {
    static Path events;
    static final List<Object> keep = new ArrayList<>();

    static synchronized void event(String line) {
        try {
            Files.write(events, (line + "\n").getBytes(StandardCharsets.UTF_8),
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    /** An org.crac resource that reports its callbacks; may fail on purpose. */
    static class Res implements Resource {
        final String name;
        final Exception beforeFailure;
        final Exception afterFailure;

        Res(String name) {
            this(name, null, null);
        }

        Res(String name, Exception beforeFailure, Exception afterFailure) {
            this.name = name;
            this.beforeFailure = beforeFailure;
            this.afterFailure = afterFailure;
        }

        @Override
        public void beforeCheckpoint(Context<? extends Resource> context) throws Exception {
            event("before " + name + " thread=" + Thread.currentThread().getName());
            if (beforeFailure != null) {
                throw beforeFailure;
            }
        }

        @Override
        public void afterRestore(Context<? extends Resource> context) throws Exception {
            event("after " + name + " thread=" + Thread.currentThread().getName()
                + " instance=" + System.getProperty("kiln.instance"));
            if (afterFailure != null) {
                throw afterFailure;
            }
        }
    }

    /** A resource of the backend's own API, for nested contexts (dev.kiln.crac.OrderedContext). */
    static class KRes implements dev.kiln.crac.Resource {
        final String name;
        final Exception beforeFailure;

        KRes(String name, Exception beforeFailure) {
            this.name = name;
            this.beforeFailure = beforeFailure;
        }

        @Override
        public void beforeCheckpoint(dev.kiln.crac.Context<? extends dev.kiln.crac.Resource> c) throws Exception {
            event("before " + name + " thread=" + Thread.currentThread().getName());
            if (beforeFailure != null) {
                throw beforeFailure;
            }
        }

        @Override
        public void afterRestore(dev.kiln.crac.Context<? extends dev.kiln.crac.Resource> c) {
            event("after " + name + " thread=" + Thread.currentThread().getName());
        }
    }

    static void register(Resource r) {
        keep.add(r);
        Core.getGlobalContext().register(r);
    }

    public static void main(String[] args) throws Exception {
        events = Path.of(System.getProperty("test.events"));
        String scenario = args[0];
        switch (scenario) {
            case "order" -> order();
            case "weak" -> weak();
            case "fail" -> fail();
            case "block" -> block();
            case "app" -> app();
            case "identity" -> identity();
            case "timer" -> timer();
            case "io" -> io();
            case "bench" -> bench(Integer.parseInt(args[1]));
            default -> throw new IllegalArgumentException(scenario);
        }
        event("main-done");
        Thread.sleep(Long.MAX_VALUE); // the driver ends this JVM
    }

    /** A "driver" that opens a connection, as a JDBC driver does (the stack the preflight shows). */
    static final class Database {
        static java.net.Socket openConnection(int port) throws IOException {
            java.net.Socket s = new java.net.Socket(InetAddress.getLoopbackAddress(), port);
            s.getOutputStream().write("startup packet\n".getBytes(StandardCharsets.UTF_8));
            return s;
        }
    }

    /** Later traffic to the same address:port, from other code: not the opening stack. */
    static final class Later {
        static java.net.Socket reconnect(int port) throws IOException {
            java.net.Socket s = new java.net.Socket(InetAddress.getLoopbackAddress(), port);
            s.getOutputStream().write("later\n".getBytes(StandardCharsets.UTF_8));
            return s;
        }
    }

    static final class LogWriter {
        static java.io.FileOutputStream open(Path path) throws IOException {
            java.io.FileOutputStream out = new java.io.FileOutputStream(path.toFile(), true);
            out.write("first line\n".getBytes(StandardCharsets.UTF_8));
            return out;
        }
    }

    /** Sockets and a file left open, for the io-stacks recording (-Dkiln.agent.io-stacks=true). */
    static void io() throws Exception {
        java.net.ServerSocket server = new java.net.ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        keep.add(server);
        Thread acceptor = new Thread(() -> {
            try {
                while (true) {
                    keep.add(server.accept());
                }
            } catch (IOException e) {
                // closed with the JVM
            }
        }, "acceptor");
        acceptor.setDaemon(true);
        acceptor.start();
        keep.add(Database.openConnection(server.getLocalPort()));
        Thread.sleep(20);
        keep.add(Later.reconnect(server.getLocalPort()));
        Path log = events.resolveSibling("app.log");
        keep.add(LogWriter.open(log));
        event("io-port=" + server.getLocalPort());
        event("io-file=" + log);
    }

    static void order() {
        register(new Res("A"));
        register(new Res("B"));
        dev.kiln.crac.OrderedContext<dev.kiln.crac.Resource> inner = new dev.kiln.crac.OrderedContext<>("inner");
        keep.add(inner);
        inner.register(keepK(new KRes("D", null)));
        inner.register(keepK(new KRes("E", null)));
        dev.kiln.crac.Core.getGlobalContext().register(inner);
        register(new Res("C"));
        event("compat=" + System.getProperty("org.crac.Core.Compat"));
        event("crac-loader=" + Core.class.getClassLoader().getName());
    }

    static <T> T keepK(T t) {
        keep.add(t);
        return t;
    }

    static void weak() throws InterruptedException {
        register(new Res("kept"));
        Res dropped = new Res("dropped");
        java.lang.ref.WeakReference<Res> canary = new java.lang.ref.WeakReference<>(dropped);
        Core.getGlobalContext().register(dropped);
        dropped = null;
        for (int i = 0; i < 50 && canary.get() != null; i++) {
            System.gc();
            Thread.sleep(20);
        }
        event("dropped-collected=" + (canary.get() == null));
    }

    static void fail() {
        register(new Res("A"));
        register(new Res("B", new IllegalStateException("b-fail"), null));
        dev.kiln.crac.OrderedContext<dev.kiln.crac.Resource> inner = new dev.kiln.crac.OrderedContext<>("inner");
        keep.add(inner);
        inner.register(keepK(new KRes("D", new UnsupportedOperationException("d-fail"))));
        dev.kiln.crac.Core.getGlobalContext().register(inner);
        register(new Res("C", new IOException("c-fail"), null));
    }

    static void block() {
        register(new Res("A") {
            @Override
            public void beforeCheckpoint(Context<? extends Resource> context) throws Exception {
                super.beforeCheckpoint(context);
                // A registration from another thread waits until the restore...
                Thread t = new Thread(() -> {
                    event("other-registering");
                    register(new Res("late-other"));
                    event("other-registered");
                }, "other");
                t.start();
                // ...one from this thread (inside a callback) goes through at once, to the next cycle.
                register(new Res("late-self"));
                event("self-registered");
                t.join(300);
                event("other-alive-after-300ms=" + t.isAlive());
            }
        });
        register(new Res("B"));
    }

    static void app() throws Exception {
        register(new Res("A"));
        register(new Res("R") {
            @Override
            public void beforeCheckpoint(Context<? extends Resource> context) throws Exception {
                super.beforeCheckpoint(context);
                try {
                    Core.checkpointRestore();
                    event("recursive=returned");
                } catch (org.crac.CheckpointException e) {
                    event("recursive=" + e.getClass().getName() + " " + Arrays.toString(e.getSuppressed()));
                }
            }
        });
        register(new Res("F", null, new IllegalStateException("after-fail")));
        // 1: a restore whose afterRestore has one failure
        try {
            Core.checkpointRestore();
            event("cr1=returned");
        } catch (org.crac.RestoreException e) {
            event("cr1=" + e.getClass().getName() + " suppressed=" + Arrays.toString(e.getSuppressed())
                + " instance=" + System.getProperty("kiln.instance"));
        }
        // 2: the dump failed, kiln sends restore.request with checkpoint.error to the original
        try {
            Core.checkpointRestore();
            event("cr2=returned");
        } catch (org.crac.CheckpointException e) {
            event("cr2=" + e.getClass().getName() + " suppressed=" + Arrays.toString(e.getSuppressed()));
        }
    }

    static void identity() throws Exception {
        SecureRandom a = SecureRandom.getInstance("SHA1PRNG");
        SecureRandom b = SecureRandom.getInstance("SHA1PRNG");
        a.setSeed(42L);
        b.setSeed(42L);
        dev.kiln.crac.Kiln.registerSecureRandom(a);
        SecureRandom d1 = SecureRandom.getInstance("DRBG");
        dev.kiln.crac.Kiln.registerSecureRandom(d1);
        d1.nextInt();
        keep.add(a);
        keep.add(b);
        register(new Res("net") {
            @Override
            public void beforeCheckpoint(Context<? extends Resource> context) throws Exception {
                // warm the JDK's caches: local host (5 s) and the lookup cache (30 s)
                event("before-localhost=" + InetAddress.getLocalHost().getHostName());
                event("before-svc=" + InetAddress.getByName("svc.kiln.test").getHostAddress());
            }

            @Override
            public void afterRestore(Context<? extends Resource> context) throws Exception {
                event("after-instance=" + System.getProperty("kiln.instance"));
                event("after-localhost=" + InetAddress.getLocalHost().getHostName());
                event("after-svc=" + InetAddress.getByName("svc.kiln.test").getHostAddress());
                event("sha1prng-differs=" + (a.nextLong() != b.nextLong()));
            }
        });
    }

    /** A fixed-rate 1 s task; each run reported with wall-clock and monotonic time. */
    static void timer() {
        ScheduledExecutorService ses = Executors.newSingleThreadScheduledExecutor();
        keep.add(ses);
        long t0 = System.nanoTime();
        ses.scheduleAtFixedRate(() -> event("tick wall=" + System.currentTimeMillis()
            + " mono=" + (System.nanoTime() - t0) / 1_000_000), 1000, 1000, TimeUnit.MILLISECONDS);
        register(new Res("T") {
            @Override
            public void afterRestore(Context<? extends Resource> context) throws Exception {
                event("restored wall=" + System.currentTimeMillis() + " mono=" + (System.nanoTime() - t0) / 1_000_000
                    + " thread=" + Thread.currentThread().getName() + " instance=" + System.getProperty("kiln.instance"));
                byte[] r = new byte[16];
                new SecureRandom().nextBytes(r);
                event("random native=" + java.util.HexFormat.of().formatHex(r)
                    + " sha1=" + Long.toHexString(SecureRandom.getInstance("SHA1PRNG").nextLong())
                    + " drbg=" + Long.toHexString(SecureRandom.getInstance("DRBG").nextLong())
                    + " uuid=" + java.util.UUID.randomUUID());
            }
        });
        // Use the JDK's generators before the checkpoint (NativePRNG's buffer and mixer, the seeders
        // of new SHA1PRNG and DRBG instances), so that the copies would share them without a reseed.
        try {
            new SecureRandom().nextInt();
            SecureRandom.getInstance("SHA1PRNG").nextInt();
            SecureRandom.getInstance("DRBG").nextInt();
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static void bench(int n) {
        for (int i = 0; i < n; i++) {
            register(new Resource() {
                @Override
                public void beforeCheckpoint(Context<? extends Resource> context) {
                }

                @Override
                public void afterRestore(Context<? extends Resource> context) {
                }
            });
        }
    }
}
