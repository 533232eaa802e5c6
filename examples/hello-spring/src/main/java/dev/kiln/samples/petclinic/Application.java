package dev.kiln.samples.petclinic;

import dev.kiln.samples.petclinic.config.DataConfig;
import dev.kiln.samples.petclinic.config.ProxyConfig;
import dev.kiln.samples.petclinic.config.WebConfig;
import dev.kiln.samples.petclinic.db.DatabaseInitializer;
import dev.kiln.samples.petclinic.web.RequestCountingFilter;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.FilterHolder;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.web.context.support.AnnotationConfigWebApplicationContext;
import org.springframework.web.servlet.DispatcherServlet;

import javax.servlet.DispatcherType;
import java.lang.management.ManagementFactory;
import java.util.EnumSet;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Petclinic REST service: Spring MVC on embedded Jetty over an in-memory H2 database.
 *
 * <p>Two contexts, as in a classic Spring web application: a root context with the data layer
 * and services, refreshed (and the database seeded) before the server exists, and a web context
 * for the DispatcherServlet, refreshed while Jetty starts and before it opens its port. So the
 * port only accepts once everything is initialised.
 */
public final class Application {

    // java.util.logging holds loggers weakly; keep the configured ones alive.
    private static final Logger[] QUIETED = {Logger.getLogger("org.springframework"), Logger.getLogger("org.h2")};
    // Warns about every unmapped URL; probes and scanners would fill the log with it.
    private static final Logger PAGE_NOT_FOUND = Logger.getLogger("org.springframework.web.servlet.PageNotFound");

    private Application() {
    }

    public static void main(String[] args) throws Exception {
        long startedAt = System.currentTimeMillis();
        long startNanos = System.nanoTime();
        String randomAlgorithm = System.getenv("SECURE_RANDOM_ALGORITHM");
        AppState state = new AppState(startedAt, startNanos,
                randomAlgorithm == null || randomAlgorithm.isEmpty() ? null : randomAlgorithm);
        configureLogging();
        int port = port();

        AnnotationConfigApplicationContext root = new AnnotationConfigApplicationContext();
        root.getBeanFactory().registerSingleton("appState", state);
        root.register(DataConfig.class, ProxyConfig.class);
        root.scan("dev.kiln.samples.petclinic.repository", "dev.kiln.samples.petclinic.service",
                "dev.kiln.samples.petclinic.db");
        root.refresh();

        AnnotationConfigWebApplicationContext web = new AnnotationConfigWebApplicationContext();
        web.setParent(root);
        web.register(WebConfig.class);
        web.scan("dev.kiln.samples.petclinic.web");

        DispatcherServlet dispatcher = new DispatcherServlet(web);
        // Unknown paths raise NoHandlerFoundException, which the API answers in JSON like any error.
        dispatcher.setThrowExceptionIfNoHandlerFound(true);
        ServletHolder dispatcherHolder = new ServletHolder("dispatcher", dispatcher);
        dispatcherHolder.setInitOrder(1); // refresh the web context during server.start(), not on the first request

        ServletContextHandler handler = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
        handler.setContextPath("/");
        handler.addFilter(new FilterHolder(new RequestCountingFilter(state)), "/*", EnumSet.of(DispatcherType.REQUEST));
        handler.addServlet(dispatcherHolder, "/");

        QueuedThreadPool threads = new QueuedThreadPool(50, 4);
        threads.setName("http");
        Server server = new Server(threads);
        ServerConnector connector = new ServerConnector(server, 1, 1);
        connector.setHost("0.0.0.0");
        connector.setPort(port);
        server.addConnector(connector);
        server.setHandler(handler);
        server.setStopAtShutdown(true);
        root.registerShutdownHook();
        server.start();
        state.markReady();

        DatabaseInitializer.SeedSummary seeded = root.getBean(DatabaseInitializer.class).summary();
        System.out.println("hello-spring: started in " + state.millisSinceMain() + " ms (JVM up "
                + ManagementFactory.getRuntimeMXBean().getUptime() + " ms; seeded " + seeded + ") on "
                + connector.getHost() + ":" + connector.getLocalPort() + ", java " + System.getProperty("java.version"));
        System.out.println("ready");
        server.join();
    }

    private static int port() {
        String value = System.getenv("PORT");
        if (value == null || value.isEmpty()) {
            return 8080;
        }
        try {
            return Integer.parseInt(value);
        } catch (NumberFormatException e) {
            System.err.println("hello-spring: PORT must be a number, got '" + value + "'");
            System.exit(2);
            return -1;
        }
    }

    /**
     * Framework INFO chatter goes nowhere by default, so stdout carries just the start-up line and
     * "ready"; LOG_LEVEL=INFO (or FINE...) brings Spring's and Jetty's logs back on stderr.
     */
    private static void configureLogging() {
        String level = System.getenv("LOG_LEVEL");
        Level julLevel = Level.WARNING;
        if (level != null && !level.isEmpty()) {
            try {
                julLevel = Level.parse(level.toUpperCase());
            } catch (IllegalArgumentException e) {
                System.err.println("hello-spring: ignoring unknown LOG_LEVEL '" + level + "'");
            }
        }
        for (Logger logger : QUIETED) {
            logger.setLevel(julLevel);
        }
        PAGE_NOT_FOUND.setLevel(julLevel.intValue() < Level.WARNING.intValue() ? julLevel : Level.SEVERE);
        if (julLevel.intValue() < Level.INFO.intValue()) {
            // The JDK's default console handler drops everything below INFO on its own.
            for (Handler handler : Logger.getLogger("").getHandlers()) {
                handler.setLevel(julLevel);
            }
        }
        // Jetty 9 logs through its own StdErrLog when slf4j is absent; it reads these properties.
        if (System.getProperty("org.eclipse.jetty.util.log.class") == null) {
            System.setProperty("org.eclipse.jetty.util.log.class", "org.eclipse.jetty.util.log.StdErrLog");
        }
        if (System.getProperty("org.eclipse.jetty.util.log.announce") == null) {
            System.setProperty("org.eclipse.jetty.util.log.announce", "false");
        }
        if (System.getProperty("org.eclipse.jetty.LEVEL") == null) {
            System.setProperty("org.eclipse.jetty.LEVEL", julLevel.intValue() <= Level.INFO.intValue() ? "INFO" : "WARN");
        }
    }
}
