import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Polls a service's readiness path until it answers 2xx, its process dies, or time runs out.
public struct ReadinessProbe: Sendable {
    /// Why the service did not become ready.
    public enum Outcome: Sendable, Equatable {
        case ready
        /// The container's init process is gone.
        case exited
        /// Time ran out; the last thing seen (a status, "connection refused", ...).
        case timedOut(lastSeen: String)
    }

    public var endpoint: ServiceEndpoint
    public var path: String
    /// Host pid of the container's init, watched so a crash ends the wait at once.
    public var pid: Int32
    public var timeout: Duration
    /// Pause between attempts; restores poll tightly, cold starts need not.
    public var interval: Duration

    public init(endpoint: ServiceEndpoint, path: String, pid: Int32, timeout: Duration, interval: Duration = .milliseconds(20)) {
        self.endpoint = endpoint
        self.path = path
        self.pid = pid
        self.timeout = timeout
        self.interval = interval
    }

    /// How long an attempt waits for its reply on the caller's thread
    /// (``InstanceHTTPClient/quickStatus(_:to:within:)``) before it asks again without blocking.
    static let quickBudget: Duration = .milliseconds(20)

    /// Throws only `CancellationError`: a cancelled caller (a command stopped by SIGINT) stops
    /// waiting at once rather than at the timeout.
    public func wait() async throws -> Outcome {
        let deadline = ContinuousClock.now + timeout
        var lastSeen = "no attempt yet"
        while true {
            do {
                // Asked on this thread first (a restored copy answers in a few ms), then, if
                // it takes longer, again through the event loop without blocking this thread.
                let status: Int
                if let quick = try InstanceHTTPClient.quickStatus(path, to: endpoint, within: Self.quickBudget) {
                    status = quick
                } else {
                    status = try await InstanceHTTPClient.send(.GET, path, to: endpoint, timeout: .seconds(5)).status
                }
                if (200..<300).contains(status) { return .ready }
                lastSeen = "HTTP \(status)"
            } catch {
                lastSeen = "\(error)"
            }
            if !ProcessInspector.isAlive(pid) { return .exited }
            if ContinuousClock.now >= deadline { return .timedOut(lastSeen: lastSeen) }
            try await Task.sleep(for: interval)
        }
    }
}
