package dev.kiln.samples.petclinic.config;

import org.h2.jdbcx.JdbcConnectionPool;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.cache.CacheManager;
import org.springframework.cache.concurrent.ConcurrentMapCacheManager;
import org.springframework.context.annotation.Bean;
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

    // An in-memory database that lives as long as the JVM; H2 keeps it all on the heap, so it is
    // part of the process image (nothing on disk, which a read-only container root needs anyway).
    @Bean(destroyMethod = "dispose")
    public JdbcConnectionPool dataSource(@Value("${petclinic.db.maxConnections:16}") int maxConnections) {
        JdbcConnectionPool pool = JdbcConnectionPool.create("jdbc:h2:mem:petclinic;DB_CLOSE_DELAY=-1", "sa", "");
        pool.setMaxConnections(maxConnections);
        return pool;
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
    public CacheManager cacheManager() {
        return new ConcurrentMapCacheManager("vets");
    }
}
