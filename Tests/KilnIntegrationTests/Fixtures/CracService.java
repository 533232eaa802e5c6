import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.concurrent.atomic.AtomicInteger;
import org.crac.Context;
import org.crac.Core;
import org.crac.Resource;

/**
 * kiln's integration-test service for the CRaC agent (compiled by the test against the real
 * org.crac jar). Its one Resource counts its callbacks, visible on GET /state:
 *   before=N after=N instance=<kiln.instance seen in afterRestore> host=<InetAddress.getLocalHost()>
 *   random=<16 bytes of a SHA1PRNG made for the request>
 * CRAC_MODE: ok (default); throw-before (beforeCheckpoint throws); throw-after (afterRestore
 * throws); connect (keeps a TCP connection to a listener of its own on 127.0.0.1:9099 open);
 * on-request (asks for its own checkpoint, Core.checkpointRestore(), once it listens).
 */
public final class CracService {
    static final AtomicInteger before = new AtomicInteger();
    static final AtomicInteger after = new AtomicInteger();
    static volatile String restoredAs = "-";
    static final String mode = System.getenv().getOrDefault("CRAC_MODE", "ok");
    // Held strongly: org.crac holds resources weakly.
    static final Resource resource = new Resource() {
        @Override
        public void beforeCheckpoint(Context<? extends Resource> context) {
            before.incrementAndGet();
            System.out.println("fixture: beforeCheckpoint ran (mode " + mode + ")");
            if (mode.equals("throw-before")) {
                throw new IllegalStateException("fixture refuses the checkpoint");
            }
        }

        @Override
        public void afterRestore(Context<? extends Resource> context) {
            after.incrementAndGet();
            restoredAs = System.getProperty("kiln.instance", "-");
            System.out.println("fixture: afterRestore ran as " + restoredAs);
            if (mode.equals("throw-after")) {
                throw new IllegalStateException("fixture refuses the restore");
            }
        }
    };
    static Socket client;
    static Socket accepted;

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        Core.getGlobalContext().register(resource);
        // The generator seeders exist before the checkpoint, so a copy that is not reseeded
        // would repeat the original's numbers.
        SecureRandom.getInstance("SHA1PRNG").nextBytes(new byte[16]);
        if (mode.equals("connect")) {
            ServerSocket listener = new ServerSocket(9099, 1, InetAddress.getByName("127.0.0.1"));
            client = new Socket("127.0.0.1", 9099);
            accepted = listener.accept();
            listener.close();
        }
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/health", exchange -> reply(exchange, "ok"));
        server.createContext("/state", exchange -> {
            String host;
            try {
                host = InetAddress.getLocalHost().getHostName();
            } catch (IOException e) {
                host = "error:" + e;
            }
            byte[] random = new byte[16];
            try {
                SecureRandom.getInstance("SHA1PRNG").nextBytes(random);
            } catch (Exception e) {
                throw new IOException(e);
            }
            reply(exchange, "before=" + before.get() + " after=" + after.get() + " instance=" + restoredAs + " host=" + host
                + " random=" + HexFormat.of().formatHex(random));
        });
        server.start();
        System.out.println("fixture: listening on " + port + " (mode " + mode + ")");
        if (mode.equals("on-request")) {
            Core.checkpointRestore();
            System.out.println("fixture: checkpointRestore returned in " + System.getProperty("kiln.instance"));
        }
    }

    static void reply(com.sun.net.httpserver.HttpExchange exchange, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.sendResponseHeaders(200, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }
}
