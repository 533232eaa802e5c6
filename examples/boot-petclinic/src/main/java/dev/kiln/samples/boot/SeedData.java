package dev.kiln.samples.boot;

import java.time.LocalDate;
import java.util.Random;

/**
 * Generates the seed rows. A fixed random seed and fixed date ranges (never "today"), so every
 * start builds the same database: ids and answers are the same across runs and machines.
 */
final class SeedData {

    static final String[] SPECIALTIES = {"radiology", "surgery", "dentistry", "cardiology", "dermatology",
            "oncology", "exotics"};
    static final String[] PET_TYPES = {"cat", "dog", "lizard", "snake", "bird", "hamster", "rabbit", "turtle"};
    static final int VETS = 24;

    private static final String[] FIRST_NAMES = {"George", "Betty", "Eduardo", "Harold", "Peter", "Jean",
            "Jeff", "Maria", "David", "Carlos", "Amara", "Yuki", "Lena", "Omar", "Priya", "Sofia", "Mateo",
            "Chloe", "Ivan", "Noor", "Hana", "Liam", "Emma", "Olivia", "Noah", "Ava", "Lucas", "Mia"};
    private static final String[] LAST_NAMES = {"Franklin", "Davis", "Rodriquez", "Black", "McTavish",
            "Coleman", "Escobito", "Schroeder", "Estaban", "Carter", "Leary", "Douglas", "Ortega", "Stevens",
            "Jenkins", "Nakamura", "Okafor", "Lindqvist", "Haddad", "Sharma", "Rossi", "Novak", "Kowalski",
            "Murphy", "Dubois", "Silva", "Yilmaz", "Tanaka", "Andersen", "Moreau", "Fischer", "Costa"};
    private static final String[] STREETS = {"E. Liberty St.", "Cherry Ave.", "Ash Lane", "Harbor Rd.",
            "W. Main St.", "Oak Street", "Maple Drive", "Pine Court", "Lakeview Blvd.", "Elm Terrace"};
    private static final String[] CITIES = {"Madison", "Sun Prairie", "McFarland", "Windsor", "Monona",
            "Waunakee", "Middleton", "Verona", "Fitchburg", "Stoughton", "Oregon", "Cottage Grove"};
    private static final String[] PET_NAMES = {"Leo", "Basil", "Rosy", "Jewel", "Iggy", "George", "Samantha",
            "Max", "Lucky", "Mulligan", "Freddy", "Sly", "Luna", "Milo", "Bella", "Charlie", "Daisy", "Oscar",
            "Pepper", "Simba", "Nala", "Coco", "Rocky", "Ziggy", "Biscuit", "Maple", "Pickles", "Shadow"};
    private static final String[] VISIT_REASONS = {"rabies shot", "neutered", "spayed", "annual checkup",
            "dental cleaning", "limping", "skin rash", "ear infection", "vaccination booster",
            "weight check", "x-ray follow-up", "stitches removed", "allergy consultation", "nail trim"};

    private static final LocalDate BIRTH_FROM = LocalDate.of(2008, 1, 1);
    private static final LocalDate VISIT_FROM = LocalDate.of(2019, 1, 1);

    private final Random random = new Random(20240601L);

    String firstName() { return pick(FIRST_NAMES); }

    String lastName() { return pick(LAST_NAMES); }

    String address() { return (1 + random.nextInt(9999)) + " " + pick(STREETS); }

    String city() { return pick(CITIES); }

    String telephone() { return String.format("608%07d", random.nextInt(10_000_000)); }

    /** One to three pets per owner. */
    int petsPerOwner() { return 1 + random.nextInt(3); }

    String petName() { return pick(PET_NAMES); }

    LocalDate birthDate() { return BIRTH_FROM.plusDays(random.nextInt(16 * 365)); }

    /** A pet type id, 1-based like the identity column. */
    int petType() { return 1 + random.nextInt(PET_TYPES.length); }

    /** Zero to six visits per pet. */
    int visitsPerPet() { return random.nextInt(7); }

    int vet() { return 1 + random.nextInt(VETS); }

    LocalDate visitDate() { return VISIT_FROM.plusDays(random.nextInt(6 * 365)); }

    String visitReason() { return pick(VISIT_REASONS); }

    /** Zero to two specialties for a vet, as 1-based ids. */
    int[] specialties() {
        int first = random.nextInt(SPECIALTIES.length);
        int[] ids = new int[random.nextInt(3)];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (first + i) % SPECIALTIES.length + 1;
        }
        return ids;
    }

    private String pick(String[] values) {
        return values[random.nextInt(values.length)];
    }
}
