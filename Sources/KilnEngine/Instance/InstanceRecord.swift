import Foundation
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem

/// A running copy restored from a snapshot, as kiln records it in `<state>/instances/<id>/`.
public struct InstanceRecord: Codable, Sendable, Equatable {
    public var id: String
    public var snapshot: String
    /// Host pid of the container's init.
    public var pid: Int32
    /// Host pid of its `kiln-shim`.
    public var shimPid: Int32
    public var port: Int
    public var createdAt: Date
    public var networkNamespacePath: String
    public var cgroupPath: String
    /// The service's output.
    public var logPath: String
    /// From the start of the restore to the end of `runc restore`.
    public var restoreMs: Double
    /// From the start of the restore to the first successful readiness response.
    public var firstResponseMs: Double
    /// Whether its memory is offered to KSM, to be shared with other copies.
    public var sharesMemory: Bool
    /// Its place on a network (address, veth, CNI result: what detaching it needs), or nil for a
    /// loopback-only copy (and in records older than networks).
    public var network: NetworkAttachment?
    /// How long the copy's CRaC afterRestore took (restore.request to restore.done, as kiln saw
    /// it), included in ``firstResponseMs``; nil without the agent.
    public var afterRestoreMs: Double? = nil
    /// Where the restore's time went (nil for cold starts and older records).
    public var phases: RestorePhases? = nil
    /// A standby copy: restored, then frozen in its cgroup before its identity step; not
    /// serving until thawed (nil once thawed, and for every other copy).
    public var standby: Bool? = nil
    /// When the standby copy runs its identity and afterRestore steps (nil: ``StandbyMode/thaw``,
    /// also in records older than the choice).
    public var standbyMode: StandbyMode? = nil
    /// How long the service ran between the end of the runtime's restore and its freeze (for a
    /// ``StandbyMode/thaw`` standby copy, its only run with the bake's identity; a
    /// ``StandbyMode/ready`` one ran its identity, afterRestore and readiness steps meanwhile).
    public var frozenAfterMs: Double? = nil
    /// Pages of a ``StandbyMode/thaw`` standby copy copied on write while it was frozen: those
    /// an earlier copy of the snapshot wrote first (``FirstWrites``), taken off its thaw.
    public var copiedAheadPages: Int? = nil
    /// Bytes of free malloc memory a ``StandbyMode/ready`` standby copy's JVM gave back to the
    /// kernel before its freeze (nil: not trimmed, e.g. without kiln's agent).
    public var nativeHeapTrimmedBytes: Int64? = nil
    /// When a standby copy was thawed, and from the thaw to its first response (ms).
    public var thawedAt: Date? = nil
    public var thawMs: Double? = nil

    /// Its address on its network, without prefix.
    public var address: String? { network?.ip }

    public var endpoint: ServiceEndpoint { ServiceEndpoint(networkNamespacePath: networkNamespacePath, port: port, address: address) }

    /// Instance ids are a snapshot name (at most 40 characters) and a suffix (`-1a2b3c`, `-cold`).
    static let maximumIDLength = 64

    /// Decodes and checks an instance record (`instance.json`). kiln acts on a record as root:
    /// it removes the directory named by its id, the network namespace and cgroup at its paths,
    /// and reaps its shim pid; so a damaged record must not name `..`, pid 0 or -1 (`waitpid`
    /// would reap any child), or a port out of range. Every problem is a ``KilnError``.
    public static func decode(_ data: Data, source: String) throws -> InstanceRecord {
        let record: InstanceRecord
        do {
            record = try SnapshotManifest.decoder.decode(InstanceRecord.self, from: data)
        } catch {
            throw unusable(source, "it is not a valid instance record (\(error))")
        }
        if let problem = record.problem { throw unusable(source, problem) }
        return record
    }

    /// What is wrong with a decoded record, or nil.
    var problem: String? {
        guard InputValidation.isIdentifier(id, maxLength: Self.maximumIDLength) else { return "its id '\(id)' is invalid" }
        guard (try? SnapshotStore.validate(name: snapshot)) != nil else { return "its snapshot name '\(snapshot)' is invalid" }
        guard pid > 0, shimPid > 0 else { return "its pids (\(pid), shim \(shimPid)) are not positive" }
        guard InputValidation.isServicePort(port) else { return "its port \(port) is out of range" }
        if let network, network.namespacePath != networkNamespacePath { return "its network namespace and its network's differ" }
        if let network, IPv4.parse(network.ip) == nil { return "its address '\(network.address)' is not an IPv4 address" }
        for (what, path) in [("network namespace", networkNamespacePath), ("cgroup", cgroupPath), ("log", logPath)]
        where !InputValidation.isCleanPath(path) {
            return "its \(what) path '\(path)' is not a clean path"
        }
        return nil
    }

    private static func unusable(_ source: String, _ problem: String) -> KilnError {
        KilnError(
            .instanceNotFound, "the instance record \(source) is unusable: \(problem)",
            hint: "'kiln gc' removes what is left of an instance kiln can no longer manage")
    }
}

/// One row of `kiln ps`.
public struct InstanceStatus: Codable, Sendable {
    public var id: String
    public var snapshot: String
    public var pid: Int32
    /// "running", "standby" (a standby copy, frozen), or what the runtime says ("paused",
    /// "stopped", "gone" when it no longer knows it).
    public var state: String
    public var createdAt: Date
    public var ageSeconds: Double
    public var memory: MemoryUsage
    public var restoreMs: Double
    public var firstResponseMs: Double
    public var sharesMemory: Bool
    /// Its address on its network, or nil (loopback only).
    public var address: String?
    /// Whether its cgroup is frozen (a standby copy, or one paused by hand).
    public var frozen: Bool = false
}

/// Where one restore's time went, from the start of `restoreOne` to the first response, in order;
/// the phases add up to the copy's ``InstanceRecord/firstResponseMs`` (verification happens once
/// per `kiln run`, before them).
public struct RestorePhases: Codable, Sendable, Equatable {
    /// Scratch directory, network namespace (or one taken from a pool), network, bundle.
    public var prepareMs: Double
    /// `runc restore`, CRIU included, until runc returns with the copy running.
    public var runtimeMs: Double
    /// CRIU's own restore time, from its statistics (`stats-restore`), within ``runtimeMs``.
    public var criuRestoreMs: Double?
    /// The copy's hostname, and the check that no socket is bound to the bake-time address.
    public var identityMs: Double
    /// The CRaC agent's identity refresh and the service's `afterRestore` (nil without the agent).
    public var afterRestoreMs: Double?
    /// Readiness probe to the first 2xx (and the restore hook, if any).
    public var firstResponseMs: Double

    public init(
        prepareMs: Double, runtimeMs: Double, criuRestoreMs: Double?, identityMs: Double, afterRestoreMs: Double?, firstResponseMs: Double
    ) {
        self.prepareMs = prepareMs
        self.runtimeMs = runtimeMs
        self.criuRestoreMs = criuRestoreMs
        self.identityMs = identityMs
        self.afterRestoreMs = afterRestoreMs
        self.firstResponseMs = firstResponseMs
    }
}
