package dev.kiln.samples.petclinic.service;

import org.springframework.context.ApplicationContext;
import org.springframework.context.event.ContextRefreshedEvent;
import org.springframework.context.event.EventListener;
import org.springframework.stereotype.Component;

/**
 * Fills the reference-data caches once the root context is up (after the database is seeded), as
 * services do so that their first requests do not pay for it. Goes through the service's proxy,
 * so the calls are validated, transactional and cached exactly like a request's.
 */
@Component
public class ReferenceDataWarmer {

    private final ApplicationContext context;
    private final ClinicService clinic;

    public ReferenceDataWarmer(ApplicationContext context, ClinicService clinic) {
        this.context = context;
        this.clinic = clinic;
    }

    // The web context's refresh event reaches this (parent) context's listeners too: act on ours only.
    @EventListener
    public void warm(ContextRefreshedEvent event) {
        if (event.getApplicationContext() == context) {
            clinic.findVets();
            clinic.findPetTypes();
        }
    }
}
