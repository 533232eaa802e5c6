import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

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
                try await outbound.write(
                    ByteBuffer(string: "PUT /hello/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"))
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
            let text = try await rawExchange(
                port: port, "GET /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", halfClose: false)
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
            #expect(
                await eventually(timeout: .seconds(10)) { (try? service.gateway?.function("hello"))?.queueLength == 0 },
                "the request of a client that left is dropped")
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
