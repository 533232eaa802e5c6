package dev.kiln.samples.petclinic.repository;

import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.stereotype.Repository;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** Aggregate queries for the /stats endpoint: scans and groupings over the whole data set. */
@Repository
public class StatsRepository {

    private final JdbcTemplate jdbc;

    public StatsRepository(JdbcTemplate jdbc) {
        this.jdbc = jdbc;
    }

    public Map<String, Object> totals() {
        Map<String, Object> row = jdbc.queryForMap("SELECT"
                + " (SELECT COUNT(*) FROM owners) AS owners,"
                + " (SELECT COUNT(*) FROM pets) AS pets,"
                + " (SELECT COUNT(*) FROM visits) AS visits,"
                + " (SELECT COUNT(*) FROM vets) AS vets");
        // H2 reports column labels upper-cased; the JSON keys should match the rest of the API.
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        for (Map.Entry<String, Object> e : row.entrySet()) {
            out.put(e.getKey().toLowerCase(Locale.ROOT), e.getValue());
        }
        return out;
    }

    public Map<String, Object> petsByType() {
        return pairs(jdbc.queryForList("SELECT t.name AS k, COUNT(p.id) AS v FROM types t"
                + " LEFT JOIN pets p ON p.type_id = t.id GROUP BY t.name ORDER BY v DESC, k"));
    }

    public Map<String, Object> topCities(int limit) {
        return pairs(jdbc.queryForList("SELECT city AS k, COUNT(*) AS v FROM owners"
                + " GROUP BY city ORDER BY v DESC, k LIMIT ?", limit));
    }

    public Map<String, Object> visitsPerYear() {
        return pairs(jdbc.queryForList("SELECT CAST(EXTRACT(YEAR FROM visit_date) AS VARCHAR) AS k,"
                + " COUNT(*) AS v FROM visits GROUP BY k ORDER BY k"));
    }

    public Map<String, Object> busiestVets(int limit) {
        return pairs(jdbc.queryForList("SELECT v.first_name || ' ' || v.last_name AS k, COUNT(*) AS v"
                + " FROM visits x JOIN vets v ON v.id = x.vet_id"
                + " GROUP BY v.id, v.first_name, v.last_name ORDER BY v DESC, k LIMIT ?", limit));
    }

    public double averagePetsPerOwner() {
        Double avg = jdbc.queryForObject("SELECT AVG(CAST(n AS DOUBLE)) FROM"
                + " (SELECT COUNT(p.id) AS n FROM owners o LEFT JOIN pets p ON p.owner_id = o.id GROUP BY o.id)",
                Double.class);
        return avg == null ? 0 : avg;
    }

    private static Map<String, Object> pairs(List<Map<String, Object>> rows) {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        for (Map<String, Object> row : rows) {
            out.put(String.valueOf(row.get("k")), row.get("v"));
        }
        return out;
    }
}
