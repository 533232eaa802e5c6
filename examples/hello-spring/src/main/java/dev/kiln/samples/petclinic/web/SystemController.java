package dev.kiln.samples.petclinic.web;

import com.codahale.metrics.MetricRegistry;
import dev.kiln.samples.petclinic.AppState;
import dev.kiln.samples.petclinic.service.ClinicService;
import org.springframework.http.HttpStatus;
import org.springframework.http.ResponseEntity;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Instant;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.UUID;

/**
 * Health and instance identity. A snapshot runtime restores many copies of one process, so
 * nothing here may be computed once and kept: hostname and pid are read from /proc per request.
 */
@RestController
public class SystemController {

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private final AppState state;
    private final ClinicService clinic;
    private final MetricRegistry metrics;

    public SystemController(AppState state, ClinicService clinic, MetricRegistry metrics) {
        this.state = state;
        this.clinic = clinic;
        this.metrics = metrics;
    }

    /** UP only once the database is seeded and the server is listening (see Application). */
    @GetMapping("/health")
    public ResponseEntity<Map<String, String>> health() {
        if (state.isReady()) {
            return ResponseEntity.ok(Collections.singletonMap("status", "UP"));
        }
        return ResponseEntity.status(HttpStatus.SERVICE_UNAVAILABLE).body(Collections.singletonMap("status", "STARTING"));
    }

    @GetMapping("/greet")
    public Map<String, Object> greet(@RequestParam(defaultValue = "world") String name) {
        Map<String, Object> body = new LinkedHashMap<String, Object>();
        body.put("message", "Hello, " + name + "!");
        body.put("app", "hello-spring");
        body.put("owners", clinic.countOwners());
        return body;
    }

    @GetMapping("/id")
    public Map<String, Object> id() {
        long now = System.currentTimeMillis();
        Map<String, Object> body = new LinkedHashMap<String, Object>();
        body.put("app", "hello-spring");
        body.put("hostname", hostname());
        body.put("pid", pid());
        body.put("startedAt", Instant.ofEpochMilli(state.startedAtMillis()).toString());
        body.put("uptimeMs", now - state.startedAtMillis());
        body.put("requests", state.requests());
        return body;
    }

    @GetMapping("/random")
    public Map<String, Object> random() {
        byte[] bytes = new byte[16];
        state.secureRandom().nextBytes(bytes);
        Map<String, Object> body = new LinkedHashMap<String, Object>();
        body.put("uuid", UUID.randomUUID().toString());
        body.put("secureRandom", hex(bytes));
        body.put("algorithm", state.secureRandom().getAlgorithm());
        return body;
    }

    /**
     * The metric registry as JSON: {"version","gauges","counters","histograms","meters","timers"}.
     * Gauges (JVM memory, GC, threads, the connection pool...) are read now, in this process.
     */
    @GetMapping("/metrics")
    public MetricRegistry metrics() {
        return metrics;
    }

    // Not InetAddress.getLocalHost() or the RuntimeMXBean name: the JDK caches both.
    static String hostname() {
        try {
            return new String(Files.readAllBytes(Paths.get("/proc/sys/kernel/hostname")), StandardCharsets.UTF_8).trim();
        } catch (IOException e) {
            return "unknown";
        }
    }

    static long pid() {
        try {
            return Long.parseLong(Files.readSymbolicLink(Paths.get("/proc/self")).toString());
        } catch (IOException | RuntimeException e) {
            String name = ManagementFactory.getRuntimeMXBean().getName();
            return Long.parseLong(name.substring(0, name.indexOf('@')));
        }
    }

    private static String hex(byte[] bytes) {
        char[] out = new char[bytes.length * 2];
        for (int i = 0; i < bytes.length; i++) {
            out[2 * i] = HEX[(bytes[i] >> 4) & 0xf];
            out[2 * i + 1] = HEX[bytes[i] & 0xf];
        }
        return new String(out);
    }
}
