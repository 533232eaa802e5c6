import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem

/// One running copy of a function that the gateway sends requests to.
public struct GatewayInstance: Sendable, Equatable {
    /// How the instance came to be.
    public enum Origin: String, Codable, Sendable {
        /// Restored from the function's snapshot: the normal path.
        case restored
        /// The restore failed and the function's command was started from scratch instead.
        case coldStart = "cold-start"
        /// A standby copy (restored ahead of demand, frozen), thawed when a request needed it.
        case thawed = "thawed-standby"
    }

    public var id: String
    public var function: String
    /// Where its service listens (a port inside its own network namespace).
    public var endpoint: ServiceEndpoint
    /// Host pid of its main process, watched for liveness.
    public var pid: Int32
    public var origin: Origin
    /// kiln's record of it (nil for instances that are not kiln containers, e.g. in tests).
    public var record: InstanceRecord?

    public init(id: String, function: String, endpoint: ServiceEndpoint, pid: Int32, origin: Origin, record: InstanceRecord? = nil) {
        self.id = id
        self.function = function
        self.endpoint = endpoint
        self.pid = pid
        self.origin = origin
        self.record = record
    }
}

/// What a launch produced and how: a restore, or a cold start standing in for a failed one.
public struct LaunchReport: Sendable {
    public var instance: GatewayInstance
    /// How long the successful restore took, to its first readiness answer.
    public var restoreDuration: Duration?
    /// Why the restore failed, when the instance comes from a cold start.
    public var restoreFailure: String?
    /// How long the fallback cold start took, to its first readiness answer.
    public var coldStartDuration: Duration?

    public init(instance: GatewayInstance, restoreDuration: Duration? = nil, restoreFailure: String? = nil, coldStartDuration: Duration? = nil) {
        self.instance = instance
        self.restoreDuration = restoreDuration
        self.restoreFailure = restoreFailure
        self.coldStartDuration = coldStartDuration
    }
}

/// A standby copy restored and frozen (``InstanceProvider/launchStandby(_:)``).
public struct StandbyReport: Sendable {
    public var instance: GatewayInstance
    /// From the start of its restore to its freeze.
    public var duration: Duration
    /// Its memory (PSS) once frozen, if it could be measured.
    public var memoryBytes: Int?
    /// Its service's listening socket is open while it is frozen (kiln: a ``StandbyMode/ready``
    /// copy, frozen after its warm-up): connections to it can be made ahead of its first
    /// request. The kernel completes their handshakes and queues them until the service accepts
    /// them after its unfreeze, so none of the service's idle timeouts runs on them meanwhile.
    public var acceptsConnectionsWhileFrozen: Bool

    public init(instance: GatewayInstance, duration: Duration, memoryBytes: Int?, acceptsConnectionsWhileFrozen: Bool = false) {
        self.instance = instance
        self.duration = duration
        self.memoryBytes = memoryBytes
        self.acceptsConnectionsWhileFrozen = acceptsConnectionsWhileFrozen
    }
}

/// A launch that produced no instance: the restore failed, and so did the cold start after it
/// (nil when no cold start was tried).
public struct LaunchFailure: Error, Sendable, CustomStringConvertible {
    public var restoreError: String
    public var coldStartError: String?

    public init(restoreError: String, coldStartError: String?) {
        self.restoreError = restoreError
        self.coldStartError = coldStartError
    }

    public var description: String {
        guard let coldStartError else { return "restore failed: \(restoreError)" }
        return "restore failed: \(restoreError); the cold start instead failed too: \(coldStartError)"
    }
}

/// Where instances come from: the seam between the gateway's routing, queueing and scaling and
/// kiln's containers. ``KilnInstanceProvider`` restores snapshots; tests use a fake, so the
/// gateway's decisions can be tested without root, runc or a JVM.
public protocol InstanceProvider: Sendable {
    /// Whether `function` names something this provider can run. Called on every request for a
    /// function the gateway has not seen yet, so it must be cheap (no verification).
    func functionExists(_ function: String) -> Bool
    /// Every function this provider could run (for the admin API).
    func functionNames() -> [String]
    /// Checks a function before its first launch (kiln: verifies every snapshot image file); a
    /// function that fails is not used.
    func prepare(_ function: String) async throws
    /// Starts one instance and returns once it answers. Throws ``LaunchFailure`` when nothing
    /// could be started.
    func launch(_ function: String) async throws -> LaunchReport
    /// Whether the instance's process is still there (called often: keep it cheap).
    func isAlive(_ instance: GatewayInstance) -> Bool
    /// Stops an instance and removes all it had. Must not fail: it logs instead.
    func terminate(_ instance: GatewayInstance) async
    /// Releases what the provider holds beside instances (kiln: prepared network namespaces),
    /// once every instance is gone.
    func shutdown() async
    /// Restores one standby copy of `function` and freezes it before its identity step.
    func launchStandby(_ function: String) async throws -> StandbyReport
    /// Thaws a standby copy, gives it its identity and returns once it answers; on failure the
    /// copy is gone.
    func thaw(_ standby: GatewayInstance) async throws -> LaunchReport
    /// Hands out a standby copy that needs nothing done before it takes requests, at once and
    /// without blocking (kiln: a ``StandbyMode/ready`` copy, still frozen: its requests are
    /// queued by the kernel until ``handedOut(_:)`` unfreezes it); nil for a copy that needs
    /// ``thaw(_:)``. Called where the pool found the copy needed, usually on the event loop of
    /// the request it is for, so that request goes out without waiting for another thread.
    func handOutAtOnce(_ standby: GatewayInstance) -> LaunchReport?
    /// Called once the requests waiting for a thawed copy were handed to it (their forwarding
    /// under way): what ``thaw(_:)`` left for later (kiln: a ready copy's unfreeze).
    func handedOut(_ thawed: GatewayInstance)
    /// Called once the first request a thawed copy was given is over (answered or not), unless
    /// its process is gone: bookkeeping kept off that request (kiln: the copy's record, saved
    /// as running). Must not fail: it logs instead.
    func recordThawed(_ thawed: GatewayInstance)
    /// What the provider holds in memory against the host's idle page-out (kiln: pinned page
    /// cache pages, ``HeldPages``), for `/metrics`; nil when it holds nothing of the kind.
    func heldPageUsage() -> HeldPageUsage?
}

/// Memory a provider locks against a host's idle page-out, as `/metrics` shows it
/// (`kiln_gateway_held_page_bytes`, `kiln_gateway_held_program_bytes`,
/// `kiln_gateway_held_page_budget_bytes`).
public struct HeldPageUsage: Sendable, Equatable {
    /// Bytes locked per function (what its copies map and its snapshot's image files).
    public var functions: [String: Int]
    /// Bytes locked for the programs every restore runs.
    public var programs: Int
    /// The most all of it may lock together (`kiln serve --hold-pages`).
    public var budget: Int

    public init(functions: [String: Int], programs: Int, budget: Int) {
        self.functions = functions
        self.programs = programs
        self.budget = budget
    }
}

extension InstanceProvider {
    public func shutdown() async {}

    public func launchStandby(_ function: String) async throws -> StandbyReport {
        throw LaunchFailure(restoreError: "this provider keeps no standby copies", coldStartError: nil)
    }

    public func thaw(_ standby: GatewayInstance) async throws -> LaunchReport {
        throw LaunchFailure(restoreError: "this provider keeps no standby copies", coldStartError: nil)
    }

    public func handOutAtOnce(_ standby: GatewayInstance) -> LaunchReport? { nil }

    public func heldPageUsage() -> HeldPageUsage? { nil }

    public func handedOut(_ thawed: GatewayInstance) {}

    public func recordThawed(_ thawed: GatewayInstance) {}
}
