import Foundation

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

    public var endpoint: ServiceEndpoint { ServiceEndpoint(networkNamespacePath: networkNamespacePath, port: port) }
}

/// One row of `kiln ps`.
public struct InstanceStatus: Codable, Sendable {
    public var id: String
    public var snapshot: String
    public var pid: Int32
    /// "running", or what the runtime says ("stopped", "gone" when it no longer knows it).
    public var state: String
    public var createdAt: Date
    public var ageSeconds: Double
    public var memory: MemoryUsage
    public var restoreMs: Double
    public var firstResponseMs: Double
    public var sharesMemory: Bool
}
