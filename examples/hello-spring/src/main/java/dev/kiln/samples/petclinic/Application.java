package dev.kiln.samples.petclinic;

import ch.qos.logback.classic.Level;
import dev.kiln.samples.petclinic.config.CoreConfig;
import dev.kiln.samples.petclinic.config.DataConfig;
import dev.kiln.samples.petclinic.config.MetricsConfig;
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
import org.slf4j.LoggerFactory;
import org.slf4j.bridge.SLF4JBridgeHandler;
import org.springframework.beans.factory.config.YamlPropertiesFactoryBean;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.core.env.PropertiesPropertySource;
import org.springframework.core.io.ClassPathResource;
import org.springframework.web.context.support.AnnotationConfigWebApplicationContext;
import org.springframework.web.servlet.DispatcherServlet;

import javax.servlet.DispatcherType;
import java.lang.management.ManagementFactory;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * Petclinic REST service: Spring MVC on embedded Jetty over an in-memory H2 database.
 *
 * <p>Two contexts, as in a classic Spring web application: a root context with the data layer
 * and services, refreshed (and the database seeded) before the server exists, and a web context
 * for the DispatcherServlet, refreshed while Jetty starts and before it opens its port. So the
 * port only accepts once everything is initialised.
 *
 * <p>Start-up does what a Spring Boot service's does, spelled out: Logback logging with
 * java.util.logging and commons-logging routed to it, application.yml read into the environment,
 * component scanning, a HikariCP pool, Hibernate Validator for request bodies and service
 * methods, Caffeine caches warmed with reference data, Dropwizard metrics, Jackson configured
 * through Spring's builder, and the database schema and seed data loaded in batched transactions.
 */
public final class Application {

    /** LOG_LEVEL values: Logback's level names and java.util.logging's. */
    private static final Map<String, String> LOG_LEVELS = new HashMap<String, String>();

    static {
        for (String level : new String[] {"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE", "ALL"}) {
            LOG_LEVELS.put(level, level);
        }
        LOG_LEVELS.put("SEVERE", "ERROR");
        LOG_LEVELS.put("WARNING", "WARN");
        LOG_LEVELS.put("CONFIG", "DEBUG");
        LOG_LEVELS.put("FINE", "DEBUG");
        LOG_LEVELS.put("FINER", "TRACE");
        LOG_LEVELS.put("FINEST", "TRACE");
    }

    private Application() {
    }

    /** classpath:application.yml flattened to dotted keys ("petclinic.seed.owners"). */
    private static PropertiesPropertySource applicationYaml() {
        YamlPropertiesFactoryBean yaml = new YamlPropertiesFactoryBean();
        yaml.setResources(new ClassPathResource("application.yml"));
        return new PropertiesPropertySource("applicationConfig: [classpath:/application.yml]", yaml.getObject());
    }

    public static void main(String[] args) throws Exception {
        long startedAt = System.currentTimeMillis();
        long startNanos = System.nanoTime();
        String randomAlgorithm = System.getenv("SECURE_RANDOM_ALGORITHM");
        AppState state = new AppState(startedAt, startNanos,
                randomAlgorithm == null || randomAlgorithm.isEmpty() ? null : randomAlgorithm);
        org.slf4j.Logger log = configureLogging();
        int port = port();

        AnnotationConfigApplicationContext root = new AnnotationConfigApplicationContext();
        // application.yml ranks below system properties and environment variables, as in Spring Boot.
        root.getEnvironment().getPropertySources().addLast(applicationYaml());
        root.getBeanFactory().registerSingleton("appState", state);
        // Both contexts find their components by scanning the application package (see the
        // @ComponentScan on CoreConfig and WebConfig).
        root.register(CoreConfig.class, MetricsConfig.class, DataConfig.class, ProxyConfig.class);
        root.refresh();

        AnnotationConfigWebApplicationContext web = new AnnotationConfigWebApplicationContext();
        web.setParent(root);
        web.register(WebConfig.class);

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
        String started = "started in " + state.millisSinceMain() + " ms (JVM up "
                + ManagementFactory.getRuntimeMXBean().getUptime() + " ms; seeded " + seeded + ") on "
                + connector.getHost() + ":" + connector.getLocalPort() + ", java " + System.getProperty("java.version");
        log.info("Started hello-spring: {}", started);
        System.out.println("hello-spring: " + started);
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
     * "ready"; LOG_LEVEL=INFO (or DEBUG, FINE...) brings Spring's, Jetty's and the libraries' logs
     * back on stderr. Logback does the logging (see logback.xml); java.util.logging is routed to
     * it, as Spring Boot does. Returns the application's logger, which starts Logback.
     */
    private static org.slf4j.Logger configureLogging() {
        String requested = System.getenv("LOG_LEVEL");
        String level = "WARN";
        if (requested != null && !requested.isEmpty()) {
            String known = LOG_LEVELS.get(requested.trim().toUpperCase(Locale.ROOT));
            if (known == null) {
                System.err.println("hello-spring: ignoring unknown LOG_LEVEL '" + requested + "'");
            } else {
                level = known;
            }
        }
        boolean verbose = !Level.toLevel(level).isGreaterOrEqual(Level.WARN);
        setIfAbsent("petclinic.log.level", level);
        setIfAbsent("petclinic.log.pageNotFound", verbose ? level : "ERROR");
        // Jetty 9 logs through SLF4J when it is on the classpath; no "Logging initialized" line.
        setIfAbsent("org.eclipse.jetty.util.log.announce", "false");
        SLF4JBridgeHandler.removeHandlersForRootLogger();
        SLF4JBridgeHandler.install();
        return LoggerFactory.getLogger(Application.class);
    }

    private static void setIfAbsent(String key, String value) {
        if (System.getProperty(key) == null) {
            System.setProperty(key, value);
        }
    }
}
