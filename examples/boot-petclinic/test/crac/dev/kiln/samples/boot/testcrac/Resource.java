package dev.kiln.samples.boot.testcrac;

/** Test-only CRaC backend (the shape of jdk.crac.Resource) that org.crac forwards to. */
public interface Resource {
    void beforeCheckpoint(Context<? extends Resource> context) throws Exception;

    void afterRestore(Context<? extends Resource> context) throws Exception;
}
