package dev.kiln.samples.petclinic.repository;

import dev.kiln.samples.petclinic.model.Pet;
import org.springframework.dao.EmptyResultDataAccessException;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.jdbc.core.RowMapper;
import org.springframework.jdbc.core.namedparam.MapSqlParameterSource;
import org.springframework.jdbc.core.namedparam.NamedParameterJdbcTemplate;
import org.springframework.jdbc.core.simple.SimpleJdbcInsert;
import org.springframework.stereotype.Repository;

import java.sql.Date;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

@Repository
public class PetRepository {

    private static final String SELECT = "SELECT p.id, p.name, p.birth_date, p.owner_id, t.name AS type"
            + " FROM pets p JOIN types t ON t.id = p.type_id";

    private static final RowMapper<Pet> PET = new RowMapper<Pet>() {
        @Override
        public Pet mapRow(ResultSet rs, int rowNum) throws SQLException {
            Pet p = new Pet();
            p.setId(rs.getInt("id"));
            p.setName(rs.getString("name"));
            p.setBirthDate(rs.getDate("birth_date").toLocalDate());
            p.setOwnerId(rs.getInt("owner_id"));
            p.setType(rs.getString("type"));
            return p;
        }
    };

    private final JdbcTemplate jdbc;
    private final NamedParameterJdbcTemplate named;
    private final SimpleJdbcInsert insert;

    public PetRepository(JdbcTemplate jdbc, NamedParameterJdbcTemplate named) {
        this.jdbc = jdbc;
        this.named = named;
        this.insert = new SimpleJdbcInsert(jdbc).withTableName("pets").usingGeneratedKeyColumns("id");
    }

    public List<Pet> findByOwnerIds(Collection<Integer> ownerIds) {
        if (ownerIds.isEmpty()) {
            return Collections.emptyList();
        }
        return named.query(SELECT + " WHERE p.owner_id IN (:ids) ORDER BY p.owner_id, p.name, p.id",
                new MapSqlParameterSource("ids", ownerIds), PET);
    }

    public Pet findById(int id) {
        try {
            return jdbc.queryForObject(SELECT + " WHERE p.id = ?", PET, id);
        } catch (EmptyResultDataAccessException e) {
            return null;
        }
    }

    /** The id of the pet type called {@code name}, or null if there is no such type. */
    public Integer findTypeId(String name) {
        List<Integer> ids = jdbc.queryForList("SELECT id FROM types WHERE name = ?", Integer.class, name);
        return ids.isEmpty() ? null : ids.get(0);
    }

    public List<String> findTypeNames() {
        return jdbc.queryForList("SELECT name FROM types ORDER BY name", String.class);
    }

    public Pet insert(Pet pet, int typeId) {
        Map<String, Object> row = new HashMap<String, Object>();
        row.put("name", pet.getName());
        row.put("birth_date", Date.valueOf(pet.getBirthDate()));
        row.put("type_id", typeId);
        row.put("owner_id", pet.getOwnerId());
        pet.setId(insert.executeAndReturnKey(row).intValue());
        return pet;
    }
}
