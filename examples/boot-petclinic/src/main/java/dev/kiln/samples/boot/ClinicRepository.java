package dev.kiln.samples.boot;

import dev.kiln.samples.boot.ApiErrors.BadRequestException;
import dev.kiln.samples.boot.ApiErrors.NotFoundException;
import dev.kiln.samples.boot.Model.Owner;
import dev.kiln.samples.boot.Model.Pet;
import dev.kiln.samples.boot.Model.Vet;
import dev.kiln.samples.boot.Model.Visit;
import org.springframework.stereotype.Repository;

import javax.sql.DataSource;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Plain JDBC over the HikariCP DataSource (there is no spring-jdbc among these jars): each method
 * borrows one connection and gives it back, so the pool is all that holds connections.
 */
@Repository
public class ClinicRepository {

    private static final String OWNER_COLUMNS = "id, first_name, last_name, address, city, telephone";

    private final DataSource dataSource;

    public ClinicRepository(DataSource dataSource) {
        this.dataSource = dataSource;
    }

    public long countOwners(String lastNamePrefix) {
        try (Connection c = dataSource.getConnection();
             PreparedStatement ps = c.prepareStatement("SELECT COUNT(*) FROM owners WHERE last_name LIKE ? ESCAPE '\\'")) {
            ps.setString(1, likePrefix(lastNamePrefix));
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        } catch (SQLException e) {
            throw failed(e);
        }
    }

    /** Owners whose last name starts with the prefix, sorted by name, one page, with their pets. */
    public List<Owner> findOwners(String lastNamePrefix, int page, int size) {
        try (Connection c = dataSource.getConnection()) {
            Map<Integer, Owner> owners = new LinkedHashMap<>();
            try (PreparedStatement ps = c.prepareStatement("SELECT " + OWNER_COLUMNS
                    + " FROM owners WHERE last_name LIKE ? ESCAPE '\\' ORDER BY last_name, first_name, id LIMIT ? OFFSET ?")) {
                ps.setString(1, likePrefix(lastNamePrefix));
                ps.setInt(2, size);
                ps.setLong(3, (long) page * size);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        Owner owner = owner(rs);
                        owners.put(owner.id(), owner);
                    }
                }
            }
            if (owners.isEmpty()) {
                return List.of();
            }
            String marks = String.join(",", Collections.nCopies(owners.size(), "?"));
            try (PreparedStatement ps = c.prepareStatement("SELECT p.id, p.name, p.birth_date, t.name, p.owner_id"
                    + " FROM pets p JOIN types t ON t.id = p.type_id WHERE p.owner_id IN (" + marks + ") ORDER BY p.name, p.id")) {
                int i = 1;
                for (Integer id : owners.keySet()) {
                    ps.setInt(i++, id);
                }
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        owners.get(rs.getInt(5)).pets().add(pet(rs, null));
                    }
                }
            }
            return new ArrayList<>(owners.values());
        } catch (SQLException e) {
            throw failed(e);
        }
    }

    /** One owner with pets and each pet's visits (oldest first); 404 if there is none. */
    public Owner findOwner(int id) {
        try (Connection c = dataSource.getConnection()) {
            Owner owner;
            try (PreparedStatement ps = c.prepareStatement("SELECT " + OWNER_COLUMNS + " FROM owners WHERE id = ?")) {
                ps.setInt(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    if (!rs.next()) {
                        throw new NotFoundException("owner " + id + " not found");
                    }
                    owner = owner(rs);
                }
            }
            Map<Integer, Pet> pets = new LinkedHashMap<>();
            try (PreparedStatement ps = c.prepareStatement("SELECT p.id, p.name, p.birth_date, t.name"
                    + " FROM pets p JOIN types t ON t.id = p.type_id WHERE p.owner_id = ? ORDER BY p.name, p.id")) {
                ps.setInt(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        Pet pet = pet(rs, new ArrayList<>());
                        pets.put(pet.id(), pet);
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT v.id, v.pet_id, v.vet_id, v.visit_date, v.description"
                    + " FROM visits v JOIN pets p ON p.id = v.pet_id WHERE p.owner_id = ? ORDER BY v.visit_date, v.id")) {
                ps.setInt(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        pets.get(rs.getInt(2)).visits().add(new Visit(rs.getInt(1), rs.getInt(2), rs.getInt(3),
                                rs.getObject(4, LocalDate.class), rs.getString(5)));
                    }
                }
            }
            owner.pets().addAll(pets.values());
            return owner;
        } catch (SQLException e) {
            throw failed(e);
        }
    }

    /** Inserts the owner and its pets in one transaction; returns them with their new ids. */
    public Owner createOwner(Owner o) {
        try (Connection c = dataSource.getConnection()) {
            c.setAutoCommit(false);
            try {
                int ownerId;
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO owners (first_name, last_name, address, city, telephone)"
                        + " VALUES (?, ?, ?, ?, ?)", Statement.RETURN_GENERATED_KEYS)) {
                    ps.setString(1, o.firstName());
                    ps.setString(2, o.lastName());
                    ps.setString(3, o.address());
                    ps.setString(4, o.city());
                    ps.setString(5, o.telephone());
                    ps.executeUpdate();
                    ownerId = generatedId(ps);
                }
                List<Pet> pets = new ArrayList<>();
                for (Pet p : o.pets() == null ? List.<Pet>of() : o.pets()) {
                    int typeId = typeId(c, p.type());
                    try (PreparedStatement ps = c.prepareStatement("INSERT INTO pets (name, birth_date, type_id, owner_id)"
                            + " VALUES (?, ?, ?, ?)", Statement.RETURN_GENERATED_KEYS)) {
                        ps.setString(1, p.name());
                        ps.setObject(2, p.birthDate());
                        ps.setInt(3, typeId);
                        ps.setInt(4, ownerId);
                        ps.executeUpdate();
                        pets.add(new Pet(generatedId(ps), p.name(), p.birthDate(), p.type(), null));
                    }
                }
                c.commit();
                return new Owner(ownerId, o.firstName(), o.lastName(), o.address(), o.city(), o.telephone(), pets);
            } catch (SQLException | RuntimeException e) {
                c.rollback();
                throw e;
            }
        } catch (SQLException e) {
            throw failed(e);
        }
    }

    /** Every vet with the names of their specialties, sorted by name. */
    public List<Vet> findVets() {
        try (Connection c = dataSource.getConnection();
             PreparedStatement ps = c.prepareStatement("SELECT v.id, v.first_name, v.last_name, s.name FROM vets v"
                     + " LEFT JOIN vet_specialties vs ON vs.vet_id = v.id LEFT JOIN specialties s ON s.id = vs.specialty_id"
                     + " ORDER BY v.last_name, v.first_name, v.id, s.name");
             ResultSet rs = ps.executeQuery()) {
            Map<Integer, Vet> vets = new LinkedHashMap<>();
            while (rs.next()) {
                Vet vet = vets.get(rs.getInt(1));
                if (vet == null) {
                    vet = new Vet(rs.getInt(1), rs.getString(2), rs.getString(3), new ArrayList<>());
                    vets.put(vet.id(), vet);
                }
                String specialty = rs.getString(4);
                if (specialty != null) {
                    vet.specialties().add(specialty);
                }
            }
            return new ArrayList<>(vets.values());
        } catch (SQLException e) {
            throw failed(e);
        }
    }

    private static int typeId(Connection c, String type) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT id FROM types WHERE name = ?")) {
            ps.setString(1, type);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) {
                    throw new BadRequestException("unknown pet type '" + type + "'");
                }
                return rs.getInt(1);
            }
        }
    }

    /** The id column comes first in every table: H2 returns it alone, PostgreSQL every column. */
    private static int generatedId(PreparedStatement ps) throws SQLException {
        try (ResultSet keys = ps.getGeneratedKeys()) {
            keys.next();
            return keys.getInt(1);
        }
    }

    private static Owner owner(ResultSet rs) throws SQLException {
        return new Owner(rs.getInt(1), rs.getString(2), rs.getString(3), rs.getString(4), rs.getString(5),
                rs.getString(6), new ArrayList<>());
    }

    private static Pet pet(ResultSet rs, List<Visit> visits) throws SQLException {
        return new Pet(rs.getInt(1), rs.getString(2), rs.getObject(3, LocalDate.class), rs.getString(4), visits);
    }

    /** LIKE pattern for "starts with", with the wildcards in the prefix itself escaped. */
    private static String likePrefix(String prefix) {
        return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%";
    }

    private static RuntimeException failed(SQLException e) {
        return new IllegalStateException("database error: " + e.getMessage(), e);
    }
}
