package dev.kiln.samples.petclinic.model;

import org.hibernate.validator.constraints.NotBlank;

import javax.validation.Valid;
import javax.validation.constraints.Pattern;
import javax.validation.constraints.Size;
import java.util.ArrayList;
import java.util.List;

/**
 * A pet owner; {@code pets} is filled only by queries that ask for it. The constraints mirror the
 * schema's columns and are checked on every request body ({@code @Valid}) and again by the
 * service's method validation.
 */
public class Owner {

    private Integer id;
    @NotBlank
    @Size(max = 30)
    private String firstName;
    @NotBlank
    @Size(max = 30)
    private String lastName;
    @NotBlank
    @Size(max = 255)
    private String address;
    @NotBlank
    @Size(max = 80)
    private String city;
    @NotBlank
    @Pattern(regexp = "\\d{1,20}", message = "must be 1 to 20 digits")
    private String telephone;
    @Valid
    private List<Pet> pets = new ArrayList<Pet>();

    public Integer getId() { return id; }
    public void setId(Integer id) { this.id = id; }

    public String getFirstName() { return firstName; }
    public void setFirstName(String firstName) { this.firstName = firstName; }

    public String getLastName() { return lastName; }
    public void setLastName(String lastName) { this.lastName = lastName; }

    public String getAddress() { return address; }
    public void setAddress(String address) { this.address = address; }

    public String getCity() { return city; }
    public void setCity(String city) { this.city = city; }

    public String getTelephone() { return telephone; }
    public void setTelephone(String telephone) { this.telephone = telephone; }

    public List<Pet> getPets() { return pets; }
    public void setPets(List<Pet> pets) { this.pets = pets; }
}
