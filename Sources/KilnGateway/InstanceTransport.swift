import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import NIOCore
import NIOHTTP1

/// A request as the gateway forwards it to an instance.
public struct ForwardedRequest: Sendable {
    /// Method, path (as the service sees it), Host and headers, in NIOHTTP1's terms: what the
    /// public listener decoded, rewritten in place, and what the instance connection encodes.
    public var head: HTTPRequestHead
    /// The whole body (nil: none was sent).
    public var body: ByteBuffer?

    public init(head: HTTPRequestHead, body: ByteBuffer?) {
        self.head = head
        self.body = body
    }
}

/// Where an instance's response goes, part by part, on the event loop the request was sent
/// from. Exactly one of ``receiveEnd()`` and ``receiveFailure(_:)`` ends an exchange.
public protocol ResponseReceiver: AnyObject {
    func receiveHead(_ head: HTTPResponseHead)
    func receiveBody(_ part: ByteBuffer)
    func receiveEnd()
    /// The exchange failed. Before any head arrived, the failure says whether the request can
    /// have reached the service; after one, the response was cut short (``TransportFailure/failed(_:)``).
    func receiveFailure(_ failure: TransportFailure)
    /// Whether more of the response may be read now: false while the client cannot take more,
    /// and the transport then reads nothing from the instance until ``ResponseReading/resume()``.
    var isReadyForMore: Bool { get }
}

/// The reading side of one exchange, for flow control.
public protocol ResponseReading: AnyObject {
    /// Reading was held back (``ResponseReceiver/isReadyForMore`` said no): go on.
    func resume()
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
///
/// Callbacks rather than `async`: a request is forwarded from its client connection's event
/// loop and its response goes back on that loop, so the whole exchange runs there without a
/// task or a thread hop (see ``GatewayExchange``).
public protocol InstanceTransport: Sendable {
    /// Sends one request to `instance`; called on `loop`, and `receiver` hears of the response
    /// (or the failure, a ``TransportFailure``) on `loop` too, never before this returns.
    func send(
        _ request: ForwardedRequest, to instance: GatewayInstance, timeout: Duration, on loop: any EventLoop, receiver: any ResponseReceiver
    ) -> any ResponseReading
    /// Makes connections to `instance` ahead of its first request, one for each of `loops`
    /// (the loops requests come in on), for an instance that does not run yet but takes
    /// connections (``StandbyReport/acceptsConnectionsWhileFrozen``). Transports that keep no
    /// connections ignore it.
    func connectAhead(to instance: GatewayInstance, on loops: [any EventLoop])
    /// Drops whatever is kept for an instance that is going away (idle connections).
    func forget(_ instance: GatewayInstance)
    /// Closes everything (at gateway shutdown).
    func shutdown()
}

extension InstanceTransport {
    public func connectAhead(to instance: GatewayInstance, on loops: [any EventLoop]) {}
}
