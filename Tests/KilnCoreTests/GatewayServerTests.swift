import Foundation
import HTTPTypes
import Logging
import NIOCore
import Synchronization
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("gateway listeners over loopback (fake instances)")
struct GatewayServerTests {
    /// A gateway server in a command that Ctrl-C cancels (`kiln bench serve`) shuts down as on
    /// SIGTERM: the request in flight is answered, the instance it started is stopped, it
    /// returns without an error, and its listeners log none (cancelled outright, they logged
    /// "Waiting on child channel: CancellationError()" and "Server shutdown error").
    @Test func cancellationShutsTheServerDownGracefully() async throws {
        let provider = FakeProvider()
        let transport = FakeTransport(delay: .milliseconds(300))
        let errors = ErrorLogs()
        var logger = Logger(label: "gateway-server-test") { _ in errors }
        logger.logLevel = .error
        let gateway = Gateway(
            configuration: GatewayConfiguration(
                listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
                maintenanceInterval: .milliseconds(10)),
            provider: provider, transport: transport, logger: logger)
        let server = GatewayServer(gateway: gateway, signals: [], logger: logger)
        let running = Task { try await server.run() }
        let client = KeepAliveClient(.loopback(port: await server.boundPorts().listen))
        defer { client.close() }
        let inFlight = Task { try await client.send(.get, "/hello/greet").status }
        #expect(await eventually { transport.requests.count == 1 })
        running.cancel()
        #expect(try await inFlight.value == .ok)
        try await running.value
        #expect(provider.running.isEmpty)
        #expect(provider.terminated == ["hello-1"])
        #expect(errors.messages.isEmpty)
    }

    @Test func publicAndAdminListenersServeTheirOwnRoutesOnly() async throws {
        let provider = FakeProvider()
        var logger = Logger(label: "gateway-server-test")
        logger.logLevel = .critical
        let gateway = Gateway(
            configuration: GatewayConfiguration(
                listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
                maintenanceInterval: .milliseconds(10)),
            provider: provider, transport: FakeTransport(), logger: logger)
        let server = GatewayServer(gateway: gateway, signals: [], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let ports = await server.boundPorts()
            let client = KeepAliveClient(.loopback(port: ports.listen))
            let admin = KeepAliveClient(.loopback(port: ports.admin))
            defer {
                client.close()
                admin.close()
            }

            let greet = try await client.send(.get, "/hello/greet?name=x")
            #expect(greet.status == .ok)
            #expect(greet.head.headerFields[Gateway.instanceHeader] == "hello-1")
            #expect(greet.bodyText.contains(#""path":"/greet?name=x""#))
            // Keep-alive: the same client connection serves the next request.
            let viaHost = try await client.send(.get, "/greet", host: "hello.gateway.test")
            #expect(viaHost.status == .ok)
            let posted = try await client.send(.post, "/hello/owners", body: Array(#"{"a":1}"#.utf8))
            #expect(posted.status == .ok)

            // No admin route exists on the public listener: these are (unknown) functions.
            for path in ["/metrics", "/functions", "/functions/hello/scale"] {
                let response = try await client.send(.get, path)
                #expect(response.status == .notFound, "\(path) on the public listener")
                #expect(response.head.headerFields[.contentType] == "application/json")
            }

            let functions = try await admin.send(.get, "/functions")
            #expect(functions.status == .ok)
            #expect(functions.bodyText.contains(#""name" : "hello""#))
            let metrics = try await admin.send(.get, "/metrics")
            #expect(metrics.status == .ok)
            #expect(metrics.bodyText.contains(#"kiln_gateway_restores_total{function="hello",result="ok"} 1"#))
            #expect(metrics.bodyText.contains(#"kiln_gateway_request_duration_seconds_bucket{function="hello",outcome="answered""#))
            #expect(metrics.bodyText.contains(#"kiln_gateway_instances{function="hello",state="idle"} 1"#))
            let scaled = try await admin.send(.put, "/functions/hello/scale", body: Array(#"{"max": 2, "concurrency": 4}"#.utf8))
            #expect(scaled.status == .ok)
            #expect(try gateway.function("hello").policy.maxInstances == 2)
            let bad = try await admin.send(.put, "/functions/hello/scale", body: Array(#"{"min": 3}"#.utf8))
            #expect(bad.status == .badRequest)
            let unknown = try await admin.send(.post, "/functions/nope/drain")
            #expect(unknown.status == .notFound)
            let instances = try await admin.send(.get, "/instances")
            #expect(instances.bodyText.contains("hello-1"))
            let drained = try await admin.send(.post, "/functions/hello/drain")
            #expect(drained.bodyText.contains("hello-1"))

            await server.shutdown()
            try await group.waitForAll()
        }
        #expect(provider.running.isEmpty)
    }
}

/// Keeps the messages logged at error level or above.
private struct ErrorLogs: LogHandler {
    private final class Store: Sendable {
        let messages = Mutex<[String]>([])
    }
    private let store = Store()
    var messages: [String] { store.messages.withLock { $0 } }
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .error

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        if event.level >= .error { store.messages.withLock { $0.append("\(event.message)") } }
    }
}
