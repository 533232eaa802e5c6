import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.springframework.context.SmartLifecycle;
import org.springframework.context.support.GenericApplicationContext;

/**
 * A real Spring Framework 6.2 context (jars from the Spring Boot 3 set) with one SmartLifecycle
 * bean. Run with -Dspring.context.checkpoint=onRefresh: Spring's DefaultLifecycleProcessor calls
 * org.crac.Core.checkpointRestore() during refresh, before it starts the lifecycle beans, and stops /
 * restarts them around every later checkpoint through its own org.crac resource.
 * Events go to -Dtest.events, one line each (file opened and closed per line).
 */
public class SpringApp {
    static Path events;

    static synchronized void event(String line) {
        try {
            Files.write(events, (line + "\n").getBytes(StandardCharsets.UTF_8),
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    public static class Worker implements SmartLifecycle {
        private volatile boolean running;

        @Override
        public void start() {
            running = true;
            event("start thread=" + Thread.currentThread().getName() + " instance=" + System.getProperty("kiln.instance"));
        }

        @Override
        public void stop() {
            running = false;
            event("stop thread=" + Thread.currentThread().getName());
        }

        @Override
        public boolean isRunning() {
            return running;
        }
    }

    public static void main(String[] args) throws Exception {
        events = Path.of(System.getProperty("test.events"));
        GenericApplicationContext ctx = new GenericApplicationContext();
        ctx.registerBean(Worker.class);
        event("refreshing");
        ctx.refresh();
        event("refreshed instance=" + System.getProperty("kiln.instance"));
        Thread.sleep(Long.MAX_VALUE);
    }
}
