package dev.kiln.samples.boot.testcrac;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A test-only CRaC backend for boot-petclinic's test.sh, never shipped. Selected with
 * {@code -Dorg.crac.Core.Compat=dev.kiln.samples.boot.testcrac} (and put on the boot class path
 * with {@code -Xbootclasspath/a:}, since {@code java -jar} ignores {@code -cp}): org.crac then
 * hands every registration to {@link #getGlobalContext()}. No process is checkpointed; the
 * callbacks run as a real checkpoint runs them: beforeCheckpoint in reverse order of registration
 * (as the JDK's global context does), afterRestore in order.
 *
 * <p>The test drives it on 127.0.0.1:{@code -Dtestcrac.port}, one command line per connection:
 * {@code checkpoint} runs every beforeCheckpoint, {@code restore} every afterRestore. The answer is
 * {@code ok} and one line per resource, or {@code failed} and the stack trace, so the test can look
 * at the process in between. java.base only: classes on the boot class path cannot see
 * jdk.httpserver.
 */
public final class Core {

    private static final Global GLOBAL = new Global();

    static {
        String port = System.getProperty("testcrac.port");
        if (port != null) {
            try {
                ServerSocket server = new ServerSocket(Integer.parseInt(port), 5, InetAddress.getLoopbackAddress());
                Thread t = new Thread(() -> serve(server), "testcrac");
                t.setDaemon(true);
                t.start();
            } catch (IOException e) {
                throw new IllegalStateException("testcrac: cannot listen on port " + port, e);
            }
        }
    }

    private Core() {}

    public static Context<Resource> getGlobalContext() {
        return GLOBAL;
    }

    public static void checkpointRestore() throws CheckpointException, RestoreException {
        GLOBAL.checkpoint();
        GLOBAL.restore();
    }

    private static void serve(ServerSocket server) {
        while (true) {
            try (Socket client = server.accept()) {
                String command = new BufferedReader(new InputStreamReader(client.getInputStream(), StandardCharsets.UTF_8)).readLine();
                String answer;
                try {
                    if ("checkpoint".equals(command)) {
                        answer = "ok\n" + GLOBAL.checkpoint();
                    } else if ("restore".equals(command)) {
                        answer = "ok\n" + GLOBAL.restore();
                    } else {
                        answer = "failed\nunknown command: " + command + "\n";
                    }
                } catch (Exception e) {
                    StringWriter trace = new StringWriter();
                    e.printStackTrace(new PrintWriter(trace));
                    answer = "failed\n" + trace;
                }
                OutputStream out = client.getOutputStream();
                out.write(answer.getBytes(StandardCharsets.UTF_8));
                out.flush();
            } catch (IOException e) {
                if (server.isClosed()) {
                    return;
                }
            }
        }
    }

    private static final class Global extends Context<Resource> {
        private final List<Resource> resources = new ArrayList<>();

        @Override
        public synchronized void register(Resource resource) {
            resources.add(resource);
        }

        synchronized String checkpoint() throws CheckpointException {
            StringBuilder done = new StringBuilder();
            for (int i = resources.size() - 1; i >= 0; i--) {
                Resource r = resources.get(i);
                try {
                    r.beforeCheckpoint(this);
                } catch (Exception e) {
                    throw new CheckpointException("beforeCheckpoint failed: " + r, e);
                }
                done.append("beforeCheckpoint ").append(r).append('\n');
            }
            return done.toString();
        }

        synchronized String restore() throws RestoreException {
            StringBuilder done = new StringBuilder();
            for (Resource r : resources) {
                try {
                    r.afterRestore(this);
                } catch (Exception e) {
                    throw new RestoreException("afterRestore failed: " + r, e);
                }
                done.append("afterRestore ").append(r).append('\n');
            }
            return done.toString();
        }

        @Override
        public void beforeCheckpoint(Context<? extends Resource> context) throws CheckpointException {
            checkpoint();
        }

        @Override
        public void afterRestore(Context<? extends Resource> context) throws RestoreException {
            restore();
        }
    }
}
