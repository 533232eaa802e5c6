package dev.kiln.samples.petclinic.repository;

import dev.kiln.samples.petclinic.model.Owner;
import org.springframework.dao.EmptyResultDataAccessException;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.jdbc.core.RowMapper;
import org.springframework.jdbc.core.simple.SimpleJdbcInsert;
import org.springframework.stereotype.Repository;

import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

@Repository
public class OwnerRepository {

    private static final String COLUMNS = "id, first_name, last_name, address, city, telephone";

    private static final RowMapper<Owner> OWNER = new RowMapper<Owner>() {
        @Override
        public Owner mapRow(ResultSet rs, int rowNum) throws SQLException {
            Owner o = new Owner();
            o.setId(rs.getInt("id"));
            o.setFirstName(rs.getString("first_name"));
            o.setLastName(rs.getString("last_name"));
            o.setAddress(rs.getString("address"));
            o.setCity(rs.getString("city"));
            o.setTelephone(rs.getString("telephone"));
            return o;
        }
    };

    private final JdbcTemplate jdbc;
    private final SimpleJdbcInsert insert;

    public OwnerRepository(JdbcTemplate jdbc) {
        this.jdbc = jdbc;
        this.insert = new SimpleJdbcInsert(jdbc).withTableName("owners").usingGeneratedKeyColumns("id");
    }

    /** Owners whose last name starts with {@code prefix} (case-sensitive, so the index applies). */
    public List<Owner> findByLastNamePrefix(String prefix, int offset, int limit) {
        return jdbc.query("SELECT " + COLUMNS + " FROM owners WHERE last_name LIKE ? ESCAPE '\\'"
                        + " ORDER BY last_name, first_name, id LIMIT ? OFFSET ?",
                OWNER, likePrefix(prefix), limit, offset);
    }

    public int countByLastNamePrefix(String prefix) {
        return jdbc.queryForObject("SELECT COUNT(*) FROM owners WHERE last_name LIKE ? ESCAPE '\\'",
                Integer.class, likePrefix(prefix));
    }

    public Owner findById(int id) {
        try {
            return jdbc.queryForObject("SELECT " + COLUMNS + " FROM owners WHERE id = ?", OWNER, id);
        } catch (EmptyResultDataAccessException e) {
            return null;
        }
    }

    public int count() {
        return jdbc.queryForObject("SELECT COUNT(*) FROM owners", Integer.class);
    }

    public Owner insert(Owner owner) {
        Map<String, Object> row = new HashMap<String, Object>();
        row.put("first_name", owner.getFirstName());
        row.put("last_name", owner.getLastName());
        row.put("address", owner.getAddress());
        row.put("city", owner.getCity());
        row.put("telephone", owner.getTelephone());
        owner.setId(insert.executeAndReturnKey(row).intValue());
        return owner;
    }

    private static String likePrefix(String prefix) {
        String p = prefix == null ? "" : prefix;
        return p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%";
    }
}
