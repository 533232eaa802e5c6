package dev.kiln.samples.petclinic.service;

import dev.kiln.samples.petclinic.model.Owner;
import dev.kiln.samples.petclinic.model.Pet;
import dev.kiln.samples.petclinic.model.Vet;
import dev.kiln.samples.petclinic.model.Visit;
import dev.kiln.samples.petclinic.repository.OwnerRepository;
import dev.kiln.samples.petclinic.repository.PetRepository;
import dev.kiln.samples.petclinic.repository.StatsRepository;
import dev.kiln.samples.petclinic.repository.VetRepository;
import dev.kiln.samples.petclinic.repository.VisitRepository;
import org.springframework.cache.annotation.Cacheable;
import org.springframework.stereotype.Service;
import org.springframework.transaction.annotation.Transactional;

import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

// Read-only by default so H2 gets read-only connections for the many queries; writes opt in.
@Service
@Transactional(readOnly = true)
public class ClinicServiceImpl implements ClinicService {

    private static final int MAX_PAGE_SIZE = 200;

    private final OwnerRepository owners;
    private final PetRepository pets;
    private final VisitRepository visits;
    private final VetRepository vets;
    private final StatsRepository stats;

    public ClinicServiceImpl(OwnerRepository owners, PetRepository pets, VisitRepository visits,
                             VetRepository vets, StatsRepository stats) {
        this.owners = owners;
        this.pets = pets;
        this.visits = visits;
        this.vets = vets;
        this.stats = stats;
    }

    @Override
    public int countOwners() {
        return owners.count();
    }

    @Override
    public List<Owner> findOwners(String lastNamePrefix, int page, int size) {
        int limit = Math.max(1, Math.min(size, MAX_PAGE_SIZE));
        List<Owner> found = owners.findByLastNamePrefix(lastNamePrefix, Math.max(0, page) * limit, limit);
        attachPets(found);
        return found;
    }

    @Override
    public int countOwners(String lastNamePrefix) {
        return owners.countByLastNamePrefix(lastNamePrefix);
    }

    @Override
    public Owner findOwner(int id) {
        Owner owner = requireOwner(id);
        attachPets(Collections.singletonList(owner));
        List<Integer> petIds = new ArrayList<Integer>();
        Map<Integer, Pet> byId = new LinkedHashMap<Integer, Pet>();
        for (Pet pet : owner.getPets()) {
            petIds.add(pet.getId());
            byId.put(pet.getId(), pet);
            pet.setVisits(new ArrayList<Visit>());
        }
        for (Visit visit : visits.findByPetIds(petIds)) {
            byId.get(visit.getPetId()).getVisits().add(visit);
        }
        return owner;
    }

    @Override
    @Transactional
    public Owner createOwner(Owner owner) {
        List<Pet> newPets = owner.getPets() == null ? Collections.<Pet>emptyList() : owner.getPets();
        owner.setId(null);
        owner.setPets(new ArrayList<Pet>());
        owners.insert(owner);
        // Same transaction: an invalid pet rolls the owner back too.
        for (Pet pet : newPets) {
            owner.getPets().add(insertPet(owner.getId(), pet));
        }
        return owner;
    }

    @Override
    @Transactional
    public Pet addPet(int ownerId, Pet pet) {
        requireOwner(ownerId);
        return insertPet(ownerId, pet);
    }

    @Override
    @Transactional
    public Visit addVisit(int ownerId, int petId, Visit visit) {
        Pet pet = pets.findById(petId);
        if (pet == null || pet.getOwnerId() != ownerId) {
            throw new NotFoundException("owner " + ownerId + " has no pet " + petId);
        }
        if (visit.getVetId() == null) {
            visit.setVetId(vets.firstId());
        } else if (!vets.exists(visit.getVetId())) {
            throw new InvalidRequestException("no vet with id " + visit.getVetId());
        }
        if (visit.getDate() == null) {
            visit.setDate(LocalDate.now());
        }
        visit.setId(null);
        visit.setPetId(petId);
        return visits.insert(visit);
    }

    // Vets and pet types change rarely and every page lists them: caches, like Spring's own
    // petclinic. ReferenceDataWarmer fills them at start-up.
    @Override
    @Cacheable("vets")
    public List<Vet> findVets() {
        return Collections.unmodifiableList(vets.findAll());
    }

    @Override
    @Cacheable("petTypes")
    public List<String> findPetTypes() {
        return Collections.unmodifiableList(pets.findTypeNames());
    }

    @Override
    public Map<String, Object> statistics() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("totals", stats.totals());
        out.put("averagePetsPerOwner", Math.round(stats.averagePetsPerOwner() * 100) / 100.0);
        out.put("petsByType", stats.petsByType());
        out.put("topCities", stats.topCities(5));
        out.put("visitsPerYear", stats.visitsPerYear());
        out.put("busiestVets", stats.busiestVets(3));
        return out;
    }

    private Pet insertPet(int ownerId, Pet pet) {
        // Field constraints were checked by method validation; what is left needs the database.
        if (pet.getBirthDate().isAfter(LocalDate.now())) {
            throw new InvalidRequestException("pet birthDate is in the future");
        }
        Integer typeId = pets.findTypeId(pet.getType());
        if (typeId == null) {
            throw new InvalidRequestException("unknown pet type '" + pet.getType() + "'; known: " + pets.findTypeNames());
        }
        pet.setId(null);
        pet.setOwnerId(ownerId);
        pet.setVisits(null);
        return pets.insert(pet, typeId);
    }

    private Owner requireOwner(int id) {
        Owner owner = owners.findById(id);
        if (owner == null) {
            throw new NotFoundException("no owner with id " + id);
        }
        return owner;
    }

    private void attachPets(List<Owner> found) {
        Map<Integer, Owner> byId = new LinkedHashMap<Integer, Owner>();
        for (Owner o : found) {
            o.setPets(new ArrayList<Pet>());
            byId.put(o.getId(), o);
        }
        for (Pet pet : pets.findByOwnerIds(byId.keySet())) {
            byId.get(pet.getOwnerId()).getPets().add(pet);
        }
    }
}
