package dev.kiln.samples.petclinic.repository;

import dev.kiln.samples.petclinic.model.Vet;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.jdbc.core.RowCallbackHandler;
import org.springframework.stereotype.Repository;

import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

@Repository
public class VetRepository {

    private final JdbcTemplate jdbc;

    public VetRepository(JdbcTemplate jdbc) {
        this.jdbc = jdbc;
    }

    /** All vets with their specialties, in one query (the left join keeps vets without any). */
    public List<Vet> findAll() {
        final Map<Integer, Vet> vets = new LinkedHashMap<Integer, Vet>();
        jdbc.query("SELECT v.id, v.first_name, v.last_name, s.name AS specialty FROM vets v"
                + " LEFT JOIN vet_specialties vs ON vs.vet_id = v.id"
                + " LEFT JOIN specialties s ON s.id = vs.specialty_id"
                + " ORDER BY v.last_name, v.first_name, v.id, s.name", new RowCallbackHandler() {
                    @Override
                    public void processRow(ResultSet rs) throws SQLException {
                        int id = rs.getInt("id");
                        Vet vet = vets.get(id);
                        if (vet == null) {
                            vet = new Vet();
                            vet.setId(id);
                            vet.setFirstName(rs.getString("first_name"));
                            vet.setLastName(rs.getString("last_name"));
                            vets.put(id, vet);
                        }
                        String specialty = rs.getString("specialty");
                        if (specialty != null) {
                            vet.getSpecialties().add(specialty);
                        }
                    }
                });
        return new ArrayList<Vet>(vets.values());
    }

    public boolean exists(int id) {
        return jdbc.queryForObject("SELECT COUNT(*) FROM vets WHERE id = ?", Integer.class, id) > 0;
    }

    /** Any vet id; used when a visit is booked without naming one. */
    public Integer firstId() {
        List<Integer> ids = jdbc.queryForList("SELECT MIN(id) FROM vets", Integer.class);
        return ids.isEmpty() ? null : ids.get(0);
    }
}
