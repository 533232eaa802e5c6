package dev.kiln.samples.petclinic.web;

import dev.kiln.samples.petclinic.model.Vet;
import dev.kiln.samples.petclinic.service.ClinicService;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

import java.util.List;
import java.util.Map;

@RestController
public class ClinicController {

    private final ClinicService clinic;

    public ClinicController(ClinicService clinic) {
        this.clinic = clinic;
    }

    @GetMapping("/vets")
    public List<Vet> vets() {
        return clinic.findVets();
    }

    @GetMapping("/pettypes")
    public List<String> petTypes() {
        return clinic.findPetTypes();
    }

    /** Aggregates over the whole database; deliberately uncached, so each call does real work. */
    @GetMapping("/stats")
    public Map<String, Object> stats() {
        return clinic.statistics();
    }
}
