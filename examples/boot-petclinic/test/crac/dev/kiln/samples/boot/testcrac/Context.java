package dev.kiln.samples.boot.testcrac;

/** Test-only CRaC backend: a context is itself a resource that others register with. */
public abstract class Context<R extends Resource> implements Resource {
    public abstract void register(R resource);
}
