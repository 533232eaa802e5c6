package dev.kiln.samples.petclinic.model;

import org.hibernate.validator.constraints.NotBlank;

import javax.validation.constraints.Min;
import javax.validation.constraints.Size;
import java.time.LocalDate;

/** A visit of a pet to a vet; "date" (today) and "vetId" (any vet) may be left out when booking. */
public class Visit {

    private Integer id;
    private Integer petId;
    @Min(1)
    private Integer vetId;
    private LocalDate date;
    @NotBlank
    @Size(max = 255)
    private String description;

    public Integer getId() { return id; }
    public void setId(Integer id) { this.id = id; }

    public Integer getPetId() { return petId; }
    public void setPetId(Integer petId) { this.petId = petId; }

    public Integer getVetId() { return vetId; }
    public void setVetId(Integer vetId) { this.vetId = vetId; }

    public LocalDate getDate() { return date; }
    public void setDate(LocalDate date) { this.date = date; }

    public String getDescription() { return description; }
    public void setDescription(String description) { this.description = description; }
}
