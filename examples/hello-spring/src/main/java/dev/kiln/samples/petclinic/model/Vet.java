package dev.kiln.samples.petclinic.model;

import java.util.ArrayList;
import java.util.List;

/** A veterinarian and the names of their specialties. */
public class Vet {

    private Integer id;
    private String firstName;
    private String lastName;
    private List<String> specialties = new ArrayList<String>();

    public Integer getId() { return id; }
    public void setId(Integer id) { this.id = id; }

    public String getFirstName() { return firstName; }
    public void setFirstName(String firstName) { this.firstName = firstName; }

    public String getLastName() { return lastName; }
    public void setLastName(String lastName) { this.lastName = lastName; }

    public List<String> getSpecialties() { return specialties; }
    public void setSpecialties(List<String> specialties) { this.specialties = specialties; }
}
