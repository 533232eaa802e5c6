import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite("instance connections")
struct HTTPConnectionTests {
    /// A client connection whose server went away before it is reused must fail at once, as
    /// "nothing sent", not wait out its timeout. Found by the soak when the gateway used this
    /// client: one request in ~10,000 hung for the full 60 s.
    @Test func aRequestOnAClosedConnectionFailsAtOnceAsNotSent() async throws {
        var ends: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        let connection = try await HTTPConnection.adopt(socket: ends[0], on: MultiThreadedEventLoopGroup.singleton.next())
        close(ends[1])
        // However the connection ended (the peer's close, noticed when the event loop next reads,
        // or our own), what matters is the state it is in when it is reused: closed.
        connection.close()
        let deadline = ContinuousClock.now + .seconds(30)
        while connection.isActive, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try #require(!connection.isActive)

        let started = ContinuousClock.now
        let request = ForwardedRequest(
            head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/greet", headers: ["Host": "localhost"]), body: nil)
        do {
            _ = try await connection.execute(request, timeout: .seconds(30))
            Issue.record("a request on a closed connection succeeded")
        } catch TransportFailure.notSent {
            // Expected: nothing reached the server.
        } catch {
            Issue.record("expected notSent, got \(error)")
        }
        #expect(started.duration(to: .now) < .seconds(5), "it must fail at once, not at the timeout")
    }
}
