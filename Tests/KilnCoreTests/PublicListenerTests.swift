import HTTPTypes
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// The public listener's HTTP/1.1 on the wire: what a client library would not show (pipelining,
/// half-closed connections, `Connection: close`, HTTP/1.0), over loopback with fake instances.
@Suite("gateway public listener on the wire (fake instances)")
struct PublicListenerTests {
    @Test func pipelinedRequestsAreAnsweredInOrderAndAHalfCloseStillGetsItsAnswers() async throws {
        try await withListener { port, _ in
            let text = try await rawExchange(port: port, "GET /hello/a HTTP/1.1\r\nHost: x\r\n\r\nGET /hello/b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            let responses = text.components(separatedBy: "HTTP/1.1 200 OK").dropFirst()
            #expect(responses.count == 2, "\(text)")
            #expect(responses.first?.contains(#""path":"/a""#) == true)
            #expect(responses.last?.contains(#""path":"/b?q=1""#) == true)
            #expect(text.lowercased().contains("content-length: "))
            #expect(!text.lowercased().contains("transfer-encoding"))
        }
    }

    @Test func connectionCloseAndHTTP10AreAnsweredThenClosed() async throws {
        try await withListener { port, _ in
            // No half-close from the client: the server closes after the response.
            let close = try await rawExchange(port: port, "GET /hello/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", halfClose: false)
            #expect(close.hasPrefix("HTTP/1.1 200 OK"), "\(close)")
            #expect(close.lowercased().contains("connection: close"))
            let old = try await rawExchange(port: port, "GET /hello/a HTTP/1.0\r\n\r\n", halfClose: false)
            #expect(old.hasPrefix("HTTP/1.0 200 OK"), "\(old)")
        }
    }

    @Test func aBodyOverTheLimitIs413AndTheConnectionGoesOn() async throws {
        try await withListener(maxBodyBytes: 16) { port, _ in
            let body = String(repeating: "x", count: 32)
            let text = try await rawExchange(
                port: port, "POST /hello/a HTTP/1.1\r\nHost: x\r\nContent-Length: 32\r\n\r\n\(body)GET /hello/b HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(text.hasPrefix("HTTP/1.1 413 "), "\(text)")
            #expect(text.contains("body-too-large"))
            #expect(text.contains("HTTP/1.1 200 OK"))
            #expect(text.contains(#""path":"/b""#))
        }
    }

    @Test func gracefulShutdownFinishesTheRequestInFlightThenCloses() async throws {
        let gate = Gate()
        let transport = FakeTransport()
        transport.behaviour.withLock {
            $0 = { _, _ in
                await gate.wait()
                return nil
            }
        }
        try await withListener(transport: transport, shutdownAtEnd: false) { port, server in
            async let answer = rawExchange(port: port, "GET /hello/slow HTTP/1.1\r\nHost: x\r\n\r\n", halfClose: false)
            #expect(await eventually { transport.requests.count == 1 })
            let shutdown = Task { await server.shutdown() }
            try await Task.sleep(for: .milliseconds(50))
            gate.open()
            let text = try await answer
            #expect(text.hasPrefix("HTTP/1.1 200 OK"), "\(text)")
            #expect(text.contains(#""path":"/slow""#))
            await shutdown.value
        }
    }
}

/// Runs a gateway server over fakes on loopback for `body`, with the public port.
private func withListener(
    maxBodyBytes: Int = 8 << 20, transport: FakeTransport = FakeTransport(), shutdownAtEnd: Bool = true,
    _ body: (Int, GatewayServer) async throws -> Void
) async throws {
    let provider = FakeProvider()
    var logger = Logger(label: "public-listener-test")
    logger.logLevel = .critical
    let gateway = Gateway(
        configuration: GatewayConfiguration(
            listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
            maxBodyBytes: maxBodyBytes, maintenanceInterval: .milliseconds(10)),
        provider: provider, transport: transport, logger: logger)
    let server = GatewayServer(gateway: gateway, signals: [], logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        do {
            try await body(await server.boundPorts().listen, server)
        } catch {
            await server.shutdown()
            throw error
        }
        if shutdownAtEnd { await server.shutdown() }
        try await group.waitForAll()
    }
    #expect(provider.running.isEmpty)
}
