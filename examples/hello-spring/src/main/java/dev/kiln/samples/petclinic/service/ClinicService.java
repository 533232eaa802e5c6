package dev.kiln.samples.petclinic.service;

import dev.kiln.samples.petclinic.model.Owner;
import dev.kiln.samples.petclinic.model.Pet;
import dev.kiln.samples.petclinic.model.Vet;
import dev.kiln.samples.petclinic.model.Visit;
import org.springframework.validation.annotation.Validated;

import javax.validation.Valid;
import javax.validation.constraints.NotNull;
import java.util.List;
import java.util.Map;

/**
 * The clinic's use cases. An interface because the transactional, caching and validating proxies
 * are JDK dynamic proxies: Spring 4.3's CGLIB class proxies do not work on JDK 17+.
 *
 * <p>{@code @Validated}: the method-validation proxy checks the constraints below (and the
 * entities' own, through {@code @Valid}) on every call, whoever the caller; a violation raises
 * {@link javax.validation.ConstraintViolationException}. Constraints live on this interface
 * because Bean Validation forbids adding parameter constraints in an implementation.
 */
@Validated
public interface ClinicService {

    int countOwners();

    /** One page of owners whose last name starts with {@code lastNamePrefix}, with their pets. */
    List<Owner> findOwners(@NotNull String lastNamePrefix, int page, int size);

    int countOwners(@NotNull String lastNamePrefix);

    /** The owner with pets and each pet's visits; throws {@link NotFoundException}. */
    Owner findOwner(int id);

    Owner createOwner(@NotNull @Valid Owner owner);

    Pet addPet(int ownerId, @NotNull @Valid Pet pet);

    Visit addVisit(int ownerId, int petId, @NotNull @Valid Visit visit);

    List<Vet> findVets();

    List<String> findPetTypes();

    Map<String, Object> statistics();
}
