package dev.kiln.samples.petclinic.config;

import com.codahale.metrics.MetricRegistry;
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.cache.CacheManager;
import org.springframework.context.annotation.Bean;
import org.springframework.core.env.Environment;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.jdbc.core.namedparam.NamedParameterJdbcTemplate;
import org.springframework.jdbc.datasource.DataSourceTransactionManager;
import org.springframework.transaction.PlatformTransactionManager;
import org.springframework.transaction.support.TransactionTemplate;

import javax.sql.DataSource;

/**
 * Data-access beans. Deliberately not {@code @Configuration}: Spring 4.3 would CGLIB-enhance it,
 * which fails on JDK 17+. As a plain class its {@code @Bean} methods run in "lite" mode, so beans
 * depend on each other through method parameters, never through calls between these methods.
 */
public class DataConfig {

    /**
     * HikariCP, Spring Boot's default pool, over an in-memory H2 database that lives as long as the
     * JVM. H2 keeps it all on the heap, so it is part of the process image (nothing on disk, which
     * a read-only container root needs anyway). The pool opens its first connection here and
     * fills up to the minimum idle count in the background; no JMX registration.
     */
    @Bean(destroyMethod = "close")
    public HikariDataSource dataSource(Environment env, MetricRegistry metrics) {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(env.getRequiredProperty("petclinic.datasource.url"));
        config.setUsername(env.getRequiredProperty("petclinic.datasource.username"));
        config.setPassword(env.getProperty("petclinic.datasource.password", ""));
        config.setPoolName(env.getProperty("petclinic.datasource.pool.name", "petclinic"));
        config.setMaximumPoolSize(env.getProperty("petclinic.datasource.pool.maximum_size", Integer.class, 10));
        config.setMinimumIdle(env.getProperty("petclinic.datasource.pool.minimum_idle", Integer.class, 2));
        config.setConnectionTimeout(env.getProperty("petclinic.datasource.pool.connection_timeout_ms", Long.class, 5000L));
        config.setRegisterMbeans(false);
        config.setMetricRegistry(metrics); // pool gauges and connection timers ("petclinic.pool.*")
        return new HikariDataSource(config);
    }

    @Bean
    public JdbcTemplate jdbcTemplate(DataSource dataSource) {
        return new JdbcTemplate(dataSource);
    }

    @Bean
    public NamedParameterJdbcTemplate namedParameterJdbcTemplate(DataSource dataSource) {
        return new NamedParameterJdbcTemplate(dataSource);
    }

    @Bean
    public DataSourceTransactionManager transactionManager(DataSource dataSource) {
        return new DataSourceTransactionManager(dataSource);
    }

    @Bean
    public TransactionTemplate transactionTemplate(PlatformTransactionManager transactionManager) {
        return new TransactionTemplate(transactionManager);
    }

    @Bean
    public CacheManager cacheManager(@Value("${petclinic.cache.spec}") String spec) {
        return new CaffeineCacheManager(spec, "vets", "petTypes");
    }
}
