package dev.kiln.samples.hostile;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * A function that does not behave: once restored, {@code GET /attack} runs the native probe
 * (build/probe, see src/main/c/probe.c) that tries to mount, load kernel modules, read the host's
 * pid 1, raise its own limits, create namespaces and fork-bomb, and answers with the probe's JSON
 * account of each attempt. {@code GET /hog?mib=N} runs the probe allocating N MiB and answers how
 * it ended (the memory limit should kill it). The JVM itself also tries to read the host's
 * {@code /proc/1/environ} ({@code GET /peek}).
 *
 * <p>Environment: PORT (default 8080), HOSTILE_PROBE (default: build/probe beside the classes).
 */
public final class Hostile {
    private Hostile() {}

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        String probe = System.getenv().getOrDefault("HOSTILE_PROBE", defaultProbe());
        HttpServer server = HttpServer.create(new InetSocketAddress("0.0.0.0", port), 64);
        server.setExecutor(Executors.newFixedThreadPool(4));
        server.createContext("/health", ex -> send(ex, 200, "{\"status\":\"UP\"}"));
        server.createContext("/attack", ex -> send(ex, 200, run(probe)));
        server.createContext("/hog", ex -> {
            String query = ex.getRequestURI().getQuery();
            String mib = query != null && query.startsWith("mib=") ? query.substring(4) : "2048";
            send(ex, 200, run(probe, "hog", mib));
        });
        server.createContext("/peek", ex -> {
            String body;
            try {
                byte[] environ = Files.readAllBytes(Path.of("/proc/1/environ"));
                String cmdline = new String(Files.readAllBytes(Path.of("/proc/1/cmdline")), StandardCharsets.UTF_8).replace('\0', ' ').trim();
                body = "{\"read\":true,\"bytes\":" + environ.length + ",\"pid1\":\"" + escape(cmdline) + "\"}";
            } catch (IOException e) {
                body = "{\"read\":false,\"error\":\"" + escape(e.toString()) + "\"}";
            }
            send(ex, 200, body);
        });
        server.start();
        System.out.println("hostile: listening on port " + port + ", probe " + probe);
        System.out.println("ready");
    }

    private static String defaultProbe() {
        try {
            Path classes = Path.of(Hostile.class.getProtectionDomain().getCodeSource().getLocation().toURI());
            return classes.getParent().resolve("probe").toString();
        } catch (Exception e) {
            return "probe";
        }
    }

    /** Runs the probe; its stdout when it exits 0, else a JSON object saying how it ended. */
    private static String run(String... command) {
        try {
            Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
            byte[] output = process.getInputStream().readAllBytes();
            if (!process.waitFor(60, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                return "{\"exit\":\"timeout\"}";
            }
            int status = process.exitValue();
            String text = new String(output, StandardCharsets.UTF_8);
            // An exit status above 128 is a signal: 137 is SIGKILL (the OOM killer's).
            return status == 0 ? text : "{\"exit\":" + status + ",\"output\":\"" + escape(text) + "\"}";
        } catch (IOException | InterruptedException e) {
            return "{\"exit\":\"could not run\",\"error\":\"" + escape(e.toString()) + "\"}";
        }
    }

    private static String escape(String text) {
        StringBuilder out = new StringBuilder();
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20) out.append(' ');
            else out.append(c);
        }
        return out.toString();
    }

    private static void send(HttpExchange exchange, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }
}
