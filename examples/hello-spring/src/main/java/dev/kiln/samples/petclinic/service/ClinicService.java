package dev.kiln.samples.petclinic.service;

import dev.kiln.samples.petclinic.model.Owner;
import dev.kiln.samples.petclinic.model.Pet;
import dev.kiln.samples.petclinic.model.Vet;
import dev.kiln.samples.petclinic.model.Visit;

import java.util.List;
import java.util.Map;

/**
 * The clinic's use cases. An interface because the transactional and caching proxies are JDK
 * dynamic proxies: Spring 4.3's CGLIB class proxies do not work on JDK 17+.
 */
public interface ClinicService {

    int countOwners();

    /** One page of owners whose last name starts with {@code lastNamePrefix}, with their pets. */
    List<Owner> findOwners(String lastNamePrefix, int page, int size);

    int countOwners(String lastNamePrefix);

    /** The owner with pets and each pet's visits; throws {@link NotFoundException}. */
    Owner findOwner(int id);

    Owner createOwner(Owner owner);

    Pet addPet(int ownerId, Pet pet);

    Visit addVisit(int ownerId, int petId, Visit visit);

    List<Vet> findVets();

    List<String> findPetTypes();

    Map<String, Object> statistics();
}
