package dev.kiln.samples.boot;

import com.zaxxer.hikari.HikariDataSource;
import org.springframework.boot.context.properties.ConfigurationProperties;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.env.Environment;

/**
 * The HikariCP pool, built here because Spring Boot's DataSourceAutoConfiguration needs spring-jdbc,
 * which these jars do not have. Configured the Boot way all the same: {@code spring.datasource.url},
 * {@code .username}, {@code .password} (so SPRING_DATASOURCE_URL etc. from the environment), and
 * every {@code spring.datasource.hikari.*} key bound onto the pool by @ConfigurationProperties.
 */
@Configuration(proxyBeanMethods = false)
public class DataSourceConfig {

    static final String DEFAULT_URL = "jdbc:h2:mem:petclinic;DB_CLOSE_DELAY=-1";

    @Bean(destroyMethod = "close")
    @ConfigurationProperties("spring.datasource.hikari")
    public HikariDataSource dataSource(Environment env) {
        String url = env.getProperty("spring.datasource.url", DEFAULT_URL);
        HikariDataSource ds = new HikariDataSource();
        ds.setJdbcUrl(url);
        if (url.startsWith("jdbc:postgresql:")) {
            ds.setDriverClassName("org.postgresql.Driver");
            ds.setUsername(env.getProperty("spring.datasource.username"));
            ds.setPassword(env.getProperty("spring.datasource.password"));
        } else if (url.startsWith("jdbc:h2:")) {
            // DB_CLOSE_DELAY=-1 in the default URL: the in-memory database outlives its last
            // connection, which the checkpoint resource closes (see PoolCheckpointResource).
            ds.setDriverClassName("org.h2.Driver");
            ds.setUsername(env.getProperty("spring.datasource.username", "sa"));
            ds.setPassword(env.getProperty("spring.datasource.password", ""));
        } else {
            throw new IllegalArgumentException("spring.datasource.url: only jdbc:h2: and jdbc:postgresql: are supported, got " + url);
        }
        // Needed by HikariCheckpointRestoreLifecycle: without it the pool cannot be suspended
        // while its connections are closed for a checkpoint. application.properties sets it too.
        ds.setAllowPoolSuspension(true);
        return ds;
    }
}
