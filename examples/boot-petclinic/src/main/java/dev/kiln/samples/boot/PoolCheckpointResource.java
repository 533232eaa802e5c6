package dev.kiln.samples.boot;

import com.zaxxer.hikari.HikariDataSource;
import com.zaxxer.hikari.HikariPoolMXBean;
import org.crac.Context;
import org.crac.Core;
import org.crac.Resource;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.jdbc.HikariCheckpointRestoreLifecycle;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.stereotype.Component;

/**
 * Closes every pooled JDBC connection before a checkpoint and reopens the pool after a restore.
 * An open socket to PostgreSQL cannot be part of a snapshot that is restored many times, and an
 * H2 connection would be restored with state no other copy shares.
 *
 * <p>The work is Spring Boot's own {@link HikariCheckpointRestoreLifecycle} (suspend the pool,
 * soft-evict, wait until HikariCP has closed them all; resume on restore). Boot would register it
 * itself from DataSourceAutoConfiguration, which needs spring-jdbc; the class does not, so it is
 * used directly, and driven by org.crac instead of by Spring's lifecycle processor (it is not a
 * bean, so Spring never stops or starts it a second time).
 *
 * <p>org.crac keeps resources by weak reference (as the JDK's CRaC does): this bean holds itself.
 * On a stock JDK without a CRaC backend ({@code -Dorg.crac.Core.Compat} unset) the registration
 * goes nowhere and no callback runs.
 *
 * <p>{@code petclinic.close-pool-at-checkpoint=false} (PETCLINIC_CLOSE_POOL_AT_CHECKPOINT=false)
 * leaves the resource unregistered, so the pool's connections stay open at a checkpoint: what a
 * service without this resource does, and what kiln's preflight then reports.
 */
@Component
public class PoolCheckpointResource implements Resource {

    private final HikariDataSource dataSource;
    private final HikariCheckpointRestoreLifecycle lifecycle;

    public PoolCheckpointResource(HikariDataSource dataSource, ConfigurableApplicationContext context,
            @Value("${petclinic.close-pool-at-checkpoint:true}") boolean closePoolAtCheckpoint) {
        this.dataSource = dataSource;
        this.lifecycle = new HikariCheckpointRestoreLifecycle(dataSource, context);
        if (closePoolAtCheckpoint) {
            Core.getGlobalContext().register(this);
        }
    }

    @Override
    public void beforeCheckpoint(Context<? extends Resource> context) throws Exception {
        lifecycle.stop();
        int open = openConnections();
        if (open != 0) {
            // Refuse the checkpoint: a snapshot with live connections is not one to restore.
            throw new IllegalStateException("HikariCP pool " + dataSource.getPoolName() + " still has "
                    + open + " open connections after suspend and evict");
        }
        System.out.println("boot-petclinic: checkpoint: pool " + dataSource.getPoolName()
                + " suspended, 0 connections open");
        System.out.flush();
    }

    @Override
    public void afterRestore(Context<? extends Resource> context) throws Exception {
        lifecycle.start();
        System.out.println("boot-petclinic: restore: pool " + dataSource.getPoolName() + " resumed");
        System.out.flush();
    }

    /** Connections the pool holds now, in use or idle; 0 if the pool was never started. */
    int openConnections() {
        HikariPoolMXBean pool = dataSource.getHikariPoolMXBean();
        return pool == null ? 0 : pool.getTotalConnections();
    }
}
