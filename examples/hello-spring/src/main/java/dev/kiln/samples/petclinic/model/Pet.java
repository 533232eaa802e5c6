package dev.kiln.samples.petclinic.model;

import com.fasterxml.jackson.annotation.JsonIgnore;
import org.hibernate.validator.constraints.NotBlank;

import javax.validation.constraints.NotNull;
import javax.validation.constraints.Size;

import java.time.LocalDate;
import java.util.List;

/** A pet; {@code visits} stays null (and out of the JSON) unless the query loaded them. */
public class Pet {

    private Integer id;
    @NotBlank
    @Size(max = 30)
    private String name;
    @NotNull(message = "is required (YYYY-MM-DD)")
    private LocalDate birthDate;
    @NotBlank
    @Size(max = 80)
    private String type;
    private Integer ownerId;
    private List<Visit> visits;

    public Integer getId() { return id; }
    public void setId(Integer id) { this.id = id; }

    public String getName() { return name; }
    public void setName(String name) { this.name = name; }

    public LocalDate getBirthDate() { return birthDate; }
    public void setBirthDate(LocalDate birthDate) { this.birthDate = birthDate; }

    /** The pet type's name ("cat", "dog", ...), as clients send and read it. */
    public String getType() { return type; }
    public void setType(String type) { this.type = type; }

    // The owner is the enclosing JSON object already; repeating its id in every pet is noise.
    @JsonIgnore
    public Integer getOwnerId() { return ownerId; }
    @JsonIgnore
    public void setOwnerId(Integer ownerId) { this.ownerId = ownerId; }

    public List<Visit> getVisits() { return visits; }
    public void setVisits(List<Visit> visits) { this.visits = visits; }
}
