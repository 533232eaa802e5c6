import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// A request at zero to a ready standby copy: the gateway hands the frozen copy out on the
/// request's own event loop and sends the request on a connection it made to the copy ahead of
/// time (the kernel queues it until the copy, unfrozen, accepts it).
@Suite("connections made ahead to a frozen copy")
struct ConnectAheadTests {
    /// A listening socket nobody accepts on stands in for a frozen service: what the kernel
    /// shows a client is the same (the handshake completes, the connection waits in the queue).
    @Test func aConnectionMadeAheadCarriesTheFirstRequestHoweverLongItWaited() async throws {
        let listener = try UnacceptingListener()
        defer { listener.close() }
        // An accepted idle connection older than 20 ms is not reused; one made ahead is.
        let port = listener.port
        let transport = PooledInstanceTransport(maxIdleTime: .milliseconds(20)) { _ in try LoadTarget.loopback(port: port).connectedSocket() }
        defer { transport.shutdown() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let instance = GatewayInstance(
            id: "hello-1", function: "hello", endpoint: ServiceEndpoint(networkNamespacePath: "/fake/hello-1", port: listener.port), pid: 1,
            origin: .restored)
        transport.connectAhead(to: instance, on: [loop])
        #expect(await eventually(timeout: .seconds(10)) { transport.idleConnectionCount == 1 })
        #expect(listener.pendingConnections() == 1, "the connection waits in the listener's queue")
        try await Task.sleep(for: .milliseconds(100))

        // The service wakes: it accepts the connection that comes first and answers what it reads.
        let served = Task.detached { try listener.acceptAndAnswerOne() }
        let status = await send(
            .init(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/greet"), body: nil), to: instance, transport, on: loop)
        #expect(status == 200)
        let request = try await served.value
        #expect(request.hasPrefix("GET /greet "), "the first connection in the queue carried the request: \(request)")
        #expect(listener.pendingConnections() == 0, "no second connection was made")
    }

    /// The pool finds a ready copy for a request at zero: the provider hands it out on the
    /// request's loop (no thaw command, no other thread), the request is sent, and only then is
    /// the copy unfrozen and the hand-out logged. Its connection was asked for when the copy came.
    @Test func aReadyCopyIsHandedOutOnTheRequestsLoopAndUnfrozenAfterTheRequestWentOut() async throws {
        let events = EventLog()
        let provider = ReadyStandbyProvider(events: events)
        let transport = AnsweringTransport(events: events)
        let policy = ScalingPolicy(minInstances: 0, maxInstances: 1, concurrency: 4, keepAliveSeconds: 3600, standby: 1)
        var logger = Logger(label: "connect-ahead-test") { _ in EventLogHandler(events: events) }
        logger.logLevel = .info
        let gateway = Gateway(
            configuration: GatewayConfiguration(defaultPolicy: policy, maintenanceInterval: .milliseconds(10)), provider: provider,
            transport: transport, logger: logger)
        gateway.takeRequests(on: MultiThreadedEventLoopGroup.singleton)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await gateway.run() }
            #expect(await eventually { (try? gateway.function("hello"))?.standby.ready == 1 })
            let response = await gateway.handle(
                GatewayRequest(head: HTTPRequest(method: .get, scheme: nil, authority: "x", path: "/hello/greet"), body: nil))
            #expect(response.head.status == .ok)
            #expect(response.head.headerFields[Gateway.servedByHeader] == "standby")
            await gateway.shutdown()
            try await group.waitForAll()
        }
        let log = events.entries
        let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator()).count
        #expect(log.first == "connect ahead hello-1 on \(loops) loops", "\(log)")
        #expect(!log.contains("thaw hello-1"), "a ready copy needs no thaw command: \(log)")
        let handOut = try #require(log.firstIndex(of: "hand out hello-1 on a loop"), "\(log)")
        let sent = try #require(log.firstIndex(of: "send hello-1 /greet"), "\(log)")
        let unfrozen = try #require(log.firstIndex(of: "unfreeze hello-1"), "\(log)")
        #expect(handOut < sent && sent < unfrozen, "\(log)")
        let logged = try #require(log.firstIndex(of: "log standby copy thawed"), "\(log)")
        #expect(sent < logged, "the request goes out before the hand-out's log line is written: \(log)")
    }
}

/// Records each log message in the fakes' event log, as `log MESSAGE`.
private struct EventLogHandler: LogHandler {
    let events: EventLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { events.add("log \(event.message)") }
}

/// Sends one request through `transport` on `loop` and returns the response's status (0 for a
/// failure).
private func send(_ request: ForwardedRequest, to instance: GatewayInstance, _ transport: some InstanceTransport, on loop: any EventLoop) async
    -> UInt
{
    await withCheckedContinuation { continuation in
        loop.execute {
            _ = transport.send(request, to: instance, timeout: .seconds(10), on: loop, receiver: StatusReceiver(continuation))
        }
    }
}

private final class StatusReceiver: ResponseReceiver {
    private let continuation: CheckedContinuation<UInt, Never>
    private var status: UInt = 0

    init(_ continuation: CheckedContinuation<UInt, Never>) { self.continuation = continuation }

    func receiveHead(_ head: HTTPResponseHead) { status = head.status.code }
    func receiveBody(_ part: ByteBuffer) {}
    func receiveEnd() { continuation.resume(returning: status) }
    func receiveFailure(_ failure: TransportFailure) { continuation.resume(returning: 0) }
    var isReadyForMore: Bool { true }
}

/// A TCP listener on loopback that accepts only when told to.
private final class UnacceptingListener: Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            let code = errno
            Glibc.close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Connections waiting to be accepted (`ss` shows them as the listener's Recv-Q).
    func pendingConnections() -> Int {
        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 else { return -1 }
        return Int(info.tcpi_unacked)
    }

    /// Accepts one connection, reads one request head from it (at most 5 s) and answers 200.
    func acceptAndAnswerOne() throws -> String {
        let connection = accept(fd, nil, nil)
        guard connection >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { Glibc.close(connection) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: received, as: UTF8.self).contains("\r\n\r\n") {
            let count = read(connection, &buffer, buffer.count)
            guard count > 0 else { break }
            received += buffer[0..<count]
        }
        let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)
        _ = write(connection, answer, answer.count)
        return String(decoding: received, as: UTF8.self)
    }

    func close() { Glibc.close(fd) }
}

/// What the fakes were asked, in order.
private final class EventLog: Sendable {
    private let list = Mutex<[String]>([])
    func add(_ entry: String) { list.withLock { $0.append(entry) } }
    var entries: [String] { list.withLock { $0 } }
}

/// One function with one ready standby copy at a time; launches of running instances fail.
private final class ReadyStandbyProvider: InstanceProvider {
    let events: EventLog
    private let standbys = Mutex(0)
    private let alive = Mutex<Set<String>>([])

    init(events: EventLog) { self.events = events }

    func functionExists(_ function: String) -> Bool { function == "hello" }
    func functionNames() -> [String] { ["hello"] }
    func prepare(_ function: String) async throws {}
    func launch(_ function: String) async throws -> LaunchReport {
        throw LaunchFailure(restoreError: "this test restores standby copies only", coldStartError: nil)
    }
    func isAlive(_ instance: GatewayInstance) -> Bool { alive.withLock { $0.contains(instance.id) } }
    func terminate(_ instance: GatewayInstance) async { _ = alive.withLock { $0.remove(instance.id) } }

    func launchStandby(_ function: String) async throws -> StandbyReport {
        let number = standbys.withLock {
            $0 += 1
            return $0
        }
        let id = "\(function)-\(number)"
        alive.withLock { _ = $0.insert(id) }
        let instance = GatewayInstance(
            id: id, function: function, endpoint: ServiceEndpoint(networkNamespacePath: "/fake/\(id)", port: 8080), pid: Int32(number),
            origin: .restored)
        return StandbyReport(instance: instance, duration: .milliseconds(1), memoryBytes: nil, acceptsConnectionsWhileFrozen: true)
    }

    func thaw(_ standby: GatewayInstance) async throws -> LaunchReport {
        events.add("thaw \(standby.id)")
        throw LaunchFailure(restoreError: "not expected", coldStartError: nil)
    }

    func handOutAtOnce(_ standby: GatewayInstance) -> LaunchReport? {
        events.add("hand out \(standby.id) \(MultiThreadedEventLoopGroup.currentEventLoop == nil ? "off a loop" : "on a loop")")
        var instance = standby
        instance.origin = .thawed
        return LaunchReport(instance: instance)
    }

    func handedOut(_ thawed: GatewayInstance) { events.add("unfreeze \(thawed.id)") }
}

/// Answers every request 200 at once, on its loop; records sends and connections made ahead.
private final class AnsweringTransport: InstanceTransport {
    let events: EventLog

    init(events: EventLog) { self.events = events }

    func send(
        _ request: ForwardedRequest, to instance: GatewayInstance, timeout: Duration, on loop: any EventLoop, receiver: any ResponseReceiver
    ) -> any ResponseReading {
        events.add("send \(instance.id) \(request.head.uri)")
        let receiver = NIOLoopBound(receiver, eventLoop: loop)
        loop.execute {
            receiver.value.receiveHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "0"]))
            receiver.value.receiveEnd()
        }
        return Answered()
    }

    func connectAhead(to instance: GatewayInstance, on loops: [any EventLoop]) {
        events.add("connect ahead \(instance.id) on \(loops.count) loops")
    }

    func forget(_ instance: GatewayInstance) {}
    func shutdown() {}

    private final class Answered: ResponseReading {
        func resume() {}
    }
}
