import Foundation
@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing


/// The gateway's data path over real sockets: a client on loopback, the public listener, the
/// pooled transport, and a stand-in service (``FakeService``, plain NIO) in place of a JVM.
/// What a fake transport cannot show: framing (lengths, chunks, HEAD, 204, HTTP/1.0), streaming,
/// connection reuse, timeouts and responses cut short.
@Suite("gateway forwarding over real sockets")
struct GatewayForwardingTests {
    @Test func aSmallResponseGoesOutWholeWithALengthAndNamesItsInstance() async throws {
        try await withForwardingGateway { port, _, _ in
            let text = try await rawExchange(port: port, "GET /hello/chunked HTTP/1.1\r\nHost: x\r\n\r\n")
            let (head, body) = split(text)
            #expect(head.hasPrefix("HTTP/1.1 200 OK"), "\(text)")
            #expect(head.lowercased().contains("content-length: 13"))
            #expect(!head.lowercased().contains("transfer-encoding"), "the service's chunks are not passed on for a small body")
            #expect(head.contains("X-Kiln-Instance: hello-1"))
            #expect(body == "hello, chunks")
        }
    }

    @Test func theServiceGetsTheRoutedRequestWithoutTheClientsConnectionHeaders() async throws {
        try await withForwardingGateway { port, _, _ in
            let text = try await rawExchange(
                port: port,
                "POST /hello/echo?x=1 HTTP/1.1\r\nHost: gw.test\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
                    + "X-Forwarded-Proto: https\r\nX-Custom: yes\r\nContent-Length: 4\r\n\r\nabcd")
            let echo = try #require(try JSONSerialization.jsonObject(with: Data(split(text).body.utf8)) as? [String: Any], "\(text)")
            #expect(echo["uri"] as? String == "/echo?x=1")
            #expect(echo["body"] as? String == "abcd")
            let headers = (echo["headers"] as? [[String]] ?? []).map { $0.map { $0.lowercased() } }
            #expect(headers.contains(["host", "gw.test"]))
            #expect(headers.contains(["x-custom", "yes"]))
            #expect(headers.contains(["content-length", "4"]))
            #expect(headers.contains(["x-forwarded-prefix", "/hello"]))
            #expect(headers.contains(["x-forwarded-proto", "http"]), "the client's own X-Forwarded-Proto is replaced")
            #expect(!headers.contains { $0.first == "keep-alive" || $0.first == "te" || $0 == ["x-forwarded-proto", "https"] })
        }
    }

    @Test(arguments: [("big", "content-length: 1048576"), ("big-chunked", "transfer-encoding: chunked")])
    func aLargeResponseIsStreamed(path: String, framing: String) async throws {
        try await withForwardingGateway { port, _, _ in
            let text = try await rawExchange(port: port, "GET /hello/\(path)?n=1048576 HTTP/1.1\r\nHost: x\r\n\r\n")
            let (head, body) = split(text)
            #expect(head.hasPrefix("HTTP/1.1 200 OK"))
            #expect(head.lowercased().contains(framing), "\(head)")
            let content = framing.hasPrefix("transfer") ? dechunk(body) : body
            #expect(content.utf8.count == 1_048_576)
            #expect(content == FakeService.pattern(1_048_576))
        }
    }

    @Test func aClientThatReadsSlowlyHoldsTheServiceBackInsteadOfFillingTheGatewaysMemory() async throws {
        try await withForwardingGateway { port, service, _ in
            let size = 64 << 20
            let channel = try await connectRaw(port: port)
            try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "GET /hello/huge?n=\(size) HTTP/1.1\r\nHost: x\r\n\r\n"))
                // Nothing is read for a while: the socket buffers on the way fill up (a few MiB
                // each on loopback), then the gateway stops reading from the service.
                try await Task.sleep(for: .seconds(1))
                #expect(service.bytesWritten < size / 2, "the service wrote \(service.bytesWritten) bytes to a client that read none")
                var received = 0
                for try await chunk in inbound {
                    received += chunk.readableBytes
                    if received >= size { break }
                }
                #expect(received > size, "the whole body (and its chunk framing) arrives in the end")
            }
        }
    }

    @Test func headNoContentAndHTTP10AreFramedAsHTTPSays() async throws {
        try await withForwardingGateway { port, _, _ in
            // HEAD keeps the length of the body it does not get; the connection goes on.
            let head = try await rawExchange(port: port, "HEAD /hello/head HTTP/1.1\r\nHost: x\r\n\r\nGET /hello/chunked HTTP/1.1\r\nHost: x\r\n\r\n")
            let responses = head.components(separatedBy: "HTTP/1.1 200 OK").dropFirst()
            #expect(responses.count == 2, "\(head)")
            #expect(responses.first?.lowercased().contains("content-length: 1234") == true)
            #expect(responses.first?.hasSuffix("\r\n\r\n") == true, "no body after a HEAD response")
            #expect(responses.last?.hasSuffix("hello, chunks") == true)
            // 204: no body, no length.
            let empty = try await rawExchange(port: port, "GET /hello/no-content HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(empty.hasPrefix("HTTP/1.1 204 No Content"), "\(empty)")
            #expect(split(empty).body.isEmpty)
            // An HTTP/1.0 client cannot take chunks: a streamed body ends with the connection.
            let old = try await rawExchange(port: port, "GET /hello/big-chunked?n=200000 HTTP/1.0\r\n\r\n", halfClose: false)
            #expect(old.hasPrefix("HTTP/1.0 200 OK"), "\(old.prefix(200))")
            #expect(!split(old).head.lowercased().contains("transfer-encoding"))
            #expect(split(old).body == FakeService.pattern(200_000))
        }
    }

    @Test func aClientThatAsksBeforeSendingItsBodyIsToldToGoOn() async throws {
        try await withForwardingGateway { port, _, _ in
            let channel = try await connectRaw(port: port)
            try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "PUT /hello/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"))
                var received = ""
                var iterator = inbound.makeAsyncIterator()
                while !received.contains("\r\n\r\n"), let chunk = try await iterator.next() { received += String(buffer: chunk) }
                #expect(received.hasPrefix("HTTP/1.1 100 Continue\r\n"), "\(received)")
                try await outbound.write(ByteBuffer(string: "hello"))
                while !received.contains(#""body":"hello""#), let chunk = try await iterator.next() { received += String(buffer: chunk) }
                #expect(received.contains("HTTP/1.1 200 OK"))
                #expect(!received.lowercased().contains(#"["expect""#), "the gateway answered the Expect itself")
            }
        }
    }

    @Test func aMalformedRequestGetsA400InJSONAndTheConnectionCloses() async throws {
        try await withForwardingGateway { port, service, _ in
            let text = try await rawExchange(port: port, "GET /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", halfClose: false)
            #expect(text.hasPrefix("HTTP/1.1 400 Bad Request"), "\(text)")
            #expect(text.contains(#""code":"bad-request""#))
            #expect(text.lowercased().contains("connection: close"))
            #expect(service.requests == 0)
        }
    }

    @Test func connectionsToTheInstanceAreReusedAndReplacedWhenItClosesThem() async throws {
        try await withForwardingGateway { port, service, transport in
            let client = KeepAliveClient(.loopback(port: port))
            defer { client.close() }
            for _ in 0..<20 {
                let response = try await client.send(.get, "/hello/chunked")
                #expect(response.status == .ok)
            }
            #expect(service.connections == 1, "20 requests in a row share one connection to the instance")
            #expect(transport.idleConnectionCount == 1)
            // The service closes the connection after this answer: the next request gets a new one.
            let closing = try await client.send(.get, "/hello/close")
            #expect(closing.bodyText == "bye")
            let after = try await client.send(.get, "/hello/chunked")
            #expect(after.status == .ok)
            #expect(service.connections == 2)
        }
    }

    @Test func anInstanceThatDoesNotAnswerInTimeGets504() async throws {
        try await withForwardingGateway(requestTimeout: .milliseconds(300)) { port, _, _ in
            let client = KeepAliveClient(.loopback(port: port))
            defer { client.close() }
            let started = ContinuousClock.now
            let response = try await client.send(.get, "/hello/silent")
            #expect(response.status == .gatewayTimeout)
            #expect(errorBody(response)["code"] == "instance-timeout")
            #expect(response.head.headerFields[Gateway.instanceHeader] == "hello-1")
            #expect(started.duration(to: .now) < .seconds(5))
        }
    }

    @Test func aResponseCutShortIs502WhenSmallAndAClosedConnectionWhenStreaming() async throws {
        try await withForwardingGateway { port, _, _ in
            let small = try await rawExchange(port: port, "GET /hello/cut HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(small.hasPrefix("HTTP/1.1 502 Bad Gateway"), "\(small)")
            #expect(small.contains(#""code":"instance-failed""#))
            #expect(small.contains("X-Kiln-Instance: hello-1"))
            // Streaming had begun: the client sees fewer bytes than promised, then the end.
            let big = try await rawExchange(port: port, "GET /hello/cut-big HTTP/1.1\r\nHost: x\r\n\r\n", halfClose: false, toleratingReset: true)
            #expect(big.hasPrefix("HTTP/1.1 200 OK"))
            #expect(split(big).body.utf8.count < 1_048_576)
        }
    }

    @Test func aClientThatLeavesWhileItsRequestWaitsLeavesTheQueue() async throws {
        // A queue timeout far longer than the test: only the departure can empty the queue.
        try await withForwardingGateway(policy: ScalingPolicy(maxInstances: 1, concurrency: 1, queueTimeoutSeconds: 600)) { port, service, _ in
            let holder = KeepAliveClient(.loopback(port: port))
            defer { holder.close() }
            let held = Task { try await holder.send(.get, "/hello/hold") }
            try #require(await eventually { service.held == 1 })
            let waiting = try await connectRaw(port: port)
            // It leaves for good (a reset): a client that only shuts its sending side down still
            // waits for its answer, and gets it.
            try await (waiting.channel as! any SocketOptionProvider).setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
            try await waiting.executeThenClose { _, outbound in
                try await outbound.write(ByteBuffer(string: "GET /hello/chunked HTTP/1.1\r\nHost: x\r\n\r\n"))
                #expect(await eventually { (try? service.gateway?.function("hello"))?.queueLength == 1 })
            }
            #expect(await eventually(timeout: .seconds(10)) { (try? service.gateway?.function("hello"))?.queueLength == 0 }, "the request of a client that left is dropped")
            service.release()
            #expect(try await held.value.status == .ok)
            #expect(service.requests == 1, "the dropped request never reached the service")
        }
    }
}

// MARK: - Harness

/// Runs a gateway (fake instances, real transport and listener) in front of a ``FakeService``
/// for `body`, with the public port.
private func withForwardingGateway(
    policy: ScalingPolicy = ScalingPolicy(), requestTimeout: Duration = .seconds(30),
    _ body: (Int, FakeService, PooledInstanceTransport) async throws -> Void
) async throws {
    let service = try await FakeService.start()
    let transport = PooledInstanceTransport(connect: { _ in try LoadTarget.loopback(port: service.port).connectedSocket() })
    let provider = FakeProvider(launchDelay: .zero)
    var logger = Logger(label: "forwarding-test")
    logger.logLevel = .critical
    let gateway = Gateway(
        configuration: GatewayConfiguration(
            listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0), defaultPolicy: policy,
            requestTimeout: requestTimeout, maintenanceInterval: .milliseconds(10), listenerThreads: 1),
        provider: provider, transport: transport, logger: logger)
    service.gateway = gateway
    let server = GatewayServer(gateway: gateway, signals: [], logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        do {
            try await body(await server.boundPorts().listen, service, transport)
        } catch {
            service.release()
            await server.shutdown()
            await service.stop()
            throw error
        }
        service.release()
        await server.shutdown()
        try await group.waitForAll()
    }
    await service.stop()
    #expect(provider.running.isEmpty)
    #expect(transport.idleConnectionCount == 0, "shutdown closes the connections to instances")
}

/// The head (status line and fields) and the body of one response.
private func split(_ text: String) -> (head: String, body: String) {
    guard let end = text.range(of: "\r\n\r\n") else { return (text, "") }
    return (String(text[..<end.upperBound]), String(text[end.upperBound...]))
}

/// The content of a chunked body.
private func dechunk(_ body: String) -> String {
    var bytes = Substring(body)
    var content = ""
    while let lineEnd = bytes.range(of: "\r\n"), let size = Int(bytes[..<lineEnd.lowerBound], radix: 16), size > 0 {
        let start = lineEnd.upperBound
        let stop = bytes.utf8.index(start, offsetBy: size)
        content += bytes[start..<stop]
        bytes = bytes[bytes.utf8.index(stop, offsetBy: 2)...]
    }
    return content
}

/// A stand-in for a function's service on loopback, answering by path:
///
/// | path | answer |
/// |---|---|
/// | `/echo` | JSON: method, uri, headers (`[[name, value]]`), body |
/// | `/chunked` | `hello, chunks` in two chunks, no length |
/// | `/big?n=N`, `/big-chunked?n=N` | N bytes of ``pattern(_:)``, with a length or in chunks |
/// | `/head` | Content-Length 1234 and no body |
/// | `/no-content` | 204 |
/// | `/close` | `bye`, then closes the connection |
/// | `/silent` | nothing, ever |
/// | `/cut`, `/cut-big` | a head promising 100 bytes (1 MiB), a tenth of them, then a close |
/// | `/hold` | `held` once ``release()`` is called |
/// | `/huge?n=N` | N bytes without a length, written only while the connection takes them |
final class FakeService: Sendable {
    private struct State {
        var connections = 0
        var requests = 0
        var held: [@Sendable () -> Void] = []
        var released = false
        var gateway: Gateway?
        var bytesWritten = 0
    }

    let port: Int
    private let channel: any Channel
    private let state: Mutex<State>

    private init(channel: any Channel) {
        self.channel = channel
        port = channel.localAddress!.port!
        state = Mutex(State())
    }

    static func start() async throws -> FakeService {
        let box = StateBox()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                box.service?.state.withLock { $0.connections += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false)
                    try channel.pipeline.syncOperations.addHandler(FakeServiceHandler(box: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let service = FakeService(channel: channel)
        box.service = service
        return service
    }

    var connections: Int { state.withLock { $0.connections } }
    var requests: Int { state.withLock { $0.requests } }
    var held: Int { state.withLock { $0.held.count } }
    /// The gateway in front (for tests that look at its queue).
    var gateway: Gateway? {
        get { state.withLock { $0.gateway } }
        set { state.withLock { $0.gateway = newValue } }
    }

    fileprivate func counted() { state.withLock { $0.requests += 1 } }

    /// Body bytes handed to the kernel for `/huge` so far.
    var bytesWritten: Int { state.withLock { $0.bytesWritten } }
    fileprivate func wrote(_ count: Int) { state.withLock { $0.bytesWritten += count } }

    /// Holds `answer` until ``release()`` (at once if it was).
    fileprivate func hold(_ answer: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            if state.released { return true }
            state.held.append(answer)
            return false
        }
        if now { answer() }
    }

    /// Answers every held request, and those to come at once.
    func release() {
        let answers = state.withLock { state in
            state.released = true
            defer { state.held = [] }
            return state.held
        }
        for answer in answers { answer() }
    }

    func stop() async {
        try? await channel.close()
    }

    /// `n` bytes of a repeating, position-dependent text (a shifted or lost byte shows).
    static func pattern(_ n: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
        return String(decoding: (0..<n).map { alphabet[($0 + $0 / alphabet.count) % alphabet.count] }, as: UTF8.self)
    }
}

private final class StateBox: @unchecked Sendable {
    // Set once, before the first connection is accepted.
    var service: FakeService?
}

private final class FakeServiceHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let box: StateBox
    private var head: HTTPRequestHead?
    private var body = ""
    /// What `/huge` still has to write.
    private var hugeLeft = 0
    private var writingHuge = false

    init(box: StateBox) {
        self.box = box
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = ""
        case .body(let part):
            body += String(buffer: part)
        case .end:
            guard let head else { return }
            box.service?.counted()
            answer(head, context: context)
        }
    }

    private func answer(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = String(request.uri.prefix { $0 != "?" })
        let n = request.uri.split(separator: "n=").last.flatMap { Int($0) } ?? 0
        switch path {
        case "/echo":
            let document: [String: Any] = [
                "method": request.method.rawValue, "uri": request.uri, "headers": request.headers.map { [$0.name, $0.value] }, "body": body,
            ]
            respond(context, .ok, body: String(decoding: try! JSONSerialization.data(withJSONObject: document), as: UTF8.self))
        case "/chunked":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "hello, ")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "chunks")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/big", "/big-chunked":
            let headers: HTTPHeaders = path == "/big" ? ["Content-Length": String(n)] : [:]
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            let content = Array(FakeService.pattern(n).utf8)
            for start in stride(from: 0, to: n, by: 16 << 10) {
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: content[start..<min(n, start + (16 << 10))])))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/head":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "1234"]))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/no-content":
            respond(context, .noContent, body: "")
        case "/close":
            let channel = context.channel
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "3", "Connection": "close"]))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "bye")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        case "/cut", "/cut-big":
            let promised = path == "/cut" ? 100 : 1 << 20
            let channel = context.channel
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": String(promised)]))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "x"), count: promised / 10)))))
                .whenComplete { _ in channel.close(promise: nil) }
        case "/hold":
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let loop = context.eventLoop
            box.service?.hold {
                loop.execute {
                    let (handler, context) = bound.value
                    handler.respond(context, .ok, body: "held")
                }
            }
        case "/huge":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
            hugeLeft = n
            writeHuge(context)
        case "/silent":
            break
        default:
            respond(context, .notFound, body: "no such path")
        }
    }

    /// Writes `/huge`'s body while the connection takes it (NIO's writability), the way a server
    /// that respects back-pressure does.
    private func writeHuge(_ context: ChannelHandlerContext) {
        // A flush can make the channel writable again, and NIO says so from within the write:
        // the loop below is already running then.
        guard !writingHuge else { return }
        writingHuge = true
        defer { writingHuge = false }
        let part = ByteBuffer(repeating: UInt8(ascii: "h"), count: 64 << 10)
        while hugeLeft > 0, context.channel.isWritable {
            let count = min(hugeLeft, part.readableBytes)
            hugeLeft -= count
            box.service?.wrote(count)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(part.getSlice(at: 0, length: count)!))), promise: nil)
            if hugeLeft == 0 { context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil) }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, hugeLeft > 0 { writeHuge(context) }
        context.fireChannelWritabilityChanged()
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, body: String) {
        var headers = HTTPHeaders()
        if status != .noContent { headers.add(name: "Content-Length", value: String(body.utf8.count)) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
