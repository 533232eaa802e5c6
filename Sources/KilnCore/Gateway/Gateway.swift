import Foundation
import HTTPTypes
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A request as the public listener received it, body read whole.
public struct GatewayRequest: Sendable {
    /// Method, request target (`/hello/greet?x=1`), Host (`authority`) and headers.
    public var head: HTTPRequest
    public var body: ByteBuffer?

    public init(head: HTTPRequest, body: ByteBuffer?) {
        self.head = head
        self.body = body
    }

    /// A request with no body, e.g. `GatewayRequest(.get, "/hello/greet")`.
    public init(_ method: HTTPRequest.Method, _ target: String, host: String? = nil, body: ByteBuffer? = nil) {
        self.init(head: HTTPRequest(method: method, scheme: nil, authority: host, path: target), body: body)
    }
}

/// The gateway's core: routes each request to a function, has that function's pool lend it an
/// instance (restoring one if none is free), forwards it, retries what never reached an
/// instance, and owns the lifecycle of every instance it started.
///
/// It knows nothing of listeners (see ``GatewayServer``) nor of containers (see
/// ``InstanceProvider``), so its decisions can be tested in-process with fakes.
public final class Gateway: Service, Sendable {
    public let configuration: GatewayConfiguration
    public let metrics: GatewayMetrics
    private let provider: any InstanceProvider
    private let transport: any InstanceTransport
    private let logger: Logger
    private let pools = Mutex<[String: FunctionPool]>([:])
    private let isClosed = Mutex(false)
    private let commands: AsyncStream<PoolCommand>
    private let commandSink: AsyncStream<PoolCommand>.Continuation

    public init(
        configuration: GatewayConfiguration, provider: any InstanceProvider, transport: any InstanceTransport,
        metrics: GatewayMetrics = GatewayMetrics(), logger: Logger = Logger(label: "kiln.gateway")
    ) {
        self.configuration = configuration
        self.provider = provider
        self.transport = transport
        self.metrics = metrics
        self.logger = logger
        (commands, commandSink) = AsyncStream.makeStream(of: PoolCommand.self)
    }

    // MARK: Running

    /// Runs launches, stops and maintenance until graceful shutdown (a `ServiceGroup` signal) or
    /// ``shutdown()``; then stops every instance it started and returns once all are gone.
    public func run() async throws {
        // Functions to keep warm from the start: those with a minimum of their own, and with a
        // default minimum, every function there is.
        var warm = configuration.policies.filter { $0.value.minInstances > 0 }
        if configuration.defaultPolicy.minInstances > 0 {
            for name in provider.functionNames() where configuration.policies[name] == nil { warm[name] = configuration.defaultPolicy }
        }
        for function in warm.keys.sorted() {
            guard let pool = pool(for: function) else {
                logger.warning("no snapshot named '\(function)': nothing to keep warm", metadata: ["function": "\(function)"])
                continue
            }
            // Starts its minimum now rather than at the first maintenance tick.
            await pool.maintain()
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.maintainUntilClosed() }
            group.addTask {
                // Graceful shutdown (SIGTERM through the ServiceGroup) starts the drain; a
                // plain cancellation ends this task without one.
                if (try? await gracefulShutdown()) != nil { await self.shutdown() }
            }
            for await command in commands {
                group.addTask { await self.execute(command) }
            }
            // Every pool is empty and closed: stop the maintenance loop and the shutdown watch.
            group.cancelAll()
        }
        transport.shutdown()
        logger.info("gateway stopped; every instance it started is gone")
    }

    /// Stops taking requests, lets the ones in flight finish, stops every instance, and ends
    /// ``run()``. Safe to call more than once.
    public func shutdown() async {
        let first = isClosed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        let all = pools.withLock { Array($0.values) }
        if first { logger.info("shutting down: stopping \(all.count) function(s)") }
        await withDiscardingTaskGroup { group in
            for pool in all { group.addTask { await pool.close() } }
        }
        if first { commandSink.finish() }
    }

    private func maintainUntilClosed() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.maintenanceInterval)
            for pool in pools.withLock({ Array($0.values) }) { await pool.maintain() }
        }
    }

    private func execute(_ command: PoolCommand) async {
        switch command {
        case .launch(let pool):
            if await pool.beginLaunch() {
                do {
                    try await provider.prepare(pool.function)
                    await pool.prepared()
                } catch {
                    await pool.preparationFailed(error)
                    return
                }
            }
            do {
                await pool.launched(try await provider.launch(pool.function))
            } catch {
                await pool.launchFailed(error)
            }
        case .terminate(let pool, let instance):
            transport.forget(instance)
            await provider.terminate(instance)
            await pool.terminated(instance)
        }
    }

    /// The pool of a function, made on first use; nil for a name that is no function.
    func pool(for function: String) -> FunctionPool? {
        if let existing = pools.withLock({ $0[function] }) { return existing }
        guard GatewayRoute.isPlausibleName(function), provider.functionExists(function) else { return nil }
        return pools.withLock { table -> FunctionPool? in
            if let existing = table[function] { return existing }
            if isClosed.withLock({ $0 }) { return nil }
            let environment = PoolEnvironment(
                provider: provider, commands: commandSink, metrics: metrics.function(function), logger: logger,
                launchFailureBackoff: configuration.launchFailureBackoff, verificationRetry: configuration.verificationRetry,
                quarantine: configuration.quarantine)
            let made = FunctionPool(function: function, policy: configuration.policy(for: function), environment: environment)
            table[function] = made
            return made
        }
    }

    // MARK: Requests

    /// Answers one request: the service's response, or a JSON error the gateway made.
    public func handle(_ request: GatewayRequest) async -> GatewayResponse {
        let start = ContinuousClock.now
        let route: GatewayRoute
        do throws(GatewayRouteRejection) {
            route = try GatewayRoute.resolve(target: request.head.path ?? "/", host: request.head.authority, isFunction: { self.pool(for: $0) != nil })
        } catch {
            switch error {
            case .noFunction:
                return Self.error(.notFound, "function-not-found", "no function in the request path", hint: "call /<function>/<path>, e.g. /hello/greet")
            case .invalidTarget(let problem):
                return Self.error(.badRequest, "invalid-path", "the request path cannot be forwarded: \(problem)", hint: "resolve '.' and '..' before sending")
            }
        }
        guard let pool = pool(for: route.function) else {
            metrics.unknownFunctionRequests.increment()
            return Self.error(
                .notFound, "function-not-found", "no function named '\(route.function)'", function: route.function,
                hint: "functions are snapshot names: 'kiln ls' lists them, 'kiln bake \(route.function) ...' makes one")
        }
        let functionMetrics = pool.metrics
        let forwarded = Self.forwardedRequest(request, route: route)
        let idempotent = request.head.method.isIdempotent
        var attempt = 0
        while true {
            attempt += 1
            let lease: Lease
            do {
                lease = try await pool.acquire(arrivedAt: start)
            } catch let failure as GatewayFailure {
                let (response, outcome) = Self.response(for: failure, function: route.function)
                functionMetrics.recordRequest(outcome, start.duration(to: .now))
                return response
            } catch {
                functionMetrics.recordRequest(.shuttingDown, start.duration(to: .now))
                return Self.error(.serviceUnavailable, "cancelled", "the request was cancelled", function: route.function)
            }
            do {
                var response = try await transport.send(forwarded, to: lease.instance, timeout: configuration.requestTimeout)
                await pool.release(lease, outcome: .answered)
                Self.prepareForClient(&response, method: request.head.method)
                response.head.headerFields[Self.instanceHeader] = lease.instance.id
                functionMetrics.recordRequest(.answered, start.duration(to: .now))
                return response
            } catch {
                let failure = error as? TransportFailure ?? .failed("\(error)")
                let retry: Bool
                switch failure {
                case .notSent(let reason):
                    await pool.release(lease, outcome: .unreachable(reason))
                    retry = true
                case .noResponse(let reason):
                    await pool.release(lease, outcome: .unreachable(reason))
                    retry = idempotent
                case .timedOut, .failed:
                    await pool.release(lease, outcome: .failed)
                    retry = false
                }
                if retry, attempt < configuration.maxAttempts {
                    functionMetrics.retries.increment()
                    logger.warning(
                        failure.wasNotSent ? "request did not reach an instance; retrying" : "idempotent request got no response; retrying", metadata: [
                            "function": "\(route.function)", "instance": "\(lease.instance.id)", "attempt": "\(attempt)", "error": "\(failure)",
                        ])
                    continue
                }
                logger.error(
                    "request failed", metadata: ["function": "\(route.function)", "instance": "\(lease.instance.id)", "error": "\(failure)"])
                if case .timedOut = failure {
                    functionMetrics.recordRequest(.upstreamTimeout, start.duration(to: .now))
                    return Self.error(
                        .gatewayTimeout, "instance-timeout", "instance \(lease.instance.id) did not answer within \(configuration.requestTimeout)",
                        function: route.function, instance: lease.instance.id)
                }
                functionMetrics.recordRequest(.upstreamError, start.duration(to: .now))
                return Self.error(
                    .badGateway, "instance-failed", "instance \(lease.instance.id) failed: \(failure)", function: route.function,
                    instance: lease.instance.id)
            }
        }
    }

    /// The response header naming the instance that answered (for clients, tests and logs).
    public static let instanceHeader = HTTPField.Name("X-Kiln-Instance")!

    /// Headers that describe one connection, not the request (RFC 9110 7.6.1): never forwarded.
    /// (`content-length` too: the gateway sets its own, for the body it forwards or answers.)
    static func isHopByHop(_ name: HTTPField.Name) -> Bool {
        switch name.canonicalName {
        case "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length": true
        default: false
        }
    }

    static let forwardedHost = HTTPField.Name("X-Forwarded-Host")!
    static let forwardedPrefix = HTTPField.Name("X-Forwarded-Prefix")!
    static let forwardedProto = HTTPField.Name("X-Forwarded-Proto")!

    static func forwardedRequest(_ request: GatewayRequest, route: GatewayRoute) -> ForwardedRequest {
        // Built with appends (a subscript set searches the fields for the name each time); the
        // X-Forwarded-* a client sent are replaced, not added to.
        var fields = HTTPFields()
        fields.reserveCapacity(request.head.headerFields.count + 4)
        for field in request.head.headerFields where !isHopByHop(field.name) {
            if field.name == forwardedProto || (field.name == forwardedHost && request.head.authority != nil)
                || (field.name == forwardedPrefix && route.strippedPrefix != nil) { continue }
            fields.append(field)
        }
        if let host = request.head.authority { fields.append(HTTPField(name: forwardedHost, value: host)) }
        if let prefix = route.strippedPrefix { fields.append(HTTPField(name: forwardedPrefix, value: prefix)) }
        fields.append(HTTPField(name: forwardedProto, value: "http"))
        let method = request.head.method
        // A POST, PUT or PATCH always says how long its body is, even when it is empty.
        let body = request.body ?? (method == .post || method == .put || method == .patch ? ByteBuffer() : nil)
        if let body { fields.append(HTTPField(name: .contentLength, value: String(body.readableBytes))) }
        let head = HTTPRequest(method: method, scheme: nil, authority: request.head.authority ?? "localhost", path: route.path, headerFields: fields)
        return ForwardedRequest(head: head, body: body)
    }

    /// Drops hop-by-hop headers from an instance's response: the client's connection is ours.
    /// A HEAD response keeps its Content-Length (it describes the GET body it did not send).
    static func prepareForClient(_ response: inout GatewayResponse, method: HTTPRequest.Method) {
        let keepLength = method == .head
        let drop = { (field: HTTPField) in isHopByHop(field.name) && !(keepLength && field.name == .contentLength) }
        // Most responses carry one such header at most (Content-Length): rebuild only if needed.
        guard response.head.headerFields.contains(where: drop) else { return }
        response.head.headerFields = HTTPFields(response.head.headerFields.filter { !drop($0) })
    }

    // MARK: Errors

    static func response(for failure: GatewayFailure, function: String) -> (GatewayResponse, GatewayMetrics.Outcome) {
        switch failure {
        case .queueFull:
            return (error(.serviceUnavailable, "queue-full", failure.description, function: function, hint: "retry later, or raise the function's max instances"), .queueFull)
        case .queueTimeout:
            return (error(.serviceUnavailable, "queue-timeout", failure.description, function: function, hint: "retry later, or raise the function's max instances"), .queueTimeout)
        case .unavailable(let code, let reason):
            return (error(.serviceUnavailable, code, reason, function: function, hint: "see the gateway's log; the admin API's /functions/\(function) shows its state"), .unavailable)
        case .shuttingDown:
            return (error(.serviceUnavailable, "shutting-down", failure.description, function: function), .shuttingDown)
        }
    }

    /// A JSON error in the shape of the CLI's `--json` errors: `{"error": {"code", "message", ...}}`.
    static func error(
        _ status: HTTPResponse.Status, _ code: String, _ message: String, function: String? = nil, instance: String? = nil, hint: String? = nil
    ) -> GatewayResponse {
        struct Document: Encodable {
            struct Body: Encodable {
                var code: String
                var message: String
                var function: String?
                var instance: String?
                var hint: String?
            }
            var error: Body
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(Document(error: .init(code: code, message: message, function: function, instance: instance, hint: hint)))) ?? Data()
        var fields = HTTPFields()
        fields[.contentType] = "application/json"
        if let instance { fields[instanceHeader] = instance }
        return GatewayResponse(head: HTTPResponse(status: status, headerFields: fields), body: ByteBuffer(bytes: data))
    }

    // MARK: Admin

    /// Every function: those the gateway has run (with their instances) and those it could.
    public func functions() async -> [FunctionStatus] {
        var statuses: [String: FunctionStatus] = [:]
        for pool in pools.withLock({ Array($0.values) }) { statuses[pool.function] = await pool.status() }
        for name in provider.functionNames() where statuses[name] == nil {
            statuses[name] = FunctionStatus(
                name: name, state: "unverified", failure: nil, policy: configuration.policy(for: name), queueLength: 0, starting: 0,
                stopping: 0, launches: 0, coldStarts: 0, deaths: 0, instances: [])
        }
        return statuses.values.sorted { $0.name < $1.name }
    }

    /// One function's state; throws `snapshot-not-found` for a name that is no function.
    public func function(_ name: String) async throws -> FunctionStatus {
        try await existingPool(name).status()
    }

    /// Changes a function's min/max/concurrency/keep-alive; acts at once.
    public func scale(_ name: String, _ update: ScalingPolicyUpdate) async throws -> FunctionStatus {
        let pool = try existingPool(name)
        let policy = update.applied(to: await pool.currentPolicy)
        try policy.validate()
        await pool.setPolicy(policy)
        logger.info("scaling policy changed", metadata: ["function": "\(name)", "min": "\(policy.minInstances)", "max": "\(policy.maxInstances)", "concurrency": "\(policy.concurrency)"])
        return await pool.status()
    }

    /// Retires a function's instances (each stops after its last request; new requests start
    /// new ones). With `reverify`, its snapshot is verified again before the next launch (after
    /// `kiln bake --replace`). Returns the retired instance ids.
    public func drain(_ name: String, reverify: Bool = false) async throws -> [String] {
        let retired = try await existingPool(name).drain(reverify: reverify)
        logger.info("draining", metadata: ["function": "\(name)", "instances": "\(retired.joined(separator: ","))", "reverify": "\(reverify)"])
        return retired
    }

    private func existingPool(_ name: String) throws -> FunctionPool {
        guard let pool = pool(for: name) else {
            throw KilnError(.snapshotNotFound, "no function named '\(name)'", hint: "'kiln ls' lists the snapshots the gateway can run")
        }
        return pool
    }
}

extension HTTPRequest.Method {
    /// RFC 9110 9.2.2: repeating these has the effect of doing them once, so a request whose
    /// connection broke before any answer may be sent again.
    var isIdempotent: Bool {
        [.get, .head, .options, .trace, .put, .delete].contains(self)
    }
}
