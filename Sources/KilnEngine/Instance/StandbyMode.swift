/// When a standby copy runs the steps that make it a serving instance: its identity (hostname,
/// `kiln.instance`, the random reseed), the CRaC `afterRestore` phase, readiness and the
/// restore hook.
///
/// Both keep a copy's identity its own: each standby copy is a restore of its own, so no two
/// copies ever share a hostname, an instance id or random state. They differ in *when* the
/// service runs its `afterRestore` and so in what a thaw costs.
public enum StandbyMode: String, Codable, Sendable, CaseIterable {
    /// Frozen right after the runtime's restore (CRIU leaves its processes stopped), before any
    /// of those steps; the thaw runs them. The copy gets its identity when it is handed out,
    /// exactly as a copy restored at that moment would, and a thaw costs what the service's
    /// `afterRestore` costs (the Spring sample: Tomcat's restart, ~10 ms). The default.
    case thaw
    /// Restored like any copy (identity, `afterRestore`, readiness, restore hook), given a few
    /// requests to each of the snapshot's warm-up paths, then frozen ready to answer; a thaw
    /// only unfreezes it. Its identity was assigned when it was restored, not when it is handed
    /// out, and it holds the memory its `afterRestore` and those requests touched while it waits.
    case ready

    /// The help text of the options that choose it.
    public static let help =
        "When standby copies run their afterRestore: 'thaw' (default: at the thaw, so a copy gets its identity when it is handed out; the thaw costs the service's afterRestore) or 'ready' (at their restore, followed by a few requests to the warm-up paths and, with kiln's agent, a trim of the JVM's free native memory ~6 s later, then frozen ready to answer: a thaw costs a few milliseconds and each copy holds more memory; the identity, still each copy's own, is assigned at the restore)."
}
