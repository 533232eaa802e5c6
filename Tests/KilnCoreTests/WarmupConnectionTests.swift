import Foundation
import Testing

@testable import KilnEngine
@testable import KilnSnapshot
@testable import KilnSystem

/// The bake's warm-up requests against a real HTTP server on loopback (``FakeService``): they go
/// over keep-alive connections, as the service's clients' will, and any failure stops them.
@Suite("warm-up connections")
struct WarmupConnectionTests {
    /// The service in this process's own network namespace, as kiln reaches a sandbox's.
    static func endpoint(_ service: FakeService) -> ServiceEndpoint {
        ServiceEndpoint(networkNamespacePath: "/proc/self/ns/net", port: service.port)
    }

    static func warmUp(_ service: FakeService, _ steps: [WarmupStep]) async throws -> Int {
        let (kiln, root) = try SandboxLifecycleTests.makeKiln(SandboxLifecycleTests.World(failAt: nil))
        defer { try? FileManager.default.removeItem(atPath: root) }
        return try await kiln.warmUp(Self.endpoint(service), function: "fn", steps: steps, logPath: "/nonexistent", keptLogPath: "/nonexistent")
    }

    @Test func warmupRequestsShareKeepAliveConnections() async throws {
        let service = try await FakeService.start()
        defer { Task { await service.stop() } }
        let sent = try await Self.warmUp(service, [WarmupStep(count: 10, path: "/echo"), WarmupStep(count: 1, path: "/echo?again")])
        #expect(sent == 11)
        #expect(service.requests == 11)
        #expect(Kiln.warmupRequestsPerConnection == 3)
        #expect(service.connections == 5, "10 requests over connections of 3, 3, 3 and 1, then one more for the next step")
    }

    @Test func aServiceThatClosesEachConnectionGetsANewOneForTheNextRequest() async throws {
        let service = try await FakeService.start()
        defer { Task { await service.stop() } }
        #expect(try await Self.warmUp(service, [WarmupStep(count: 4, path: "/close")]) == 4)
        #expect(service.connections == 4)
    }

    @Test func aFailingAnswerStopsTheWarmupWithWhatItSaid() async throws {
        let service = try await FakeService.start()
        defer { Task { await service.stop() } }
        do {
            _ = try await Self.warmUp(service, [WarmupStep(count: 5, path: "/no-such-path")])
            Issue.record("a warm-up answered with an error went on")
        } catch let error as KilnError {
            #expect(error.code == .warmupFailed && error.message.contains("/no-such-path") && error.message.contains("HTTP 404"), "\(error)")
        }
        #expect(service.requests == 1, "stopped at the first failing answer")
    }

    /// A ready standby copy's requests before its freeze (``SandboxHost/sendRequests(_:to:perConnection:)``):
    /// the same connections of `perConnection`, every status returned for the lifecycle to judge.
    @Test func theHostsRequestsShareConnectionsAndReturnEveryStatus() async throws {
        let service = try await FakeService.start()
        defer { Task { await service.stop() } }
        let statuses = try await LinuxSandboxHost().sendRequests(
            ["/echo", "/echo", "/no-such-path", "/echo", "/echo", "/echo", "/echo"], to: Self.endpoint(service), perConnection: 3, shapes: [.kiln])
        #expect(statuses == [200, 200, 404, 200, 200, 200, 200])
        #expect(service.connections == 3, "7 requests over connections of 3, 3 and 1")
    }

    /// The bake's warm-up sends kiln's own requests, the ones `kiln serve` forwards and a
    /// library client's in turn (``RequestShape/warmUp(function:)``), so a snapshot's compiled
    /// request path has the branches each of them takes.
    @Test func warmupRequestsComeInEachShapeInTurn() async throws {
        let service = try await FakeService.start()
        defer { Task { await service.stop() } }
        #expect(try await Self.warmUp(service, [WarmupStep(count: 9, path: "/echo")]) == 9)
        let requests = service.requestHeaders
        func field(_ name: String, _ index: Int) -> String? { requests[index].first { $0.0.lowercased() == name.lowercased() }?.1 }
        let hosts = requests.indices.map { field("Host", $0) ?? "-" }
        let kiln = "localhost:\(service.port)"
        let forwarded = "127.0.0.1:\(service.port)"
        // Shifted by one on each connection of three: every shape on a new, a kept and a closing one.
        #expect(
            hosts == [kiln, forwarded, "localhost", forwarded, "localhost", kiln, "localhost", kiln, forwarded], "\(hosts)")
        for index in requests.indices where hosts[index] == forwarded {
            #expect(field("X-Forwarded-Prefix", index) == "/fn" && field("X-Forwarded-Proto", index) == "http" && field("Accept", index) == "*/*")
        }
        for index in requests.indices where hosts[index] == "localhost" {
            #expect(field("Accept", index)?.hasPrefix("application/json") == true && field("X-Forwarded-For", index) == "127.0.0.1")
        }
        // The last of each connection asks to close it, whatever its shape.
        #expect([2, 5, 8].allSatisfy { field("Connection", $0) == "close" }, "\(requests)")
        #expect(service.connections == 3)
    }

    /// A service that answers kiln's own requests but refuses the gateway's shape is told so,
    /// with that shape's fields, not just "HTTP 400".
    @Test func aRefusedShapeIsNamedInTheError() async throws {
        let service = try await FakeService.start()
        defer { Task { await service.stop() } }
        do {
            _ = try await Self.warmUp(service, [WarmupStep(count: 3, path: "/localhost-only")])
            Issue.record("a warm-up whose second request was refused went on")
        } catch let error as KilnError {
            #expect(error.code == .warmupFailed && error.message.contains("HTTP 400"), "\(error)")
            #expect(error.message.contains("as kiln serve forwards it") && error.message.contains("Host: 127.0.0.1:PORT"), "\(error)")
            #expect(error.hint?.contains("unknown host 127.0.0.1:\(service.port)") == true, "\(error.hint ?? "")")
        }
        #expect(service.requests == 2, "the first (kiln's own) was answered, the second refused")
    }

    @Test func aSingleRequestAsksToCloseItsConnection() async throws {
        let service = try await FakeService.start()
        defer { Task { await service.stop() } }
        let reply = try await InstanceHTTPClient.send(.GET, "/echo", to: Self.endpoint(service))
        let document = try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any]
        let headers = (document?["headers"] as? [[String]]) ?? []
        #expect(headers.contains(["Connection", "close"]), "\(headers)")
    }
}
