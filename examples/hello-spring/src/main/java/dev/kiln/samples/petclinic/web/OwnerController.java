package dev.kiln.samples.petclinic.web;

import dev.kiln.samples.petclinic.model.Owner;
import dev.kiln.samples.petclinic.model.Pet;
import dev.kiln.samples.petclinic.model.Visit;
import dev.kiln.samples.petclinic.service.ClinicService;
import org.springframework.http.HttpStatus;
import org.springframework.http.ResponseEntity;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.PostMapping;
import org.springframework.web.bind.annotation.RequestBody;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;

import javax.validation.Valid;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

@RestController
public class OwnerController {

    private final ClinicService clinic;

    public OwnerController(ClinicService clinic) {
        this.clinic = clinic;
    }

    /** Owners by last-name prefix (all owners without one), paged, each with their pets. */
    @GetMapping("/owners")
    public Map<String, Object> findOwners(@RequestParam(defaultValue = "") String lastName,
                                          @RequestParam(defaultValue = "0") int page,
                                          @RequestParam(defaultValue = "20") int size) {
        List<Owner> owners = clinic.findOwners(lastName, page, size);
        Map<String, Object> body = new LinkedHashMap<String, Object>();
        body.put("total", clinic.countOwners(lastName));
        body.put("page", Math.max(0, page));
        body.put("size", owners.size());
        body.put("owners", owners);
        return body;
    }

    @GetMapping("/owners/{id}")
    public Owner findOwner(@PathVariable int id) {
        return clinic.findOwner(id);
    }

    /**
     * Creates an owner (and any pets in the body) in one transaction; 201 with the stored owner.
     * {@code @Valid}: a body that breaks the constraints on Owner (and its pets) answers 400.
     */
    @PostMapping("/owners")
    public ResponseEntity<Owner> createOwner(@Valid @RequestBody Owner owner) {
        return new ResponseEntity<Owner>(clinic.createOwner(owner), HttpStatus.CREATED);
    }

    @PostMapping("/owners/{ownerId}/pets")
    public ResponseEntity<Pet> addPet(@PathVariable int ownerId, @Valid @RequestBody Pet pet) {
        return new ResponseEntity<Pet>(clinic.addPet(ownerId, pet), HttpStatus.CREATED);
    }

    /** Books a visit; the body may omit "date" (today) and "vetId" (any vet). */
    @PostMapping("/owners/{ownerId}/pets/{petId}/visits")
    public ResponseEntity<Visit> addVisit(@PathVariable int ownerId, @PathVariable int petId,
                                          @Valid @RequestBody Visit visit) {
        return new ResponseEntity<Visit>(clinic.addVisit(ownerId, petId, visit), HttpStatus.CREATED);
    }
}
