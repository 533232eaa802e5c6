package dev.kiln.samples.boot;

import com.fasterxml.jackson.annotation.JsonInclude;

import java.time.LocalDate;
import java.util.List;

/** The JSON shapes of the API, as records (Jackson reads and writes them by component name). */
final class Model {

    private Model() {}

    /** An owner; {@code pets} is empty in a request body without pets. */
    record Owner(Integer id, String firstName, String lastName, String address, String city,
                 String telephone, List<Pet> pets) {}

    /** A pet; {@code visits} only where an owner is read with them (GET /owners/{id}). */
    record Pet(Integer id, String name, LocalDate birthDate, String type,
               @JsonInclude(JsonInclude.Include.NON_NULL) List<Visit> visits) {}

    record Visit(Integer id, Integer petId, Integer vetId, LocalDate date, String description) {}

    record Vet(Integer id, String firstName, String lastName, List<String> specialties) {}

    record OwnerPage(long total, int page, int size, List<Owner> owners) {}
}
