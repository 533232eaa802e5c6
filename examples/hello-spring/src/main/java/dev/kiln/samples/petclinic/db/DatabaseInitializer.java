package dev.kiln.samples.petclinic.db;

import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.core.io.ClassPathResource;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.jdbc.datasource.init.DatabasePopulatorUtils;
import org.springframework.jdbc.datasource.init.ResourceDatabasePopulator;
import org.springframework.stereotype.Component;
import org.springframework.transaction.TransactionStatus;
import org.springframework.transaction.support.TransactionCallbackWithoutResult;
import org.springframework.transaction.support.TransactionTemplate;

import javax.sql.DataSource;
import java.util.ArrayList;
import java.util.List;

/**
 * Creates the schema and fills the in-memory database when the context starts, the way a service
 * loads reference data or replays fixtures: this is most of the sample's start-up time.
 *
 * <p>Runs as a {@link SmartInitializingSingleton} rather than {@code @PostConstruct}: JDK 11+ has
 * no {@code javax.annotation}, so Spring 4.3 silently skips {@code @PostConstruct} there.
 */
@Component
public class DatabaseInitializer implements SmartInitializingSingleton {

    private final DataSource dataSource;
    private final JdbcTemplate jdbc;
    private final TransactionTemplate tx;
    private final int ownerCount;
    /** Owners per transaction: big enough for efficient batches, small enough to keep undo logs short. */
    private final int ownersPerTx;

    private volatile SeedSummary summary;

    public DatabaseInitializer(DataSource dataSource, JdbcTemplate jdbc, TransactionTemplate tx,
                               @Value("${petclinic.seed.owners}") int ownerCount,
                               @Value("${petclinic.seed.batch:500}") int ownersPerTx) {
        this.dataSource = dataSource;
        this.jdbc = jdbc;
        this.tx = tx;
        this.ownerCount = ownerCount;
        this.ownersPerTx = Math.max(1, ownersPerTx);
    }

    @Override
    public void afterSingletonsInstantiated() {
        long t0 = System.nanoTime();
        DatabasePopulatorUtils.execute(new ResourceDatabasePopulator(new ClassPathResource("db/schema.sql")), dataSource);
        final SeedData seed = new SeedData();
        final int[] counts = new int[3]; // owners, pets, visits

        tx.execute(new TransactionCallbackWithoutResult() {
            @Override
            protected void doInTransactionWithoutResult(TransactionStatus status) {
                List<Object[]> rows = new ArrayList<Object[]>();
                for (int i = 0; i < SeedData.SPECIALTIES.length; i++) {
                    rows.add(new Object[] {i + 1, SeedData.SPECIALTIES[i]});
                }
                jdbc.batchUpdate("INSERT INTO specialties (id, name) VALUES (?, ?)", rows);
                rows.clear();
                for (int i = 0; i < SeedData.PET_TYPES.length; i++) {
                    rows.add(new Object[] {i + 1, SeedData.PET_TYPES[i]});
                }
                jdbc.batchUpdate("INSERT INTO types (id, name) VALUES (?, ?)", rows);
                jdbc.batchUpdate("INSERT INTO vets (id, first_name, last_name) VALUES (?, ?, ?)", seed.vets());
                jdbc.batchUpdate("INSERT INTO vet_specialties (vet_id, specialty_id) VALUES (?, ?)", seed.vetSpecialties());
            }
        });

        for (int from = 1; from <= ownerCount; from += ownersPerTx) {
            final int first = from;
            final int last = Math.min(ownerCount, from + ownersPerTx - 1);
            tx.execute(new TransactionCallbackWithoutResult() {
                @Override
                protected void doInTransactionWithoutResult(TransactionStatus status) {
                    List<Object[]> owners = new ArrayList<Object[]>();
                    List<Object[]> pets = new ArrayList<Object[]>();
                    List<Object[]> visits = new ArrayList<Object[]>();
                    for (int ownerId = first; ownerId <= last; ownerId++) {
                        owners.add(seed.owner(ownerId));
                        for (int p = seed.petsFor(); p > 0; p--) {
                            int petId = ++counts[1];
                            pets.add(seed.pet(petId, ownerId));
                            for (int v = seed.visitsFor(); v > 0; v--) {
                                visits.add(seed.visit(++counts[2], petId));
                            }
                        }
                    }
                    jdbc.batchUpdate("INSERT INTO owners (id, first_name, last_name, address, city, telephone)"
                            + " VALUES (?, ?, ?, ?, ?, ?)", owners);
                    jdbc.batchUpdate("INSERT INTO pets (id, name, birth_date, type_id, owner_id)"
                            + " VALUES (?, ?, ?, ?, ?)", pets);
                    jdbc.batchUpdate("INSERT INTO visits (id, pet_id, vet_id, visit_date, description)"
                            + " VALUES (?, ?, ?, ?, ?)", visits);
                    counts[0] = last;
                }
            });
        }

        // Seed rows carry explicit ids; move the identity columns past them for API inserts.
        restartIdentity("specialties", SeedData.SPECIALTIES.length);
        restartIdentity("types", SeedData.PET_TYPES.length);
        restartIdentity("vets", SeedData.VETS);
        restartIdentity("owners", counts[0]);
        restartIdentity("pets", counts[1]);
        restartIdentity("visits", counts[2]);
        // Fresh selectivity statistics, so H2 picks the indexes for the API's queries.
        jdbc.execute("ANALYZE");

        summary = new SeedSummary(counts[0], counts[1], counts[2], (System.nanoTime() - t0) / 1_000_000L);
    }

    private void restartIdentity(String table, int maxId) {
        jdbc.execute("ALTER TABLE " + table + " ALTER COLUMN id RESTART WITH " + (maxId + 1));
    }

    public SeedSummary summary() {
        return summary;
    }

    /** What the seeding produced, for the start-up log line. */
    public static final class SeedSummary {
        public final int owners;
        public final int pets;
        public final int visits;
        public final long millis;

        SeedSummary(int owners, int pets, int visits, long millis) {
            this.owners = owners;
            this.pets = pets;
            this.visits = visits;
            this.millis = millis;
        }

        @Override
        public String toString() {
            return owners + " owners, " + pets + " pets, " + visits + " visits in " + millis + " ms";
        }
    }
}
