import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * Drives JVMs that run TestApp with kiln's agent through the real file + signal protocol, as kiln
 * does (PROTOCOL.md); "restore" happens in the same process (no CRIU here, see criu-roundtrip.sh).
 * Prints one line per check and "N passed, M failed" last; exits 1 on any failure.
 *   -Dtest.java=...      java binary for the JVMs under test
 *   -Dtest.agent=...     the agent jar;  -Dtest.cp=...  TestApp classes + crac-1.5.0.jar
 *   -Dtest.work=...      scratch directory
 *   args: scenarios to run (default: all), or "bench N ROUNDS"
 */
public class Driver {
    static int passed;
    static int failed;
    static final String JAVA = System.getProperty("test.java");
    static final Path WORK = Path.of(System.getProperty("test.work"));
    static final String TAG = System.getProperty("test.tag", "");

    static void check(String name, boolean ok, Object detail) {
        if (ok) {
            passed++;
            System.out.println("PASS " + TAG + name);
        } else {
            failed++;
            System.out.println("FAIL " + TAG + name + ": " + detail);
        }
    }

    static final class Jvm implements AutoCloseable {
        final Process process;
        final long pid;
        final Path dir;
        final Path events;

        Jvm(String name, List<String> prefix, List<String> props, String... args) throws IOException {
            this(name, prefix, props, System.getProperty("test.cp"), "TestApp", args);
        }

        Jvm(String name, List<String> prefix, List<String> props, String cp, String main, String[] args) throws IOException {
            Path base = WORK.resolve(name);
            deleteTree(base);
            dir = base.resolve("ctl");
            Files.createDirectories(dir);
            events = base.resolve("events");
            List<String> cmd = new ArrayList<>(prefix);
            cmd.add(JAVA);
            cmd.add("-XX:-UsePerfData");
            cmd.add("-Xshare:auto");
            cmd.add("-javaagent:" + System.getProperty("test.agent"));
            cmd.add("-Dkiln.agent.dir=" + dir);
            cmd.add("-Dtest.events=" + events);
            cmd.addAll(props);
            cmd.add("-cp");
            cmd.add(cp);
            cmd.add(main);
            cmd.addAll(Arrays.asList(args));
            ProcessBuilder pb = new ProcessBuilder(cmd);
            pb.redirectErrorStream(true);
            pb.redirectOutput(base.resolve("stdout").toFile());
            process = pb.start();
            pid = process.pid();
        }

        List<String> events() throws IOException {
            return Files.exists(events) ? Files.readAllLines(events) : List.of();
        }

        boolean has(String prefix) throws IOException {
            return events().stream().anyMatch(l -> l.startsWith(prefix));
        }

        String event(String prefix, long timeoutMs) throws Exception {
            long end = System.currentTimeMillis() + timeoutMs;
            do {
                for (String l : events()) {
                    if (l.startsWith(prefix)) {
                        return l;
                    }
                }
                Thread.sleep(5);
            } while (System.currentTimeMillis() < end && process.isAlive());
            return null;
        }

        /** Waits for one of the named files in the control dir; returns its name or null. */
        String file(long timeoutMs, String... names) throws Exception {
            long end = System.currentTimeMillis() + timeoutMs;
            do {
                for (String n : names) {
                    if (Files.exists(dir.resolve(n))) {
                        return n;
                    }
                }
                Thread.sleep(2);
            } while (System.currentTimeMillis() < end && process.isAlive());
            return null;
        }

        String read(String name) throws IOException {
            return Files.readString(dir.resolve(name));
        }

        void write(String name, String content) throws IOException {
            Path tmp = dir.resolve("." + name + ".driver-tmp");
            Files.writeString(tmp, content);
            Files.move(tmp, dir.resolve(name), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }

        void signal() throws Exception {
            int rc = new ProcessBuilder("kill", "-WINCH", Long.toString(pid)).inheritIO().start().waitFor();
            if (rc != 0) {
                throw new IllegalStateException("kill -WINCH " + pid + " failed");
            }
        }

        /** kiln's checkpoint request: checkpoint.request then a signal; waits for ready/failed. */
        String checkpoint() throws Exception {
            if (file(10_000, "agent.ready") == null) {
                throw new IllegalStateException("no agent.ready in " + dir);
            }
            Files.deleteIfExists(dir.resolve("checkpoint.ready"));
            Files.deleteIfExists(dir.resolve("checkpoint.failed"));
            write("checkpoint.request", "");
            signal();
            return file(10_000, "checkpoint.ready", "checkpoint.failed");
        }

        /** kiln's restore request: restore.request then a signal; waits for done/failed. */
        String restore(String request) throws Exception {
            Files.deleteIfExists(dir.resolve("restore.done"));
            Files.deleteIfExists(dir.resolve("restore.failed"));
            write("restore.request", request);
            signal();
            return file(10_000, "restore.done", "restore.failed");
        }

        @Override
        public void close() throws Exception {
            process.destroyForcibly();
            process.waitFor();
        }
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var s = Files.walk(p)) {
            for (Path q : s.sorted(Collections.reverseOrder()).toList()) {
                Files.delete(q);
            }
        }
    }

    /** The "before X"/"after X" names in the order they happened. */
    static List<String> callbacks(List<String> events, String kind) {
        List<String> out = new ArrayList<>();
        for (String l : events) {
            if (l.startsWith(kind + " ")) {
                out.add(l.split(" ")[1]);
            }
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        Files.createDirectories(WORK);
        List<String> scenarios = args.length > 0 ? List.of(args)
            : List.of("order", "weak", "fail", "block", "app", "identity");
        if (scenarios.get(0).equals("bench")) {
            bench(Integer.parseInt(args[1]), Integer.parseInt(args[2]));
            return;
        }
        for (String s : scenarios) {
            try {
                switch (s) {
                    case "order" -> order();
                    case "weak" -> weak();
                    case "fail" -> fail();
                    case "block" -> block();
                    case "app" -> app();
                    case "identity" -> identity();
                    case "spring" -> spring();
                    case "order-child" -> orderChild();
                    case "io-stacks" -> ioStacks();
                    case "trim" -> trim();
                    default -> throw new IllegalArgumentException(s);
                }
            } catch (Exception e) {
                check(s + " ran", false, e);
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    static void order() throws Exception {
        try (Jvm j = new Jvm("order", List.of(), List.of(), "order")) {
            order(j, "order: ");
        }
    }

    /** org.crac and the app in a child class loader (as in a Spring Boot executable jar). */
    static void orderChild() throws Exception {
        String launcher = System.getProperty("test.launcher");
        try (Jvm j = new Jvm("order-child", List.of(), List.of(), launcher, "ChildLoaderMain",
            new String[] {System.getProperty("test.cp"), "TestApp", "order"})) {
            check("child loader: org.crac loaded by the child loader", j.event("crac-loader=", 10_000) != null
                && j.has("crac-loader=app"), j.events());
            order(j, "child loader: ");
        }
    }

    static void order(Jvm j, String tag) throws Exception {
        {
            check(tag + "agent.ready", j.file(10_000, "agent.ready") != null, j.dir);
            j.event("main-done", 10_000);
            check(tag + "premain set org.crac.Core.Compat", j.has("compat=dev.kiln.crac"), j.events());
            check(tag + "agent.ready names SIGWINCH", j.read("agent.ready").contains("signal=SIGWINCH"), j.read("agent.ready"));
            String r = j.checkpoint();
            check(tag + "checkpoint.ready", "checkpoint.ready".equals(r), r);
            List<String> ev = j.events();
            check(tag + "beforeCheckpoint in reverse registration order, nested context at its turn",
                callbacks(ev, "before").equals(List.of("C", "E", "D", "B", "A")), callbacks(ev, "before"));
            check(tag + "no afterRestore before the restore request", callbacks(ev, "after").isEmpty(), ev);
            r = j.restore("instance=copy-1\nhostname=" + hostname() + "\n");
            check(tag + "restore.done", "restore.done".equals(r), r);
            ev = j.events();
            check(tag + "afterRestore in registration order", callbacks(ev, "after").equals(List.of("A", "B", "D", "E", "C")),
                callbacks(ev, "after"));
            String beforeThread = threadOf(ev, "before A");
            check(tag + "one thread runs both phases (the coordinator)",
                beforeThread != null && beforeThread.equals(threadOf(ev, "after A")) && beforeThread.equals("kiln-crac-coordinator"),
                beforeThread + " / " + threadOf(ev, "after A"));
            check(tag + "kiln.instance set before afterRestore", ev.stream().anyMatch(l -> l.startsWith("after A ") && l.endsWith("instance=copy-1")), ev);
            Map<String, String> done = props(j.read("restore.done"));
            check(tag + "restore.done reports instance and resources", "copy-1".equals(done.get("instance")) && "4".equals(done.get("resources")), done);
            check(tag + "request files consumed", !Files.exists(j.dir.resolve("restore.request")) && !Files.exists(j.dir.resolve("checkpoint.request")), j.dir);
            // a second cycle in the same process works the same way
            r = j.checkpoint();
            String r2 = j.restore("instance=copy-2\n");
            check(tag + "second cycle", "checkpoint.ready".equals(r) && "restore.done".equals(r2)
                && callbacks(j.events(), "after").size() == 10, j.events());
        }
    }

    /** kiln's trim.request in a restored JVM: the JVM's System.trim_native_heap, in process. */
    static void trim() throws Exception {
        try (Jvm j = new Jvm("trim", List.of(), List.of(), "order")) {
            String r = j.checkpoint();
            check("trim: checkpoint.ready", "checkpoint.ready".equals(r), r);
            r = j.restore("instance=copy-1\n");
            check("trim: restore.done", "restore.done".equals(r), r);
            Map<String, String> done = props(j.read("restore.done"));
            check("trim: restore.done says trim.request is answered", "1".equals(done.get("trim")), done);
            for (int round = 1; round <= 2; round++) {
                Files.deleteIfExists(j.dir.resolve("trim.done"));
                j.write("trim.request", "");
                j.signal();
                r = j.file(10_000, "trim.done");
                Map<String, String> trimmed = r == null ? Map.of() : props(j.read("trim.done"));
                check("trim: trim.done carries the JVM's report (round " + round + ")",
                    trimmed.getOrDefault("result", "").startsWith("Trim native heap:") && !trimmed.containsKey("error"), trimmed);
                check("trim: trim.request consumed (round " + round + ")", !Files.exists(j.dir.resolve("trim.request")), j.dir);
            }
            r = j.checkpoint();
            check("trim: a checkpoint after a trim", "checkpoint.ready".equals(r), r);
        }
    }

    /** The JSON object of io-stacks.json that contains {@code key}, as text ("" if none). */
    static String entry(String json, String key) {
        int at = json.indexOf(key);
        if (at < 0) {
            return "";
        }
        int start = json.lastIndexOf('{', at);
        int end = json.indexOf("]}", at);
        return json.substring(start, end < 0 ? json.length() : end + 2);
    }

    /** -Dkiln.agent.io-stacks=true: the stack of the first I/O of each socket and file, at the checkpoint. */
    static void ioStacks() throws Exception {
        // JFR's repository in the test's work directory: by default an empty /tmp/DATE_PID stays behind.
        Path repository = WORK.resolve("io-stacks-jfr");
        Files.createDirectories(repository);
        try (Jvm j = new Jvm("io-stacks", List.of(), List.of("-Dkiln.agent.io-stacks=true",
            "-XX:FlightRecorderOptions:repository=" + repository), "io")) {
            String portLine = j.event("io-port=", 20_000);
            String fileLine = j.event("io-file=", 1_000);
            check("io-stacks: the app opened its sockets and file", portLine != null && fileLine != null, j.events());
            if (portLine == null || fileLine == null) {
                return;
            }
            String port = portLine.substring("io-port=".length());
            String path = fileLine.substring("io-file=".length());
            String r = j.checkpoint();
            check("io-stacks: checkpoint.ready", "checkpoint.ready".equals(r), r);
            check("io-stacks: io-stacks.json written before checkpoint.ready", Files.exists(j.dir.resolve("io-stacks.json")), j.dir);
            String json = Files.exists(j.dir.resolve("io-stacks.json")) ? j.read("io-stacks.json") : "";
            String socket = entry(json, "\"address\":\"127.0.0.1\",\"port\":" + port + ",");
            check("io-stacks: the socket to 127.0.0.1:" + port + " is listed", !socket.isEmpty(), json);
            check("io-stacks: its stack is the one that opened it (first I/O), not later traffic",
                socket.contains("\"TestApp$Database.openConnection:") && !socket.contains("TestApp$Later"), socket);
            check("io-stacks: the JDK's own I/O frames are dropped from the top",
                socket.contains("\"stack\":[\"TestApp$Database.openConnection:"), socket);
            String file = entry(json, "\"path\":" + "\"" + path + "\"");
            check("io-stacks: the file written is listed with its opener", file.contains("TestApp$LogWriter.open"), json);
            j.restore("instance=io\n");
        }
        try (Jvm j = new Jvm("io-stacks-off", List.of(), List.of(), "io")) {
            j.event("io-port=", 20_000);
            String r = j.checkpoint();
            check("io-stacks: off unless asked (no io-stacks.json)", "checkpoint.ready".equals(r)
                && !Files.exists(j.dir.resolve("io-stacks.json")), j.dir);
            j.restore("instance=io\n");
        }
    }

    static String threadOf(List<String> ev, String prefix) {
        for (String l : ev) {
            if (l.startsWith(prefix + " ")) {
                int i = l.indexOf("thread=");
                return l.substring(i + 7).split(" ")[0];
            }
        }
        return null;
    }

    static Map<String, String> props(String text) {
        Map<String, String> m = new java.util.LinkedHashMap<>();
        for (String l : text.split("\n")) {
            int i = l.indexOf('=');
            if (i > 0) {
                m.put(l.substring(0, i), l.substring(i + 1));
            }
        }
        return m;
    }

    static String hostname() throws IOException {
        return Files.readString(Path.of("/proc/sys/kernel/hostname")).strip();
    }

    static void weak() throws Exception {
        try (Jvm j = new Jvm("weak", List.of(), List.of(), "weak")) {
            j.event("main-done", 10_000);
            check("weak: the dropped resource was collected although registered", j.has("dropped-collected=true"), j.events());
            String r = j.checkpoint();
            j.restore("instance=w\n");
            List<String> b = callbacks(j.events(), "before");
            check("weak: only the live resource is notified", "checkpoint.ready".equals(r) && b.equals(List.of("kept")), b);
        }
    }

    static void fail() throws Exception {
        try (Jvm j = new Jvm("fail", List.of(), List.of(), "fail")) {
            j.event("main-done", 10_000);
            String r = j.checkpoint();
            check("fail: checkpoint.failed, no checkpoint.ready", "checkpoint.failed".equals(r)
                && !Files.exists(j.dir.resolve("checkpoint.ready")), r);
            String json = j.read("checkpoint.failed");
            check("fail: every failure reported with class and message",
                json.contains("\"java.io.IOException\"") && json.contains("c-fail")
                && json.contains("\"java.lang.IllegalStateException\"") && json.contains("b-fail")
                && json.contains("\"java.lang.UnsupportedOperationException\"") && json.contains("d-fail")
                && json.contains("\"exception\":\"dev.kiln.crac.CheckpointException\""), json);
            check("fail: nested context's CheckpointException flattened (3 errors, none a CheckpointException)",
                count(json, "{\"class\":") == 3 && !json.contains("{\"class\":\"dev.kiln.crac.CheckpointException\""), json);
            check("fail: stacks included", json.contains("at TestApp"), json);
            List<String> ev = j.events();
            check("fail: every beforeCheckpoint ran despite failures", callbacks(ev, "before").equals(List.of("C", "D", "B", "A")), ev);
            check("fail: afterRestore ran in the original for them, in order", callbacks(ev, "after").equals(List.of("A", "B", "D", "C")), ev);
            // the original goes on: a later checkpoint is possible (and fails the same way)
            j.dir.resolve("checkpoint.failed").toFile().delete();
            check("fail: a second request is served", "checkpoint.failed".equals(j.checkpoint()), j.dir);
        }
    }

    static int count(String s, String sub) {
        int n = 0;
        for (int i = s.indexOf(sub); i >= 0; i = s.indexOf(sub, i + 1)) {
            n++;
        }
        return n;
    }

    static void block() throws Exception {
        try (Jvm j = new Jvm("block", List.of(), List.of(), "block")) {
            j.event("main-done", 10_000);
            String r = j.checkpoint();
            check("block: checkpoint.ready", "checkpoint.ready".equals(r), r);
            check("block: registration from the checkpoint thread returns at once", j.has("self-registered"), j.events());
            check("block: registration from another thread waits", j.has("other-alive-after-300ms=true") && j.has("other-registering")
                && !j.has("other-registered"), j.events());
            Thread.sleep(200);
            check("block: ... still waiting while the process is checkpointed", !j.has("other-registered"), j.events());
            r = j.restore("instance=b\n");
            check("block: the waiting registration goes on after the restore", j.event("other-registered", 5000) != null, j.events());
            List<String> ev = j.events();
            check("block: resources registered during the checkpoint are not in this cycle",
                callbacks(ev, "before").equals(List.of("B", "A")) && callbacks(ev, "after").equals(List.of("A", "B")), ev);
            Files.writeString(j.events, "");
            r = j.checkpoint();
            j.restore("instance=b2\n");
            ev = j.events();
            List<String> b = callbacks(ev, "before");
            check("block: ... they are in the next one (after A and B, in registration order)",
                b.size() == 4 && b.subList(2, 4).equals(List.of("B", "A")) && b.containsAll(List.of("late-self", "late-other"))
                && b.indexOf("late-self") < 2, ev);
            // the second cycle's A registers late-self and another late-other again: no deadlock
            j.event("other-registered", 5000);
        }
    }

    static void app() throws Exception {
        try (Jvm j = new Jvm("app", List.of(), List.of(), "app")) {
            String f = j.file(10_000, "checkpoint.app-request");
            check("app: Core.checkpointRestore() writes checkpoint.app-request", f != null, j.dir);
            String r = j.file(10_000, "checkpoint.ready", "checkpoint.failed");
            check("app: checkpoint.ready", "checkpoint.ready".equals(r), r);
            List<String> ev = j.events();
            check("app: callbacks ran on the calling thread", "main".equals(threadOf(ev, "before A")), ev);
            check("app: recursive checkpointRestore from a callback refused",
                j.has("recursive=org.crac.CheckpointException [java.lang.IllegalStateException: Recursive checkpoint is not allowed]"), ev);
            Thread.sleep(200);
            check("app: the caller stays blocked until restore.request", !j.has("cr1="), j.events());
            r = j.restore("instance=app-1\n");
            check("app: restore.failed (one afterRestore failed)", "restore.failed".equals(r), r);
            check("app: restore.failed names the failure", j.read("restore.failed").contains("after-fail"), j.read("restore.failed"));
            String cr1 = j.event("cr1=", 5000);
            check("app: caller gets org.crac.RestoreException with the failure suppressed, in the restored identity",
                cr1 != null && cr1.startsWith("cr1=org.crac.RestoreException suppressed=[java.lang.IllegalStateException: after-fail]")
                && cr1.endsWith("instance=app-1"), cr1);
            check("app: same thread after restore", "main".equals(threadOf(j.events(), "after A")), j.events());
            // second call: the dump fails; kiln tells the original through restore.request
            r = j.file(10_000, "checkpoint.ready");
            Files.writeString(j.events, "");
            r = j.restore("instance=app-0\ncheckpoint.error=criu dump exited 1\n");
            String cr2 = j.event("cr2=", 5000);
            check("app: failed dump -> caller gets CheckpointException naming it",
                cr2 != null && cr2.startsWith("cr2=org.crac.CheckpointException") && cr2.contains("checkpoint failed: criu dump exited 1"), cr2);
            check("app: failed dump -> afterRestore ran in the original", callbacks(j.events(), "after").equals(List.of("A", "R", "F")), j.events());
        }
    }

    static void identity() throws Exception {
        Path hosts = WORK.resolve("identity-hosts");
        Files.createDirectories(WORK);
        Files.writeString(hosts, "127.0.0.1 localhost kiln-orig\n127.0.0.2 svc.kiln.test\n");
        List<String> prefix = List.of("unshare", "--uts", "sh", "-c", "hostname kiln-orig && exec \"$0\" \"$@\"");
        try (Jvm j = new Jvm("identity", prefix, List.of("-Djdk.net.hosts.file=" + hosts), "identity")) {
            j.event("main-done", 10_000);
            String r = j.checkpoint();
            check("identity: checkpoint.ready", "checkpoint.ready".equals(r), r);
            check("identity: original's name and lookup", j.has("before-localhost=kiln-orig") && j.has("before-svc=127.0.0.2"), j.events());
            // what kiln does for a copy: its own UTS hostname, new /etc/hosts, then the request
            int rc = new ProcessBuilder("nsenter", "-t", Long.toString(j.pid), "-u", "hostname", "kiln-copy-1").inheritIO().start().waitFor();
            Path tmp = WORK.resolve("identity-hosts.tmp");
            Files.writeString(tmp, "127.0.0.1 localhost kiln-copy-1\n127.0.0.3 svc.kiln.test\n");
            Files.move(tmp, hosts, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            r = j.restore("instance=copy-1\nhostname=kiln-copy-1\n");
            check("identity: restore.done", "restore.done".equals(r) && rc == 0, r + " rc=" + rc);
            check("identity: kiln.instance set", j.has("after-instance=copy-1"), j.events());
            check("identity: getLocalHost() answers the copy's hostname (JDK cache cleared)", j.has("after-localhost=kiln-copy-1"), j.events());
            check("identity: DNS cache flushed (new address within the 30 s ttl)", j.has("after-svc=127.0.0.3"), j.events());
            check("identity: registered SHA1PRNG reseeded (differs from its unregistered twin)", j.has("sha1prng-differs=true"), j.events());
            String done = j.read("restore.done");
            check("identity: no warnings (every JDK internal reached)", !done.contains("warning."), done);
            // a copy whose kernel hostname kiln could not set: the name is pinned in the JDK
            Files.writeString(j.events, "");
            j.checkpoint();
            r = j.restore("instance=copy-2\nhostname=kiln-copy-2\n");
            check("identity: getLocalHost() pinned to the requested name when the kernel's differs",
                j.event("after-localhost=", 5000) != null && j.has("after-localhost=kiln-copy-2"), j.events());
            check("identity: ... and restore.done says so", j.read("restore.done").contains("pinned kiln-copy-2"), j.read("restore.done"));
        }
    }

    /** A real Spring Framework context with -Dspring.context.checkpoint=onRefresh, then a kiln checkpoint. */
    static void spring() throws Exception {
        try (Jvm j = new Jvm("spring", List.of(), List.of("-Dspring.context.checkpoint=onRefresh"),
            System.getProperty("test.spring.cp"), "SpringApp", new String[0])) {
            check("spring: refresh triggers an app checkpoint (checkpoint.app-request)", j.file(60_000, "checkpoint.app-request") != null, j.dir);
            String r = j.file(30_000, "checkpoint.ready", "checkpoint.failed");
            check("spring: checkpoint.ready", "checkpoint.ready".equals(r), r);
            Thread.sleep(200);
            check("spring: refresh blocked at the checkpoint, lifecycle bean not started yet",
                j.has("refreshing") && !j.has("start") && !j.has("refreshed"), j.events());
            r = j.restore("instance=spring-1\nhostname=" + hostname() + "\n");
            check("spring: restore.done", "restore.done".equals(r), r);
            check("spring: refresh completes after the restore, bean started in the copy's identity",
                j.event("refreshed", 30_000) != null && j.has("start thread=main instance=spring-1") && j.has("refreshed instance=spring-1"), j.events());
            // an on-demand checkpoint of the running context: Spring stops and restarts the bean
            Files.writeString(j.events, "");
            r = j.checkpoint();
            check("spring: kiln checkpoint of the running context stops the bean", "checkpoint.ready".equals(r) && j.has("stop"), j.events());
            r = j.restore("instance=spring-2\n");
            check("spring: ... and restarts it after the restore", "restore.done".equals(r)
                && j.event("start", 10_000) != null && j.has("start thread=kiln-crac-coordinator instance=spring-2"), j.events());
        }
    }

    /** Signal -> restore.done (and checkpoint.request -> checkpoint.ready), ROUNDS cycles, n resources. */
    static void bench(int n, int rounds) throws Exception {
        try (Jvm j = new Jvm("bench", List.of(), List.of(), "bench", Integer.toString(n))) {
            j.event("main-done", 10_000);
            List<Double> restore = new ArrayList<>();
            List<Double> ckpt = new ArrayList<>();
            List<Double> agentRestore = new ArrayList<>();
            for (int i = 0; i < rounds; i++) {
                j.file(10_000, "agent.ready");
                long t0 = System.nanoTime();
                Files.deleteIfExists(j.dir.resolve("checkpoint.ready"));
                j.write("checkpoint.request", "");
                j.signal();
                String r = j.file(10_000, "checkpoint.ready");
                long t1 = System.nanoTime();
                Files.deleteIfExists(j.dir.resolve("restore.done"));
                j.write("restore.request", "instance=bench-" + i + "\nhostname=" + hostname() + "\n");
                long t2 = System.nanoTime();
                j.signal();
                r = j.file(10_000, "restore.done");
                long t3 = System.nanoTime();
                if (r == null) {
                    throw new IllegalStateException("no restore.done in round " + i);
                }
                ckpt.add((t1 - t0) / 1e6);
                restore.add((t3 - t2) / 1e6);
                agentRestore.add(Long.parseLong(props(j.read("restore.done")).get("elapsed_us")) / 1e3);
            }
            System.out.printf("bench: %d resources, %d rounds (signal sent with kill(1), files polled every 2 ms)%n", n, rounds);
            System.out.println("bench: checkpoint.request+signal -> checkpoint.ready  " + stats(ckpt));
            System.out.println("bench: restore.request+signal -> restore.done        " + stats(restore));
            System.out.println("bench: in the agent, signal -> restore.done written   " + stats(agentRestore));
        }
    }

    static String stats(List<Double> v) {
        List<Double> s = new ArrayList<>(v);
        Collections.sort(s);
        return String.format("median %.2f ms, p90 %.2f ms, min %.2f ms, max %.2f ms",
            s.get(s.size() / 2), s.get((int) Math.min(s.size() - 1, Math.round(s.size() * 0.9))), s.get(0), s.get(s.size() - 1));
    }
}
