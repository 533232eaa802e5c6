package dev.kiln.samples.petclinic.config;

import ch.qos.logback.classic.LoggerContext;
import com.codahale.metrics.MetricRegistry;
import com.codahale.metrics.json.MetricsModule;
import com.codahale.metrics.jvm.BufferPoolMetricSet;
import com.codahale.metrics.jvm.CachedThreadStatesGaugeSet;
import com.codahale.metrics.jvm.ClassLoadingGaugeSet;
import com.codahale.metrics.jvm.GarbageCollectorMetricSet;
import com.codahale.metrics.jvm.MemoryUsageGaugeSet;
import com.codahale.metrics.logback.InstrumentedAppender;
import com.fasterxml.jackson.databind.Module;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.Bean;

import java.lang.management.ManagementFactory;
import java.util.concurrent.TimeUnit;

/**
 * Application metrics with Dropwizard Metrics, in the spirit of Spring Boot Actuator's: JVM
 * memory, GC, thread, class-loading and buffer-pool gauges, Logback event counters, HikariCP's
 * pool metrics (see {@link DataConfig}) and a timer per endpoint and status (see
 * RequestMetricsInterceptor). GET /metrics serialises the registry with metrics-json's Jackson
 * module. Gauges are read when /metrics asks, nothing samples in the background (no reporter
 * threads), so a snapshot holds no timers that would fire on restore.
 */
public class MetricsConfig {

    @Bean
    public MetricRegistry metricRegistry() {
        MetricRegistry registry = new MetricRegistry();
        registry.register("jvm.memory", new MemoryUsageGaugeSet());
        registry.register("jvm.gc", new GarbageCollectorMetricSet());
        registry.register("jvm.threads", new CachedThreadStatesGaugeSet(10, TimeUnit.SECONDS));
        registry.register("jvm.classes", new ClassLoadingGaugeSet());
        registry.register("jvm.buffers", new BufferPoolMetricSet(ManagementFactory.getPlatformMBeanServer()));

        // Counts log events by level ("ch.qos.logback.core.Appender.warn"...), like Boot's logback metrics.
        Logger root = LoggerFactory.getLogger(Logger.ROOT_LOGGER_NAME);
        if (root instanceof ch.qos.logback.classic.Logger) {
            ch.qos.logback.classic.Logger logbackRoot = (ch.qos.logback.classic.Logger) root;
            InstrumentedAppender events = new InstrumentedAppender(registry);
            events.setContext((LoggerContext) LoggerFactory.getILoggerFactory());
            events.start();
            logbackRoot.addAppender(events);
        }
        return registry;
    }

    /** Lets the web layer's ObjectMapper write the registry: rates per second, durations in ms. */
    @Bean
    public Module metricsModule() {
        return new MetricsModule(TimeUnit.SECONDS, TimeUnit.MILLISECONDS, false);
    }
}
