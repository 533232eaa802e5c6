package dev.kiln.samples.boot;

import dev.kiln.samples.boot.ApiErrors.BadRequestException;
import dev.kiln.samples.boot.Model.Owner;
import dev.kiln.samples.boot.Model.OwnerPage;
import dev.kiln.samples.boot.Model.Pet;
import dev.kiln.samples.boot.Model.Vet;
import org.springframework.http.HttpStatus;
import org.springframework.http.ResponseEntity;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.PostMapping;
import org.springframework.web.bind.annotation.RequestBody;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;

import java.time.LocalDate;
import java.util.List;

/** The petclinic API: owners (with pets and visits) and vets, as JSON. */
@RestController
public class ClinicController {

    private static final int MAX_PAGE_SIZE = 200;

    private final ClinicRepository clinic;

    public ClinicController(ClinicRepository clinic) {
        this.clinic = clinic;
    }

    /** Owners by last-name prefix (every owner without one), paged, each with their pets. */
    @GetMapping("/owners")
    public OwnerPage findOwners(@RequestParam(defaultValue = "") String lastName,
                                @RequestParam(defaultValue = "0") int page,
                                @RequestParam(defaultValue = "20") int size) {
        int p = Math.max(0, page);
        int s = Math.max(1, Math.min(size, MAX_PAGE_SIZE));
        List<Owner> owners = clinic.findOwners(lastName, p, s);
        return new OwnerPage(clinic.countOwners(lastName), p, owners.size(), owners);
    }

    @GetMapping("/owners/{id}")
    public Owner findOwner(@PathVariable int id) {
        return clinic.findOwner(id);
    }

    /** Creates an owner and any pets in the body, in one transaction: 201 with the new ids. */
    @PostMapping("/owners")
    public ResponseEntity<Owner> createOwner(@RequestBody Owner owner) {
        validate(owner);
        return ResponseEntity.status(HttpStatus.CREATED).body(clinic.createOwner(owner));
    }

    @GetMapping("/vets")
    public List<Vet> vets() {
        return clinic.findVets();
    }

    /** The schema's column limits, checked by hand (there is no Bean Validation among these jars). */
    static void validate(Owner o) {
        required("firstName", o.firstName(), 30);
        required("lastName", o.lastName(), 30);
        required("address", o.address(), 255);
        required("city", o.city(), 80);
        required("telephone", o.telephone(), 20);
        if (!o.telephone().matches("\\d{1,20}")) {
            throw new BadRequestException("telephone must be 1 to 20 digits");
        }
        if (o.pets() != null) {
            for (int i = 0; i < o.pets().size(); i++) {
                Pet pet = o.pets().get(i);
                if (pet == null) {
                    throw new BadRequestException("pets[" + i + "] is null");
                }
                required("pets[" + i + "].name", pet.name(), 30);
                required("pets[" + i + "].type", pet.type(), 80);
                if (pet.birthDate() == null || pet.birthDate().isAfter(LocalDate.now())) {
                    throw new BadRequestException("pets[" + i + "].birthDate is required and not in the future");
                }
            }
        }
    }

    private static void required(String field, String value, int maxLength) {
        if (value == null || value.isBlank()) {
            throw new BadRequestException(field + " is required");
        }
        if (value.length() > maxLength) {
            throw new BadRequestException(field + " is longer than " + maxLength + " characters");
        }
    }
}
