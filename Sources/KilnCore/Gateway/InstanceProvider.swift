import HTTPTypes
import NIOCore

/// One running copy of a function that the gateway sends requests to.
public struct GatewayInstance: Sendable, Equatable {
    /// How the instance came to be.
    public enum Origin: String, Codable, Sendable {
        /// Restored from the function's snapshot: the normal path.
        case restored
        /// The restore failed and the function's command was started from scratch instead.
        case coldStart = "cold-start"
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
}

/// A request as the gateway forwards it to an instance.
public struct ForwardedRequest: Sendable {
    /// Method, path (as the service sees it), Host and headers.
    public var head: HTTPRequest
    /// The whole body (nil: none was sent).
    public var body: ByteBuffer?

    public init(head: HTTPRequest, body: ByteBuffer?) {
        self.head = head
        self.body = body
    }
}

/// A whole HTTP response: from an instance, or the gateway's own (errors).
public struct GatewayResponse: Sendable {
    public var head: HTTPResponse
    public var body: ByteBuffer

    public init(head: HTTPResponse, body: ByteBuffer) {
        self.head = head
        self.body = body
    }

    public var status: HTTPResponse.Status { head.status }
    public var bodyText: String { String(buffer: body) }
}

/// Why a forwarded request got no response. The gateway's retry decision depends on which.
public enum TransportFailure: Error, Sendable, CustomStringConvertible {
    /// The request never left: the instance could not be connected to. Safe to retry anywhere.
    case notSent(String)
    /// The connection closed before any response arrived: the service may or may not have acted
    /// on the request, so only idempotent requests are retried.
    case noResponse(String)
    /// No (complete) response within the request timeout.
    case timedOut
    /// Anything else after the request was sent (e.g. a response cut short).
    case failed(String)

    var wasNotSent: Bool {
        if case .notSent = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .notSent(let reason): "could not connect: \(reason)"
        case .noResponse(let reason): "no response: \(reason)"
        case .timedOut: "timed out"
        case .failed(let reason): reason
        }
    }
}

/// How the gateway talks to instances: the other seam. ``PooledInstanceTransport`` keeps
/// keep-alive HTTP/1.1 connections made inside each instance's network namespace.
public protocol InstanceTransport: Sendable {
    /// Sends one request and returns the whole response; throws ``TransportFailure``.
    func send(_ request: ForwardedRequest, to instance: GatewayInstance, timeout: Duration) async throws -> GatewayResponse
    /// Drops whatever is kept for an instance that is going away (idle connections).
    func forget(_ instance: GatewayInstance)
    /// Closes everything (at gateway shutdown).
    func shutdown()
}
