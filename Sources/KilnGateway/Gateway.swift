import HTTPTypes
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

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
    let transport: any InstanceTransport
    let logger: Logger
    private let pools = Mutex<[String: FunctionPool]>([:])
    private let isClosed = Mutex(false)
    /// The event loops requests come in on (the public listener's), for connections made ahead
    /// of a request (``InstanceTransport/connectAhead(to:on:)``); none until a server says.
    private let requestLoops = Mutex<[any EventLoop]>([])
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

    /// Runs launches, stops and maintenance until graceful shutdown (a `ServiceGroup` signal),
    /// ``shutdown()`` or cancellation; then stops every instance it started and returns once all
    /// are gone.
    ///
    /// Cancellation shuts down like ``shutdown()`` rather than abandoning the instances, which
    /// would otherwise keep running with their containers, cgroups and addresses: a
    /// `ServiceGroup` cancels its services when one of them fails (a listener that cannot bind),
    /// and a caller may cancel `run()` itself (``GatewayServer`` turns its own cancellation, a
    /// `kiln bench` stopped by Ctrl-C, into a graceful shutdown first). So the work runs in a
    /// task of its own, which the cancellation does not reach (the stops must not fail on it),
    /// and the cancellation only starts the shutdown.
    public func run() async throws {
        let work = Task { await self.runUntilClosed() }
        await withTaskCancellationHandler {
            await work.value
        } onCancel: {
            Task { await self.shutdown() }
        }
    }

    private func runUntilClosed() async {
        // Functions to keep warm from the start: those with a minimum of their own, and with a
        // default minimum, every function there is.
        var warm = configuration.policies.filter { $0.value.minInstances > 0 || $0.value.standby > 0 }
        if configuration.defaultPolicy.minInstances > 0 || configuration.defaultPolicy.standby > 0 {
            for name in provider.functionNames() where configuration.policies[name] == nil { warm[name] = configuration.defaultPolicy }
        }
        for function in warm.keys.sorted() {
            guard let pool = pool(for: function) else {
                logger.warning("no snapshot named '\(function)': nothing to keep warm", metadata: ["function": "\(function)"])
                continue
            }
            // Starts its minimum now rather than at the first maintenance tick.
            pool.maintain()
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.maintainUntilClosed() }
            group.addTask {
                // Graceful shutdown (SIGTERM through the ServiceGroup) starts the drain
                // (cancellation does too, through ``run()``).
                if (try? await gracefulShutdown()) != nil { await self.shutdown() }
            }
            for await command in commands {
                group.addTask { await self.execute(command) }
            }
            // Every pool is empty and closed: stop the maintenance loop and the shutdown watch.
            group.cancelAll()
        }
        transport.shutdown()
        await provider.shutdown()
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
            for pool in pools.withLock({ Array($0.values) }) { pool.maintain() }
        }
    }

    private func execute(_ command: PoolCommand) async {
        switch command {
        case .launch(let pool, let verifyFirst):
            if verifyFirst {
                do {
                    try await provider.prepare(pool.function)
                    pool.prepared()
                } catch {
                    pool.preparationFailed(error)
                    return
                }
            }
            do {
                pool.launched(try await provider.launch(pool.function))
            } catch {
                pool.launchFailed(error)
            }
        case .launchStandby(let pool, let verifyFirst):
            if verifyFirst {
                do {
                    try await provider.prepare(pool.function)
                    pool.prepared()
                } catch {
                    pool.preparationFailed(error, forStandby: true)
                    return
                }
            }
            do {
                let report = try await provider.launchStandby(pool.function)
                if report.acceptsConnectionsWhileFrozen {
                    transport.connectAhead(to: report.instance, on: requestLoops.withLock { $0 })
                }
                pool.standbyLaunched(report)
            } catch {
                pool.standbyLaunchFailed(error)
            }
        case .thaw(let pool, let instance):
            let start = ContinuousClock.now
            do {
                let report = try await provider.thaw(instance)
                pool.thawed(report, duration: start.duration(to: .now))
                provider.handedOut(report.instance)
            } catch {
                pool.thawFailed(instance, error: error)
            }
        case .recordThawed(let instance):
            provider.recordThawed(instance)
        case .terminate(let pool, let instance):
            transport.forget(instance)
            await provider.terminate(instance)
            pool.terminated(instance)
        case .maintain(let pool, let instant):
            // Cancelled (with the sleep) once the gateway has stopped.
            guard (try? await Task.sleep(until: instant, clock: .continuous)) != nil else { return }
            pool.maintain()
        }
    }

    /// Tells the gateway which event loops its requests come in on (``GatewayServer`` passes
    /// its public listener's), so it can have connections to standby copies made on them ahead
    /// of their first request.
    public func takeRequests(on loops: any EventLoopGroup) {
        requestLoops.withLock { $0 = Array(loops.makeIterator()) }
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
                timing: PoolTiming(
                    launchFailureBackoff: configuration.launchFailureBackoff, verificationRetry: configuration.verificationRetry,
                    quarantine: configuration.quarantine))
            let made = FunctionPool(function: function, policy: configuration.policy(for: function), environment: environment)
            table[function] = made
            return made
        }
    }

    // MARK: Requests

    /// Starts answering one request on `loop` (the loop of the connection it came in on); the
    /// answer goes to `responder`, on `loop`. Returns the exchange when the request goes to an
    /// instance (to cancel it if the client leaves, or resume a streamed response), nil when
    /// the gateway answered it at once (no such function, a path it will not forward).
    func forward(_ head: consuming HTTPRequestHead, body: ByteBuffer?, on loop: any EventLoop, responder: any GatewayResponder) -> GatewayExchange? {
        let arrival = ContinuousClock.now
        let (target, host) = Self.targetAndHost(of: head)
        let route: GatewayRoute
        do throws(GatewayRouteRejection) {
            route = try GatewayRoute.resolve(target: target, host: host, isFunction: { self.pool(for: $0) != nil })
        } catch {
            switch error {
            case .noFunction:
                responder.respond(
                    Self.error(.notFound, .functionNotFound, "no function in the request path", hint: "call /<function>/<path>, e.g. /hello/greet"))
            case .invalidTarget(let problem):
                responder.respond(
                    Self.error(
                        .badRequest, .invalidPath, "the request path cannot be forwarded: \(problem)", hint: "resolve '.' and '..' before sending"))
            }
            return nil
        }
        guard let pool = pool(for: route.function) else {
            metrics.unknownFunctionRequests.increment()
            responder.respond(
                Self.error(
                    .notFound, .functionNotFound, "no function named '\(route.function)'", function: route.function,
                    hint: "functions are snapshot names: 'kiln ls' lists them, 'kiln bake \(route.function) ...' makes one"))
            return nil
        }
        let request = ForwardedRequest(
            head: Self.forwardedHead(of: consume head, host: host, route: route, bodyLength: body?.readableBytes), body: body)
        let exchange = GatewayExchange(gateway: self, pool: pool, request: request, on: loop, arrival: arrival, responder: responder)
        exchange.start()
        return exchange
    }

    /// Answers one request and returns the whole answer: the service's response, or a JSON error
    /// the gateway made. The same way through the gateway as the public listener's requests,
    /// for tests and tools that hold a request rather than a connection.
    public func handle(_ request: GatewayRequest) async -> GatewayResponse {
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.head.method.rawValue), uri: request.head.path ?? "/")
        if let authority = request.head.authority { head.headers.add(name: "Host", value: authority) }
        for field in request.head.headerFields { head.headers.add(name: field.name.rawName, value: field.value) }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        return await withCheckedContinuation { [head] continuation in
            loop.execute {
                _ = self.forward(head, body: request.body, on: loop, responder: ResponseCollector(continuation))
            }
        }
    }

    /// The response header naming the instance that answered (for clients, tests and logs).
    public static let instanceHeader = HTTPField.Name("X-Kiln-Instance")!
    /// The response header saying how the request was answered (``ServedBy``: `running`,
    /// `standby`, `restore`, `cold-start`).
    public static let servedByHeader = HTTPField.Name("X-Kiln-Served-By")!

    /// The request target and Host of a request. An origin-form target (`/path?query`, what
    /// clients send to a server that is not a proxy) comes with the Host header; an
    /// absolute-form one (`http://host/path`, what clients send to a proxy) carries its own
    /// host, which wins over the header (RFC 9112 3.2.2).
    static func targetAndHost(of head: HTTPRequestHead) -> (target: String, host: String?) {
        let uri = head.uri.utf8
        if uri.first != UInt8(ascii: "/"), let schemeEnd = uri.firstRange(of: "://".utf8) {
            let afterScheme = uri[schemeEnd.upperBound...]
            let authorityEnd = afterScheme.firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? uri.endIndex
            let authority = String(decoding: afterScheme[..<authorityEnd], as: UTF8.self)
            let path = String(decoding: uri[authorityEnd...], as: UTF8.self)
            return (path.hasPrefix("/") ? path : "/" + path, authority.isEmpty ? nil : authority)
        }
        return (head.uri, head.headers.first(name: "host"))
    }

    /// What a request header is to the gateway when it forwards the request.
    private enum RequestField {
        case kept
        /// Says something about the client's connection, not the request (RFC 9110 7.6.1), or
        /// the gateway sets it itself (`Content-Length`, for the body it forwards; `Expect`,
        /// which it has already answered, holding the whole body).
        case connectionOnly
        case host
        case forwardedHost
        case forwardedPrefix
        case forwardedProto

        init(_ name: String) {
            if Gateway.isConnectionField(name) {
                self = .connectionOnly
                return
            }
            // Sorted by length first: most headers are ruled out by one comparison.
            switch name.utf8.count {
            case 4: self = name.equalsIgnoringASCIICase("host") ? .host : .kept
            case 6: self = name.equalsIgnoringASCIICase("expect") ? .connectionOnly : .kept
            case 14: self = name.equalsIgnoringASCIICase("content-length") ? .connectionOnly : .kept
            case 16: self = name.equalsIgnoringASCIICase("x-forwarded-host") ? .forwardedHost : .kept
            case 17: self = name.equalsIgnoringASCIICase("x-forwarded-proto") ? .forwardedProto : .kept
            case 18: self = name.equalsIgnoringASCIICase("x-forwarded-prefix") ? .forwardedPrefix : .kept
            default: self = .kept
            }
        }
    }

    /// The head an instance gets: the routed path, the client's Host (or `localhost`), the
    /// client's headers but those of its connection, `X-Forwarded-Host`, `-Prefix` and `-Proto`
    /// (replacing any the client sent), and a Content-Length for the body the gateway holds
    /// (a POST, PUT or PATCH always says how long its body is, even when it is empty).
    ///
    /// Made from the client's head in place: most requests have no field to drop, and the
    /// fields array the parser made is then only appended to.
    static func forwardedHead(of head: consuming HTTPRequestHead, host: String?, route: GatewayRoute, bodyLength: Int?) -> HTTPRequestHead {
        var dropped: [String] = []
        var hostField: String?
        for (name, value) in head.headers {
            switch RequestField(name) {
            case .kept: break
            case .host: hostField = hostField ?? value
            case .forwardedHost where host == nil, .forwardedPrefix where route.strippedPrefix == nil: break
            case .connectionOnly, .forwardedHost, .forwardedPrefix, .forwardedProto: dropped.append(name)
            }
        }
        // The client's head is not used again: taken over, not copied (its storage and fields
        // array are then changed where they are).
        var forwarded = consume head
        if forwarded.version != .http1_1 { forwarded.version = .http1_1 }
        forwarded.uri = route.path
        // Room for the fields added below, at once rather than by doubling.
        forwarded.headers.reserveCapacity(forwarded.headers.count + 5)
        for name in dropped { forwarded.headers.remove(name: name) }
        var hasHost = hostField != nil
        // The host an absolute-form target named replaces the Host field (RFC 9112 3.2.2).
        if let host, host != hostField, hasHost {
            forwarded.headers.remove(name: "host")
            hasHost = false
        }
        if !hasHost { forwarded.headers.add(name: "Host", value: host ?? "localhost") }
        if let host { forwarded.headers.add(name: "X-Forwarded-Host", value: host) }
        if let prefix = route.strippedPrefix { forwarded.headers.add(name: "X-Forwarded-Prefix", value: prefix) }
        forwarded.headers.add(name: "X-Forwarded-Proto", value: "http")
        let method = forwarded.method
        if let bodyLength {
            forwarded.headers.add(name: "Content-Length", value: String(bodyLength))
        } else if method == .POST || method == .PUT || method == .PATCH {
            forwarded.headers.add(name: "Content-Length", value: "0")
        }
        return forwarded
    }

    /// An instance's response head as the client gets it: without the headers of the
    /// instance's connection (the client's connection is the gateway's), and naming the instance.
    /// Its Content-Length stays (the body goes on unchanged), but on a 1xx or 204 response,
    /// which has no body and must not claim one (RFC 9110 8.6).
    ///
    /// The fields are copied once into an array with room for the ones still to come (this one,
    /// the length the gateway may set, the client's framing): the parser's array is shared, so
    /// changing it in place would copy it anyway, and then again to grow it.
    static func clientHead(of head: HTTPResponseHead, from instance: GatewayInstance, servedBy: ServedBy = .running) -> HTTPResponseHead {
        let bodiless = head.status.code / 100 == 1 || head.status == .noContent
        var fields = HTTPHeaders()
        fields.reserveCapacity(head.headers.count + 3)
        for (name, value) in head.headers where !isConnectionField(name) {
            if bodiless, name.equalsIgnoringASCIICase("content-length") { continue }
            fields.add(name: name, value: value)
        }
        fields.add(name: instanceHeader.rawName, value: instance.id)
        fields.add(name: servedByHeader.rawName, value: servedBy.rawValue)
        var client = head
        client.headers = fields
        return client
    }

    /// RFC 9110 7.6.1's hop-by-hop fields, and Transfer-Encoding (framing): they describe one
    /// connection, and the gateway has two, each framed by itself. Dropped both ways.
    static func isConnectionField(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: name.equalsIgnoringASCIICase("te")
        case 7: name.equalsIgnoringASCIICase("upgrade") || name.equalsIgnoringASCIICase("trailer")
        case 10: name.equalsIgnoringASCIICase("connection") || name.equalsIgnoringASCIICase("keep-alive")
        case 16: name.equalsIgnoringASCIICase("proxy-connection")
        case 17: name.equalsIgnoringASCIICase("transfer-encoding")
        default: false
        }
    }

    // MARK: Admin

    /// `/metrics`: every metric in Prometheus' text format, with what the provider holds against
    /// the host's idle page-out read now.
    public func metricsExposition() -> [UInt8] {
        if let usage = provider.heldPageUsage() { metrics.record(usage) }
        return metrics.exposition()
    }

    /// Every function: those the gateway has run (with their instances) and those it could.
    public func functions() -> [FunctionStatus] {
        var statuses: [String: FunctionStatus] = [:]
        for pool in pools.withLock({ Array($0.values) }) { statuses[pool.function] = pool.status() }
        for name in provider.functionNames() where statuses[name] == nil {
            statuses[name] = .unlaunched(name, policy: configuration.policy(for: name))
        }
        return statuses.values.sorted { $0.name < $1.name }
    }

    /// One function's state; throws `snapshot-not-found` for a name that is no function.
    public func function(_ name: String) throws -> FunctionStatus {
        try existingPool(name).status()
    }

    /// Changes a function's min/max/concurrency/keep-alive; acts at once.
    public func scale(_ name: String, _ update: ScalingPolicyUpdate) throws -> FunctionStatus {
        let pool = try existingPool(name)
        let policy = update.applied(to: pool.currentPolicy)
        try policy.validate()
        pool.setPolicy(policy)
        logger.info(
            "scaling policy changed",
            metadata: [
                "function": "\(name)", "min": "\(policy.minInstances)", "max": "\(policy.maxInstances)", "concurrency": "\(policy.concurrency)",
            ])
        return pool.status()
    }

    /// Retires a function's instances (each stops after its last request; new requests start
    /// new ones). With `reverify`, its snapshot is verified again before the next launch (after
    /// `kiln bake --replace`). Returns the retired instance ids.
    public func drain(_ name: String, reverify: Bool = false) throws -> [String] {
        let retired = try existingPool(name).drain(reverify: reverify)
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

extension String {
    /// Whether this is `lowercase` (lowercase ASCII) but for the case of ASCII letters: how
    /// HTTP compares field names, without making a lowercased copy.
    func equalsIgnoringASCIICase(_ lowercase: String) -> Bool {
        utf8.elementsEqual(lowercase.utf8) { byte, lower in
            byte == lower || (byte | 0x20 == lower && (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(lower))
        }
    }
}
