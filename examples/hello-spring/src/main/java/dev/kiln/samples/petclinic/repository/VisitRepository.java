package dev.kiln.samples.petclinic.repository;

import dev.kiln.samples.petclinic.model.Visit;
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
public class VisitRepository {

    private static final RowMapper<Visit> VISIT = new RowMapper<Visit>() {
        @Override
        public Visit mapRow(ResultSet rs, int rowNum) throws SQLException {
            Visit v = new Visit();
            v.setId(rs.getInt("id"));
            v.setPetId(rs.getInt("pet_id"));
            v.setVetId(rs.getInt("vet_id"));
            v.setDate(rs.getDate("visit_date").toLocalDate());
            v.setDescription(rs.getString("description"));
            return v;
        }
    };

    private final NamedParameterJdbcTemplate named;
    private final SimpleJdbcInsert insert;

    public VisitRepository(JdbcTemplate jdbc, NamedParameterJdbcTemplate named) {
        this.named = named;
        this.insert = new SimpleJdbcInsert(jdbc).withTableName("visits").usingGeneratedKeyColumns("id");
    }

    public List<Visit> findByPetIds(Collection<Integer> petIds) {
        if (petIds.isEmpty()) {
            return Collections.emptyList();
        }
        return named.query("SELECT id, pet_id, vet_id, visit_date, description FROM visits"
                        + " WHERE pet_id IN (:ids) ORDER BY pet_id, visit_date DESC, id DESC",
                new MapSqlParameterSource("ids", petIds), VISIT);
    }

    public Visit insert(Visit visit) {
        Map<String, Object> row = new HashMap<String, Object>();
        row.put("pet_id", visit.getPetId());
        row.put("vet_id", visit.getVetId());
        row.put("visit_date", Date.valueOf(visit.getDate()));
        row.put("description", visit.getDescription());
        visit.setId(insert.executeAndReturnKey(row).intValue());
        return visit;
    }
}
