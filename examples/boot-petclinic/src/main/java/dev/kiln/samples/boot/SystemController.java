package dev.kiln.samples.boot;

import org.springframework.http.HttpStatus;
import org.springframework.http.ResponseEntity;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;

import java.io.IOException;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.UUID;

/**
 * Health and instance identity. A snapshot runtime restores many copies of one process, so nothing
 * here is computed once and kept: hostname and pid are read per request.
 */
@RestController
public class SystemController {

    private final AppState state;
    private final ClinicRepository clinic;

    public SystemController(AppState state, ClinicRepository clinic) {
        this.state = state;
        this.clinic = clinic;
    }

    /** UP once Spring Boot has reported the application ready (ApplicationReadyEvent). */
    @GetMapping("/health")
    public ResponseEntity<Map<String, String>> health() {
        return state.isReady()
                ? ResponseEntity.ok(Map.of("status", "UP"))
                : ResponseEntity.status(HttpStatus.SERVICE_UNAVAILABLE).body(Map.of("status", "STARTING"));
    }

    @GetMapping("/greet")
    public Map<String, Object> greet(@RequestParam(defaultValue = "world") String name) {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("message", "Hello, " + name + "!");
        body.put("app", "boot-petclinic");
        body.put("owners", clinic.countOwners(""));
        return body;
    }

    @GetMapping("/id")
    public Map<String, Object> id() {
        long now = System.currentTimeMillis();
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("app", "boot-petclinic");
        body.put("hostname", hostname());
        body.put("pid", pid());
        body.put("startedAt", Instant.ofEpochMilli(state.startedAtMillis()).toString());
        body.put("uptimeMs", now - state.startedAtMillis());
        body.put("requests", state.requests());
        // What the JDK says, for comparison: it may cache the name, so a restored copy can differ
        // from "hostname" above.
        body.put("localHost", localHost());
        body.put("instance", System.getProperty("kiln.instance"));
        return body;
    }

    @GetMapping("/random")
    public Map<String, Object> random() {
        byte[] bytes = new byte[16];
        state.secureRandom().nextBytes(bytes);
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("uuid", UUID.randomUUID().toString());
        body.put("secureRandom", HexFormat.of().formatHex(bytes));
        body.put("algorithm", state.secureRandom().getAlgorithm());
        return body;
    }

    // Not InetAddress.getLocalHost(): the JDK caches it, a restored copy would report the old name.
    static String hostname() {
        try {
            return Files.readString(Path.of("/proc/sys/kernel/hostname"), StandardCharsets.UTF_8).trim();
        } catch (IOException e) {
            return "unknown";
        }
    }

    // Not ProcessHandle.current(): the JDK keeps the pid it found at class initialisation.
    static long pid() {
        try {
            return Long.parseLong(Files.readSymbolicLink(Path.of("/proc/self")).toString());
        } catch (IOException | RuntimeException e) {
            return ProcessHandle.current().pid();
        }
    }

    static String localHost() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (UnknownHostException e) {
            return null;
        }
    }
}
