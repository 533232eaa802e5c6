package dev.kiln.samples.hello;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Instant;
import java.util.HexFormat;
import java.util.UUID;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Dependency-free HTTP service on the JDK's built-in server, for fast tests of the runtime.
 *
 * <p>Environment: PORT (default 8080); HELLO_FAIL=crash exits with status 3 at once,
 * HELLO_FAIL=never-ready serves but /health stays 503; HELLO_FAIL=crash-on-greet dies on the first /greet; HELLO_START_DELAY_MS delays binding the
 * port (a slow start without CPU use); SECURE_RANDOM_ALGORITHM picks the /random generator.
 */
public final class HelloJdk {

    private static final long STARTED_AT_MILLIS = System.currentTimeMillis();
    private static final long START_NANOS = System.nanoTime();
    private static final AtomicLong REQUESTS = new AtomicLong();
    // Seeded at start-up like any application's token generator, so its state is in a snapshot.
    private static volatile SecureRandom secureRandom;
    // Set by kiln's restore hook (POST /kiln/restored, bake --on-restore): who this copy is now.
    private static volatile String restoredAs = "";

    private HelloJdk() {
    }

    public static void main(String[] args) throws Exception {
        String fail = env("HELLO_FAIL", "");
        boolean healthy;
        switch (fail) {
            case "":
                healthy = true;
                break;
            case "crash":
                System.err.println("hello-jdk: HELLO_FAIL=crash: exiting with status 3");
                System.exit(3);
                return;
            case "never-ready":
                healthy = false;
                break;
            case "crash-on-greet":
                healthy = true;
                break;
            default:
                System.err.println("hello-jdk: unknown HELLO_FAIL '" + fail + "' (known: crash, never-ready, crash-on-greet)");
                System.exit(2);
                return;
        }
        int port = intEnv("PORT", 8080);
        long delayMs = intEnv("HELLO_START_DELAY_MS", 0);
        // Default: NativePRNG, which mixes fresh /dev/urandom bytes into every call. "DRBG" or
        // "SHA1PRNG" never reseed on their own, so restored clones of one snapshot repeat each other.
        String algorithm = env("SECURE_RANDOM_ALGORITHM", "");
        secureRandom = algorithm.isEmpty() ? new SecureRandom() : SecureRandom.getInstance(algorithm);
        secureRandom.nextBytes(new byte[16]);
        if (delayMs > 0) {
            Thread.sleep(delayMs);
        }

        // The JDK's server writes a response's headers and body separately; with Nagle's algorithm
        // on, the body of every request after the first on a kept-alive connection waits for the
        // client's delayed ACK (~40 ms). Read when the server classes load, so set before create.
        if (System.getProperty("sun.net.httpserver.nodelay") == null) {
            System.setProperty("sun.net.httpserver.nodelay", "true");
        }
        HttpServer server = HttpServer.create(new InetSocketAddress("0.0.0.0", port), 128);
        server.createContext("/", counted(HelloJdk::route));
        server.createContext("/health", counted(healthy
                ? ex -> send(ex, 200, "{\"status\":\"UP\"}")
                : ex -> send(ex, 503, "{\"status\":\"DOWN\",\"reason\":\"HELLO_FAIL\"}")));
        server.createContext("/greet", counted(fail.equals("crash-on-greet") ? HelloJdk::crash : HelloJdk::greet));
        server.createContext("/id", counted(HelloJdk::id));
        server.createContext("/random", counted(HelloJdk::random));
        server.createContext("/runtime", counted(HelloJdk::runtime));
        // kiln's restore hook: a restored copy starts with its snapshot's generator state, so a
        // generator that never reseeds by itself (DRBG, SHA1PRNG) is replaced by one seeded from
        // /dev/urandom now.
        server.createContext("/kiln/restored", ex -> {
            String body = new String(ex.getRequestBody().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
            if (!"POST".equals(ex.getRequestMethod())) {
                send(ex, 405, "{\"status\":405}");
                return;
            }
            try {
                // A new generator is not enough: the JDK's seed source may hand out bytes it read
                // before the checkpoint. Fresh bytes straight from the kernel make it differ.
                SecureRandom fresh = algorithm.isEmpty() ? new SecureRandom() : SecureRandom.getInstance(algorithm);
                byte[] seed = new byte[32];
                try (java.io.FileInputStream urandom = new java.io.FileInputStream("/dev/urandom")) {
                    if (urandom.read(seed) != seed.length) {
                        throw new IOException("short read from /dev/urandom");
                    }
                }
                fresh.setSeed(seed);
                secureRandom = fresh;
                restoredAs = body;
                send(ex, 200, "{\"reseeded\":true}");
            } catch (java.security.NoSuchAlgorithmException e) {
                send(ex, 500, "{\"error\":" + quote(e.toString()) + "}");
            }
        });
        // A small fixed pool: threads are created lazily, on the first requests.
        ExecutorService pool = Executors.newFixedThreadPool(4);
        server.setExecutor(pool);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop(0);
            pool.shutdownNow();
        }, "shutdown"));
        server.start();

        System.out.println("hello-jdk: started in " + (System.nanoTime() - START_NANOS) / 1_000_000L
                + " ms on 0.0.0.0:" + server.getAddress().getPort() + ", java " + System.getProperty("java.version"));
        if (healthy) {
            System.out.println("ready");
        } else {
            System.out.println("hello-jdk: serving, /health answers 503 (fail mode)");
        }
    }

    private static void route(HttpExchange ex) throws IOException {
        String path = ex.getRequestURI().getPath();
        if (path.equals("/")) {
            send(ex, 200, "{\"app\":\"hello-jdk\",\"endpoints\":[\"/health\",\"/greet\",\"/id\",\"/random\",\"/runtime\"]}");
        } else {
            send(ex, 404, "{\"status\":404,\"error\":\"Not Found\",\"message\":" + quote("no route for " + path) + "}");
        }
    }

    /** HELLO_FAIL=crash-on-greet: the service dies on its first real request (e.g. during warmup). */
    private static void crash(HttpExchange ex) {
        System.err.println("hello-jdk: HELLO_FAIL=crash-on-greet: halting with status 4");
        Runtime.getRuntime().halt(4);
    }

    private static void greet(HttpExchange ex) throws IOException {
        String name = queryParam(ex, "name");
        send(ex, 200, "{\"message\":" + quote("Hello, " + (name == null || name.isEmpty() ? "world" : name) + "!")
                + ",\"app\":\"hello-jdk\"}");
    }

    private static void id(HttpExchange ex) throws IOException {
        long now = System.currentTimeMillis();
        send(ex, 200, "{\"app\":\"hello-jdk\""
                + ",\"hostname\":" + quote(hostname())
                + ",\"pid\":" + pid()
                + ",\"startedAt\":" + quote(Instant.ofEpochMilli(STARTED_AT_MILLIS).toString())
                + ",\"uptimeMs\":" + (now - STARTED_AT_MILLIS)
                + ",\"requests\":" + REQUESTS.get()
                + ",\"restoredAs\":" + quote(restoredAs) + "}");
    }

    /** What the process runs in: its working directory, Java home and one variable (?env=NAME). */
    private static void runtime(HttpExchange ex) throws IOException {
        String name = queryParam(ex, "env");
        String value = name == null ? null : System.getenv(name);
        send(ex, 200, "{\"cwd\":" + quote(System.getProperty("user.dir"))
                + ",\"javaHome\":" + quote(System.getProperty("java.home"))
                + ",\"env\":" + (value == null ? "null" : quote(value)) + "}");
    }

    private static void random(HttpExchange ex) throws IOException {
        byte[] bytes = new byte[16];
        secureRandom.nextBytes(bytes);
        send(ex, 200, "{\"uuid\":" + quote(UUID.randomUUID().toString())
                + ",\"secureRandom\":" + quote(HexFormat.of().formatHex(bytes))
                + ",\"algorithm\":" + quote(secureRandom.getAlgorithm()) + "}");
    }

    // Read per request, never cached: restored copies of one snapshot get their hostnames later.
    private static String hostname() {
        try {
            return Files.readString(Path.of("/proc/sys/kernel/hostname")).trim();
        } catch (IOException e) {
            return "unknown";
        }
    }

    // /proc/self rather than ProcessHandle.current(), which caches the pid at class initialisation.
    private static long pid() {
        try {
            return Long.parseLong(Files.readSymbolicLink(Path.of("/proc/self")).toString());
        } catch (IOException | RuntimeException e) {
            return ProcessHandle.current().pid();
        }
    }

    private static HttpHandler counted(HttpHandler handler) {
        return ex -> {
            REQUESTS.incrementAndGet();
            try (ex) {
                if (!ex.getRequestMethod().equals("GET") && !ex.getRequestMethod().equals("HEAD")) {
                    send(ex, 405, "{\"status\":405,\"error\":\"Method Not Allowed\"}");
                } else {
                    handler.handle(ex);
                }
            }
        };
    }

    private static void send(HttpExchange ex, int status, String json) throws IOException {
        byte[] body = json.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/json; charset=utf-8");
        boolean head = ex.getRequestMethod().equals("HEAD");
        ex.sendResponseHeaders(status, head ? -1 : body.length);
        if (!head) {
            try (OutputStream out = ex.getResponseBody()) {
                out.write(body);
            }
        }
    }

    private static String queryParam(HttpExchange ex, String key) {
        String query = ex.getRequestURI().getRawQuery();
        if (query == null) {
            return null;
        }
        for (String pair : query.split("&")) {
            int eq = pair.indexOf('=');
            String k = URLDecoder.decode(eq < 0 ? pair : pair.substring(0, eq), StandardCharsets.UTF_8);
            if (k.equals(key)) {
                return eq < 0 ? "" : URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8);
            }
        }
        return null;
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null ? fallback : value;
    }

    private static int intEnv(String name, int fallback) {
        String value = env(name, "");
        if (value.isEmpty()) {
            return fallback;
        }
        try {
            return Integer.parseInt(value);
        } catch (NumberFormatException e) {
            System.err.println("hello-jdk: " + name + " must be a number, got '" + value + "'");
            System.exit(2);
            return fallback;
        }
    }
}
