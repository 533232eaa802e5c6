package dev.kiln.samples.petclinic.db;

import java.time.LocalDate;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * Generates the seed rows. A fixed random seed and fixed date ranges (never "today") so every
 * start produces the same database: ids and answers are reproducible across runs and machines.
 */
final class SeedData {

    static final String[] SPECIALTIES = {"radiology", "surgery", "dentistry", "cardiology", "dermatology",
            "oncology", "exotics"};
    static final String[] PET_TYPES = {"cat", "dog", "lizard", "snake", "bird", "hamster", "rabbit", "turtle"};

    private static final String[] FIRST_NAMES = {"George", "Betty", "Eduardo", "Harold", "Peter", "Jean",
            "Jeff", "Maria", "David", "Carlos", "Amara", "Yuki", "Lena", "Omar", "Priya", "Sofia", "Mateo",
            "Chloe", "Ivan", "Noor", "Hana", "Liam", "Emma", "Olivia", "Noah", "Ava", "Lucas", "Mia",
            "Ethan", "Zoe", "Arjun", "Ingrid", "Tomas", "Aisha", "Kenji", "Elif", "Pablo", "Freya"};
    private static final String[] LAST_NAMES = {"Franklin", "Davis", "Rodriquez", "Black", "McTavish",
            "Coleman", "Escobito", "Schroeder", "Estaban", "Carter", "Leary", "Douglas", "Ortega", "Stevens",
            "Jenkins", "Nakamura", "Okafor", "Lindqvist", "Haddad", "Sharma", "Rossi", "Novak", "Kowalski",
            "Murphy", "Dubois", "Silva", "Yilmaz", "Tanaka", "Andersen", "Moreau", "Fischer", "Costa",
            "Ivanova", "Kim", "Nguyen", "Okoye", "Petrov", "Quinn", "Reyes", "Sato", "Walsh", "Zhang"};
    private static final String[] STREETS = {"E. Liberty St.", "Cherry Ave.", "Ash Lane", "Harbor Rd.",
            "W. Main St.", "Oak Street", "Maple Drive", "Pine Court", "Lakeview Blvd.", "Elm Terrace",
            "Mill Road", "Station Square"};
    private static final String[] CITIES = {"Madison", "Sun Prairie", "McFarland", "Windsor", "Monona",
            "Waunakee", "Middleton", "Verona", "Fitchburg", "Stoughton", "Oregon", "Cottage Grove",
            "DeForest", "Mount Horeb", "Cross Plains"};
    private static final String[] PET_NAMES = {"Leo", "Basil", "Rosy", "Jewel", "Iggy", "George", "Samantha",
            "Max", "Lucky", "Mulligan", "Freddy", "Sly", "Luna", "Milo", "Bella", "Charlie", "Daisy", "Oscar",
            "Pepper", "Simba", "Nala", "Coco", "Rocky", "Ziggy", "Biscuit", "Maple", "Pickles", "Shadow",
            "Tiger", "Willow", "Ginger", "Hazel", "Juniper", "Kiwi", "Noodle", "Olive", "Pumpkin", "Rusty"};
    private static final String[] VISIT_REASONS = {"rabies shot", "neutered", "spayed", "annual checkup",
            "dental cleaning", "limping", "skin rash", "ear infection", "vaccination booster",
            "weight check", "x-ray follow-up", "stitches removed", "allergy consultation", "nail trim",
            "blood panel", "microchip implant"};

    private static final LocalDate BIRTH_FROM = LocalDate.of(2008, 1, 1);
    private static final int BIRTH_SPAN_DAYS = 16 * 365;
    private static final LocalDate VISIT_FROM = LocalDate.of(2019, 1, 1);
    private static final int VISIT_SPAN_DAYS = 6 * 365;

    static final int VETS = 24;

    private final Random random = new Random(20240601L);

    List<Object[]> vets() {
        List<Object[]> rows = new ArrayList<Object[]>();
        for (int id = 1; id <= VETS; id++) {
            rows.add(new Object[] {id, pick(FIRST_NAMES), pick(LAST_NAMES)});
        }
        return rows;
    }

    /** Zero to two specialties per vet. */
    List<Object[]> vetSpecialties() {
        List<Object[]> rows = new ArrayList<Object[]>();
        for (int vet = 1; vet <= VETS; vet++) {
            int first = random.nextInt(SPECIALTIES.length);
            int n = random.nextInt(3);
            for (int i = 0; i < n; i++) {
                rows.add(new Object[] {vet, (first + i) % SPECIALTIES.length + 1});
            }
        }
        return rows;
    }

    Object[] owner(int id) {
        return new Object[] {id, pick(FIRST_NAMES), pick(LAST_NAMES),
                (1 + random.nextInt(9999)) + " " + pick(STREETS), pick(CITIES),
                String.format("608%07d", random.nextInt(10000000))};
    }

    /** One to three pets. */
    int petsFor() {
        return 1 + random.nextInt(3);
    }

    Object[] pet(int id, int ownerId) {
        return new Object[] {id, pick(PET_NAMES), java.sql.Date.valueOf(BIRTH_FROM.plusDays(random.nextInt(BIRTH_SPAN_DAYS))),
                1 + random.nextInt(PET_TYPES.length), ownerId};
    }

    /** Zero to six visits. */
    int visitsFor() {
        return random.nextInt(7);
    }

    Object[] visit(int id, int petId) {
        return new Object[] {id, petId, 1 + random.nextInt(VETS),
                java.sql.Date.valueOf(VISIT_FROM.plusDays(random.nextInt(VISIT_SPAN_DAYS))), pick(VISIT_REASONS)};
    }

    private String pick(String[] values) {
        return values[random.nextInt(values.length)];
    }
}
