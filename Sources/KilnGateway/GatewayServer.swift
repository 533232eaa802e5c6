import Foundation
import Hummingbird
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import UnixSignals

/// `kiln serve`: the ``Gateway`` behind two listeners, run as one ServiceGroup.
///
/// - the public listener (``PublicListener``, plain SwiftNIO: the hot path) forwards every
///   request to a function (and nothing else: no admin route exists on it, whatever the path);
/// - the admin listener (Hummingbird) serves the admin API and `/metrics`.
///
/// On SIGTERM or SIGINT (or ``shutdown()``) the group shuts down in reverse order: the public
/// listener stops accepting and finishes the requests in flight (those waiting for a restore
/// included), then the admin listener, then the gateway stops every instance it started.
public final class GatewayServer: Sendable {
    /// The ports actually bound (useful when port 0 asked for a free one).
    public struct BoundPorts: Sendable, Equatable {
        public var listen: Int
        public var admin: Int
    }

    public let gateway: Gateway
    private let group: ServiceGroup
    /// The public listener's loops, and so those of every connection to an instance: made
    /// here, shut down once every service has stopped (the gateway closes its connections to
    /// instances last).
    private let listenerLoops: MultiThreadedEventLoopGroup
    private let ports = Mutex<(listen: Int?, admin: Int?)>((nil, nil))
    private let portWaiters = Mutex<[CheckedContinuation<BoundPorts, Never>]>([])

    /// - Parameter signals: the signals that start a graceful shutdown (tests pass none and
    ///   call ``shutdown()``).
    public init(gateway: Gateway, signals: [UnixSignal] = [.sigterm, .sigint], logger: Logger) {
        self.gateway = gateway
        let configuration = gateway.configuration
        // Set below, once `self` exists; the listeners report their ports through it.
        let reporter = PortReporter()
        listenerLoops = MultiThreadedEventLoopGroup(numberOfThreads: configuration.listenerThreads)
        gateway.takeRequests(on: listenerLoops)
        let publicListener = PublicListener(gateway: gateway, address: configuration.listen, group: listenerLoops, logger: logger) { port in
            reporter.report(listen: port)
        }
        let adminApp = Application(
            router: AdminAPI.router(gateway: gateway),
            configuration: .init(address: .hostname(configuration.admin.host, port: configuration.admin.port), serverName: nil),
            onServerRunning: { channel in reporter.report(admin: channel.localAddress?.port) },
            logger: logger)
        group = ServiceGroup(
            configuration: .init(
                // Shut down last to first: public listener, admin listener, then the gateway.
                services: [.init(service: gateway), .init(service: adminApp), .init(service: publicListener)],
                gracefulShutdownSignals: signals, logger: logger))
        reporter.server.withLock { $0 = self }
    }

    /// Runs until shut down; every instance the gateway started is stopped when this returns.
    /// Cancellation (a `kiln bench` stopped by Ctrl-C) shuts down gracefully, as SIGTERM does:
    /// cancelled outright, the listeners would drop their connections and log errors about it.
    public func run() async throws {
        let group = group
        let running = Task { try await group.run() }
        do {
            try await withTaskCancellationHandler {
                try await running.value
            } onCancel: {
                Task { await group.triggerGracefulShutdown() }
            }
        } catch {
            try? await listenerLoops.shutdownGracefully()
            throw error
        }
        try await listenerLoops.shutdownGracefully()
    }

    /// Starts the graceful shutdown that SIGTERM would.
    public func shutdown() async {
        await group.triggerGracefulShutdown()
    }

    /// Waits until both listeners are bound and returns their ports.
    public func boundPorts() async -> BoundPorts {
        await withCheckedContinuation { continuation in
            let ready = ports.withLock { ports -> BoundPorts? in
                guard let listen = ports.listen, let admin = ports.admin else { return nil }
                return BoundPorts(listen: listen, admin: admin)
            }
            if let ready {
                continuation.resume(returning: ready)
            } else {
                portWaiters.withLock { $0.append(continuation) }
                notifyIfBound()
            }
        }
    }

    fileprivate func record(listen: Int?, admin: Int?) {
        ports.withLock { ports in
            if let listen { ports.listen = listen }
            if let admin { ports.admin = admin }
        }
        notifyIfBound()
    }

    private func notifyIfBound() {
        guard
            let bound = ports.withLock({ ports -> BoundPorts? in
                guard let listen = ports.listen, let admin = ports.admin else { return nil }
                return BoundPorts(listen: listen, admin: admin)
            })
        else { return }
        let waiters = portWaiters.withLock { waiters in
            defer { waiters = [] }
            return waiters
        }
        for waiter in waiters { waiter.resume(returning: bound) }
    }
}

/// Lets the listeners' callbacks, made before the server object exists, reach it.
private final class PortReporter: Sendable {
    let server = Mutex<GatewayServer?>(nil)

    func report(listen: Int? = nil, admin: Int? = nil) {
        server.withLock { $0 }?.record(listen: listen, admin: admin)
    }
}

/// The admin API (admin listener only).
///
/// | route | |
/// |---|---|
/// | `GET /health` | `{"status":"ok"}` |
/// | `GET /metrics` | Prometheus text |
/// | `GET /functions` | every function: state, policy, queue, instances |
/// | `GET /functions/NAME` | one function |
/// | `PUT` or `POST /functions/NAME/scale` | body `{"min","max","concurrency","keepAliveSeconds"}` (any subset) |
/// | `POST /functions/NAME/drain[?reverify=1]` | retire its instances (new requests start new ones); `reverify`: verify the snapshot again first (after a re-bake) |
/// | `GET /instances` | every instance the gateway runs, with its function |
enum AdminAPI {
    static func router(gateway: Gateway) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("health") { _, _ in json(["status": "ok"]) }
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: gateway.metricsExposition())))
        }
        router.get("functions") { _, _ in json(["functions": gateway.functions()]) }
        router.get("functions/:name") { _, context in
            try await reporting { json(try gateway.function(context.parameters.require("name"))) }
        }
        let scale: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, context in
            try await reporting {
                var request = request
                let body = try await request.collectBody(upTo: 64 << 10)
                let update: ScalingPolicyUpdate
                do {
                    update = try JSONDecoder().decode(ScalingPolicyUpdate.self, from: Data(body.readableBytesView))
                } catch {
                    throw KilnError(.invalidArgument, "the body is not a scaling update: \(error)", hint: #"send e.g. {"min": 1, "max": 4}"#)
                }
                return json(try gateway.scale(context.parameters.require("name"), update))
            }
        }
        router.put("functions/:name/scale", use: scale)
        router.post("functions/:name/scale", use: scale)
        router.post("functions/:name/drain") { request, context in
            let reverify = request.uri.queryParameters.get("reverify").map { $0 == "1" || $0 == "true" } ?? false
            return try await reporting { json(["draining": try gateway.drain(context.parameters.require("name"), reverify: reverify)]) }
        }
        router.get("instances") { _, _ in
            struct Row: Encodable {
                var function: String
                var instance: InstanceSummary
            }
            let rows = gateway.functions().flatMap { function in function.instances.map { Row(function: function.name, instance: $0) } }
            return json(["instances": rows])
        }
        return router
    }

    /// Turns a KilnError into the CLI's JSON error shape with a fitting status.
    static func reporting(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch let error as KilnError {
            let status: HTTPResponse.Status =
                error.code == .snapshotNotFound ? .notFound : error.code == .invalidArgument ? .badRequest : .internalServerError
            let reply = Gateway.error(status, error.code, error.message, hint: error.hint)
            return Response(status: reply.status, headers: reply.head.headerFields, body: .init(byteBuffer: reply.body))
        }
    }

    static func json(_ value: some Encodable) -> Response {
        let data = (try? KilnJSON.prettyEncoder().encode(value)) ?? Data("{}".utf8)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
