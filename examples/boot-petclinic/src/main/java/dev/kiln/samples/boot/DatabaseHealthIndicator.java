package dev.kiln.samples.boot;

import com.zaxxer.hikari.HikariDataSource;
import com.zaxxer.hikari.HikariPoolMXBean;
import org.springframework.boot.actuate.health.Health;
import org.springframework.boot.actuate.health.HealthIndicator;
import org.springframework.stereotype.Component;

import java.sql.Connection;

/**
 * The "db" component of /actuator/health. Boot's own DataSourceHealthIndicator needs spring-jdbc;
 * this one checks a pooled connection with {@code isValid} and reports the pool's counts.
 */
@Component("dbHealthIndicator")
public class DatabaseHealthIndicator implements HealthIndicator {

    private final HikariDataSource dataSource;

    public DatabaseHealthIndicator(HikariDataSource dataSource) {
        this.dataSource = dataSource;
    }

    @Override
    public Health health() {
        Health.Builder builder;
        try (Connection c = dataSource.getConnection()) {
            builder = c.isValid(2) ? Health.up() : Health.down();
            builder.withDetail("database", c.getMetaData().getDatabaseProductName());
        } catch (Exception e) {
            builder = Health.down(e);
        }
        HikariPoolMXBean pool = dataSource.getHikariPoolMXBean();
        if (pool != null) {
            builder.withDetail("pool", dataSource.getPoolName())
                    .withDetail("totalConnections", pool.getTotalConnections())
                    .withDetail("activeConnections", pool.getActiveConnections());
        }
        return builder.build();
    }
}
