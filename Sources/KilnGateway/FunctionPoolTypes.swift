import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem

/// Why a request could not be given an instance. Each maps to a gateway error response, whose
/// `code` is ``code``.
public enum GatewayFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case queueFull(limit: Int)
    case queueTimeout(seconds: Double)
    /// The function's snapshot failed verification: it is not used until it is verified again.
    case snapshotUnusable(reason: String)
    /// No instance could be started (the restore failed, and the cold start after it if any).
    case launchFailed(reason: String)
    case shuttingDown

    /// The error code the client gets (the same codes as the CLI's `--json` errors).
    public var code: KilnError.Code {
        switch self {
        case .queueFull: .queueFull
        case .queueTimeout: .queueTimeout
        case .snapshotUnusable: .snapshotUnusable
        case .launchFailed: .launchFailed
        case .shuttingDown: .shuttingDown
        }
    }

    public var description: String {
        switch self {
        case .queueFull(let limit): "\(limit) requests are already waiting for an instance"
        case .queueTimeout(let seconds): "no instance could take the request within \(Self.format(seconds)) s"
        case .snapshotUnusable(let reason): reason
        case .launchFailed(let reason): "no instance could be started: \(reason)"
        case .shuttingDown: "the gateway is shutting down"
        }
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}

/// The right to send one request to one instance: taken from a ``FunctionPool`` and given back
/// with ``FunctionPool/release(_:outcome:)`` once the request is over.
public struct Lease: Sendable, Equatable {
    public let instance: GatewayInstance
    /// How the request was answered: by an instance that was running, or one started for it.
    public var servedBy: ServedBy = .running
}

/// How a request was answered, for honest figures (the `X-Kiln-Served-By` header and the
/// `kiln_gateway_requests_served_total{served_by}` counter): by an instance that was already
/// running, or by one that had to be started for it, and how. A request counts as answered by
/// a start when it waited and was the first one given to the instance that came up.
public enum ServedBy: String, Codable, Sendable, CaseIterable {
    case running
    /// A standby copy thawed for it.
    case standby
    /// A copy restored from the snapshot for it.
    case restore
    /// The function's command started from scratch for it (the restore had failed).
    case coldStart = "cold-start"

    init(_ origin: GatewayInstance.Origin) {
        switch origin {
        case .restored: self = .restore
        case .coldStart: self = .coldStart
        case .thawed: self = .standby
        }
    }
}

/// What happened to a leased request, as far as the instance is concerned.
enum LeaseOutcome: Sendable, Equatable {
    /// The instance answered.
    case answered
    /// The instance could not be reached or dropped the connection: maybe dead.
    case unreachable(String)
    /// Something went wrong that says nothing about the instance's health (a slow answer).
    case failed
    /// The lease was never used: the client went away while it was being granted.
    case unused
}

/// The state of one instance of a function, as the admin API lists it and as the
/// `kiln_gateway_instances{state}` gauge counts it.
public enum GatewayInstanceState: String, Codable, Sendable, CaseIterable {
    /// Being restored (or cold-started): not in the pool yet.
    case starting
    /// Running, no request in flight.
    case idle
    /// Running, at least one request in flight.
    case busy
    /// Could not be reached lately: no new requests for a moment, while its process is checked.
    case quarantined
    /// Taking no new requests; stopped once its last one is over.
    case draining
    /// Being stopped and cleaned up.
    case stopping
}

/// The state of a function as the admin API shows it.
public enum FunctionState: String, Codable, Sendable {
    /// Not launched yet (its snapshot is verified before the first launch).
    case unverified
    /// Its snapshot is being verified.
    case verifying
    case verified
    /// Its snapshot failed verification: requests get 503 until it is verified again.
    case unusable
    /// The gateway is shutting down.
    case closed
}

/// One function as the admin API lists it.
public struct FunctionStatus: Codable, Sendable {
    public var name: String
    public var state: FunctionState
    /// Why it cannot be used now, if it cannot.
    public var failure: String?
    public var policy: ScalingPolicy
    public var queueLength: Int
    public var starting: Int
    public var stopping: Int
    /// Instances started so far, of which cold starts (restore failed) and deaths.
    public var launches: Int
    public var coldStarts: Int
    public var deaths: Int
    public var instances: [InstanceSummary]
    /// Its standby copies.
    public var standby: StandbySummary

    /// A function the gateway has not run yet.
    static func unlaunched(_ name: String, policy: ScalingPolicy) -> FunctionStatus {
        FunctionStatus(
            name: name, state: .unverified, failure: nil, policy: policy, queueLength: 0, starting: 0, stopping: 0, launches: 0, coldStarts: 0,
            deaths: 0, instances: [], standby: StandbySummary(wanted: policy.standby))
    }
}

/// A function's standby copies as the admin API shows them.
public struct StandbySummary: Codable, Sendable, Equatable {
    /// How many the policy asks for.
    public var wanted: Int
    /// Frozen and ready to thaw.
    public var ready = 0
    /// Being restored.
    public var starting = 0
    /// Being thawed for a request.
    public var thawing = 0
    /// Their memory (PSS, measured once each was frozen), together.
    public var memoryBytes = 0
    public var budgetBytes: Int?
    /// Thaws so far, and the last one's time from thaw to first response.
    public var thaws = 0
    public var lastThawMs: Double?
    /// The ready copies' ids, oldest first.
    public var ids: [String] = []
}

/// One instance as the admin API lists it.
public struct InstanceSummary: Codable, Sendable {
    public var id: String
    public var pid: Int32
    public var origin: GatewayInstance.Origin
    /// `idle`, `busy`, `quarantined` or `draining` (the pool lists no starting or stopping one).
    public var state: GatewayInstanceState
    public var inFlight: Int
    public var served: Int
    public var ageSeconds: Double
    public var idleSeconds: Double
}

/// What a pool did with a request that asked for an instance.
enum PoolAcquisition: Equatable, Sendable {
    /// An instance had room: the request may go at once.
    case leased(Lease)
    /// The request waits in the queue under this ticket (to leave it early); a ``FunctionPoolStateMachine/Effect/grant(_:_:)``
    /// or ``FunctionPoolStateMachine/Effect/fail(_:_:)`` settles it later.
    case waiting(ticket: Int)
    /// The request gets no instance, now or later.
    case refused(GatewayFailure)
}

/// The durations of a pool that come from the gateway's configuration, not the function's policy.
struct PoolTiming: Sendable {
    /// How long launches pause after one failed.
    var launchFailureBackoff: Duration
    /// How long a snapshot that failed verification stays unusable before it is verified again.
    var verificationRetry: Duration
    /// How long an instance that could not be reached twice in a row gets no new request.
    var quarantine: Duration
}

/// A metric a pool's decision changes (the gauges aside: see ``PoolGauges``).
enum PoolMetric: Equatable, Sendable {
    case restoreSucceeded(Duration)
    case restoreFailed
    /// A cold start stood in for a failed restore; how long it took, when known.
    case coldStartSucceeded(Duration?)
    case coldStartFailed
    case verificationFailed
    case instanceDied
    /// A standby copy was restored and frozen (how long it took), or could not be.
    case standbyRestored(Duration)
    case standbyRestoreFailed
    /// A standby copy was thawed to its first response (how long it took), or could not be.
    case thawSucceeded(Duration)
    case thawFailed
}

/// The queue length and the instances per state: the pool's gauges.
struct PoolGauges: Equatable, Sendable {
    var queue = 0
    var starting = 0
    var idle = 0
    var busy = 0
    var quarantined = 0
    var draining = 0
    var stopping = 0
    /// Standby copies: frozen and ready, being restored, being thawed; their memory.
    var standby = 0
    var standbyStarting = 0
    var thawing = 0
    var standbyBytes = 0

    subscript(state: GatewayInstanceState) -> Int {
        get {
            switch state {
            case .starting: starting
            case .idle: idle
            case .busy: busy
            case .quarantined: quarantined
            case .draining: draining
            case .stopping: stopping
            }
        }
        set {
            switch state {
            case .starting: starting = newValue
            case .idle: idle = newValue
            case .busy: busy = newValue
            case .quarantined: quarantined = newValue
            case .draining: draining = newValue
            case .stopping: stopping = newValue
            }
        }
    }
}
