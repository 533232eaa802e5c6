import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// A fake ``InstanceProvider``: "launches" are counted, take `launchDelay`, and produce
/// instances whose liveness the test controls. No root, no containers.
final class FakeProvider: InstanceProvider {
    struct State {
        var functions: Set<String>
        var launchDelay: Duration = .milliseconds(50)
        var prepares = 0
        var launches = 0
        var alive: Set<String> = []
        var terminated: [String] = []
        var failPrepare: String?
        /// The restore fails; with `coldStartWorks` a cold start stands in, else the launch fails.
        var failRestore = false
        var coldStartWorks = true
        /// What ``heldPageUsage()`` reports.
        var heldPages: HeldPageUsage?
    }

    let state: Mutex<State>

    init(functions: Set<String> = ["hello"], launchDelay: Duration = .milliseconds(50)) {
        state = Mutex(State(functions: functions, launchDelay: launchDelay))
    }

    var launches: Int { state.withLock { $0.launches } }
    var prepares: Int { state.withLock { $0.prepares } }
    var terminated: [String] { state.withLock { $0.terminated } }
    var running: Set<String> { state.withLock { $0.alive } }

    func functionExists(_ function: String) -> Bool { state.withLock { $0.functions.contains(function) } }
    func functionNames() -> [String] { state.withLock { $0.functions.sorted() } }

    func prepare(_ function: String) async throws {
        let failure = state.withLock { state -> String? in
            state.prepares += 1
            return state.failPrepare
        }
        if let failure { throw KilnError(.snapshotCorrupt, failure) }
    }

    func launch(_ function: String) async throws -> LaunchReport {
        let (number, delay, failRestore, coldStartWorks) = state.withLock { state in
            state.launches += 1
            return (state.launches, state.launchDelay, state.failRestore, state.coldStartWorks)
        }
        try await Task.sleep(for: delay)
        let id = "\(function)-\(number)"
        if failRestore, !coldStartWorks {
            throw LaunchFailure(restoreError: "CRIU could not restore", coldStartError: "the service exited")
        }
        state.withLock { _ = $0.alive.insert(id) }
        let instance = GatewayInstance(
            id: id, function: function, endpoint: ServiceEndpoint(networkNamespacePath: "/fake/\(id)", port: 8080), pid: Int32(number),
            origin: failRestore ? .coldStart : .restored)
        return failRestore
            ? LaunchReport(instance: instance, restoreFailure: "CRIU could not restore", coldStartDuration: delay)
            : LaunchReport(instance: instance, restoreDuration: delay)
    }

    func isAlive(_ instance: GatewayInstance) -> Bool { state.withLock { $0.alive.contains(instance.id) } }

    func terminate(_ instance: GatewayInstance) async {
        state.withLock { state in
            state.alive.remove(instance.id)
            state.terminated.append(instance.id)
        }
    }

    /// Makes an instance "die" (as kill -9 would).
    func kill(_ id: String) { state.withLock { _ = $0.alive.remove(id) } }

    func heldPageUsage() -> HeldPageUsage? { state.withLock { $0.heldPages } }
}

/// A fake ``InstanceTransport``: answers 200 with `{"instance", "path"}` after `delay`,
/// unless the test's `behaviour` says otherwise (a response, or a thrown ``TransportFailure``).
/// Records what each instance was sent.
final class FakeTransport: InstanceTransport {
    typealias Behaviour = @Sendable (GatewayInstance, ForwardedRequest) async throws -> GatewayResponse?

    private let sent = Mutex<[(instance: String, request: ForwardedRequest)]>([])
    private let inFlight = Mutex<(now: Int, peak: Int)>((0, 0))
    let behaviour = Mutex<Behaviour?>(nil)
    let delay: Duration

    init(delay: Duration = .zero) {
        self.delay = delay
    }

    var requests: [(instance: String, request: ForwardedRequest)] { sent.withLock { $0 } }
    var peakInFlight: Int { inFlight.withLock { $0.peak } }

    func send(
        _ request: ForwardedRequest, to instance: GatewayInstance, timeout: Duration, on loop: any EventLoop, receiver: any ResponseReceiver
    ) -> any ResponseReading {
        sent.withLock { $0.append((instance.id, request)) }
        inFlight.withLock {
            $0.now += 1
            $0.peak = max($0.peak, $0.now)
        }
        let receiver = NIOLoopBound(receiver, eventLoop: loop)
        let behaviour = behaviour.withLock { $0 }
        Task {
            let outcome: Result<GatewayResponse, TransportFailure>
            do {
                if let behaviour, let response = try await behaviour(instance, request) {
                    outcome = .success(response)
                } else {
                    if delay > .zero { try await Task.sleep(for: delay) }
                    let body = #"{"instance":"\#(instance.id)","path":"\#(request.head.uri)"}"#
                    outcome = .success(
                        GatewayResponse(
                            head: HTTPResponse(status: .ok, headerFields: [.contentType: "application/json"]), body: ByteBuffer(string: body)))
                }
            } catch let failure as TransportFailure {
                outcome = .failure(failure)
            } catch {
                outcome = .failure(.failed("\(error)"))
            }
            inFlight.withLock { $0.now -= 1 }
            loop.execute {
                switch outcome {
                case .success(let response):
                    receiver.value.receiveHead(response.nioHead)
                    receiver.value.receiveBody(response.body)
                    receiver.value.receiveEnd()
                case .failure(let failure):
                    receiver.value.receiveFailure(failure)
                }
            }
        }
        return WholeResponse()
    }

    func forget(_ instance: GatewayInstance) {}
    func shutdown() {}

    /// The fake answers whole: nothing to hold back.
    private final class WholeResponse: ResponseReading {
        func resume() {}
    }
}

/// A one-shot latch tests open to release held requests.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// Runs a gateway over fakes for the duration of `body`, then shuts it down (which must stop
/// every instance it launched).
func withFakeGateway(
    policy: ScalingPolicy = ScalingPolicy(), policies: [String: ScalingPolicy] = [:], provider: FakeProvider = FakeProvider(),
    transport: FakeTransport = FakeTransport(), configure: (inout GatewayConfiguration) -> Void = { _ in },
    _ body: (Gateway, FakeProvider, FakeTransport) async throws -> Void
) async throws {
    var configuration = GatewayConfiguration(defaultPolicy: policy, policies: policies, maintenanceInterval: .milliseconds(10))
    configure(&configuration)
    var logger = Logger(label: "gateway-test")
    logger.logLevel = .critical
    let gateway = Gateway(configuration: configuration, provider: provider, transport: transport, logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await gateway.run() }
        do {
            try await body(gateway, provider, transport)
        } catch {
            await gateway.shutdown()
            throw error
        }
        await gateway.shutdown()
        try await group.waitForAll()
    }
    #expect(provider.running.isEmpty, "shutdown must stop every instance, left: \(provider.running)")
}

/// Polls `condition` until it holds or `timeout` passes.
/// Generous by default: it returns as soon as the condition holds, and on a 2-core machine
/// running the integration tests beside these, a fake restore can wait seconds for a thread.
func eventually(timeout: Duration = .seconds(30), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return await condition()
}

/// The decoded `{"error": {...}}` of a gateway error response.
func errorBody(_ response: GatewayResponse) -> [String: String] {
    let object = try? JSONSerialization.jsonObject(with: Data(response.bodyText.utf8)) as? [String: Any]
    return (object?["error"] as? [String: Any])?.compactMapValues { $0 as? String } ?? [:]
}

/// Sends `count` copies of a request at once and returns the responses.
func concurrently(_ gateway: Gateway, count: Int, _ request: @escaping @Sendable () -> GatewayRequest) async -> [GatewayResponse] {
    await withTaskGroup(of: GatewayResponse.self) { group in
        for _ in 0..<count { group.addTask { await gateway.handle(request()) } }
        var responses: [GatewayResponse] = []
        for await response in group { responses.append(response) }
        return responses
    }
}

/// The value of one sample line (`name{labels} value`) of a Prometheus exposition.
func metricValue(_ exposition: String, _ series: String) -> Double? {
    exposition.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
}

/// A raw TCP connection to a listener on loopback, half-closable.
func connectRaw(port: Int) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.allowRemoteHalfClosure, value: true)
        // An address, not a host name: name resolution runs on NIO's shared blocking pool,
        // which the integration tests running alongside may keep busy.
        .connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: port)) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
            }
        }
}

/// Writes `text` on a new connection (then shuts the sending side down, unless told not to) and
/// returns everything received until the server closes the connection. With `toleratingReset`,
/// a connection the server resets returns what came before instead of throwing.
func rawExchange(port: Int, _ text: String, halfClose: Bool = true, toleratingReset: Bool = false) async throws -> String {
    try await connectRaw(port: port).executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: text))
        if halfClose { outbound.finish() }
        var received = ""
        do {
            for try await chunk in inbound { received += String(buffer: chunk) }
        } catch  where toleratingReset {
            // What arrived before the reset is the answer.
        }
        return received
    }
}
