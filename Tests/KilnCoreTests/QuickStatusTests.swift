import Foundation
import Testing

@testable import KilnEngine
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// ``InstanceHTTPClient/quickStatus(_:to:within:)``, the readiness request asked on the caller's
/// thread, against canned replies from a raw socket on loopback (this process's namespace).
@Suite("quick readiness requests")
struct QuickStatusTests {
    /// A listening socket on 127.0.0.1 that answers each connection with `reply` (nil: reads
    /// the request and says nothing), keeping it open unless `closing`.
    final class CannedServer: @unchecked Sendable {
        let fd: Int32
        let port: Int
        private var thread: Thread?
        private(set) var requests: [String] = []
        private let lock = NSLock()

        /// `rest`, when given, follows `reply` 50 ms later on the same connection (a reply that
        /// comes in two reads).
        init(reply: String?, rest: String? = nil, closing: Bool = true, connections: Int = 1) throws {
            let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            listen(listener, 8)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
            fd = listener
            port = Int(UInt16(bigEndian: address.sin_port))
            start(reply: reply, rest: rest, closing: closing, connections: connections)
        }

        private func start(reply: String?, rest: String?, closing: Bool, connections: Int) {
            let listener = fd
            thread = Thread { [self] in
                for _ in 0..<connections {
                    let client = accept(listener, nil, nil)
                    guard client >= 0 else { return }
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                    lock.withLock { requests.append(String(decoding: buffer[0..<max(n, 0)], as: UTF8.self)) }
                    for (index, piece) in [reply, rest].enumerated() {
                        guard let piece else { continue }
                        if index > 0 { usleep(50_000) }
                        let bytes = Array(piece.utf8)
                        _ = bytes.withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    }
                    if closing {
                        close(client)
                    } else {
                        usleep(500_000)
                        close(client)
                    }
                }
            }
            thread?.start()
        }

        var endpoint: ServiceEndpoint { ServiceEndpoint(networkNamespacePath: "/proc/self/ns/net", port: port) }
        var firstRequest: String { lock.withLock { requests.first ?? "" } }

        private var closed = false

        /// Stops listening (once: tests run side by side, and a second close could hit another
        /// test's socket that reused the number).
        func closeListener() {
            lock.withLock {
                guard !closed else { return }
                closed = true
                close(fd)
            }
        }

        deinit { closeListener() }
    }

    @Test func aReplyWithALengthIsReadWithoutWaitingForTheClose() throws {
        let server = try CannedServer(reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", closing: false)
        let start = ContinuousClock.now
        #expect(try InstanceHTTPClient.quickStatus("/health", to: server.endpoint, within: .seconds(2)) == 200)
        #expect(start.duration(to: .now) < .milliseconds(400), "the reply was whole; the server keeps the connection 500 ms")
        #expect(server.firstRequest.hasPrefix("GET /health HTTP/1.1\r\n") && server.firstRequest.contains("Connection: close\r\n"))
    }

    @Test func chunkedAndUnframedRepliesAndErrorStatuses() throws {
        let chunked = try CannedServer(
            reply: "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n", closing: false)
        #expect(try InstanceHTTPClient.quickStatus("/health", to: chunked.endpoint, within: .seconds(2)) == 503)
        // No length, no chunks: the body ends with the connection.
        let unframed = try CannedServer(reply: "HTTP/1.1 200 OK\r\n\r\nwhatever")
        #expect(try InstanceHTTPClient.quickStatus("/", to: unframed.endpoint, within: .seconds(2)) == 200)
    }

    @Test func aServiceThatDoesNotAnswerInTimeGivesNilAfterTheBudget() throws {
        let silent = try CannedServer(reply: nil, closing: false)
        let start = ContinuousClock.now
        #expect(try InstanceHTTPClient.quickStatus("/health", to: silent.endpoint, within: .milliseconds(30)) == nil)
        let elapsed = start.duration(to: .now)
        #expect(elapsed >= .milliseconds(30) && elapsed < .milliseconds(300), "waited \(elapsed)")
    }

    @Test func refusedAndClosedConnectionsThrow() throws {
        let closed = try CannedServer(reply: nil)
        #expect(throws: InstanceHTTPClient.Failure.self) { try InstanceHTTPClient.quickStatus("/", to: closed.endpoint, within: .seconds(2)) }
        let port = closed.port
        closed.closeListener()
        do {
            _ = try InstanceHTTPClient.quickStatus(
                "/", to: ServiceEndpoint(networkNamespacePath: "/proc/self/ns/net", port: port), within: .seconds(1))
            Issue.record("a connection to a closed port succeeded")
        } catch InstanceHTTPClient.Failure.refused {
        } catch {
            Issue.record("expected refused, got \(error)")
        }
    }

    @Test func replyHeadsAreReadOnlyWhenWhole() {
        #expect(InstanceHTTPClient.ReplyHead(Array("HTTP/1.1 200 OK\r\nContent-Le".utf8)) == nil)
        let head = InstanceHTTPClient.ReplyHead(Array("HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n".utf8))
        #expect(head?.status == 204 && head?.isComplete(Array("HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n".utf8)) == true)
        let partial = Array("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab".utf8)
        #expect(InstanceHTTPClient.ReplyHead(partial)?.isComplete(partial) == false)
        #expect(InstanceHTTPClient.ReplyHead(Array("SSH-2.0-OpenSSH\r\n\r\n".utf8)) == nil)
    }

    /// What `kiln bench standby` times its requests through the gateway with: the reply's
    /// header fields come back by lowercased name (its `X-Kiln-Served-By`).
    @Test func anExchangeGivesTheReplysFields() throws {
        let server = try CannedServer(reply: "HTTP/1.1 200 OK\r\nX-Kiln-Served-By: standby\r\nContent-Length: 2\r\n\r\nok", closing: false)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        _ = try InstanceHTTPClient.connectLoopback(fd, port: server.port)
        let reply = try InstanceHTTPClient.quickExchange(
            Array("GET /hello/ HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8), on: fd, until: .now + .seconds(2))
        #expect(reply?.status == 200)
        #expect(reply?.fields["x-kiln-served-by"] == "standby")
        #expect(server.firstRequest.hasPrefix("GET /hello/ HTTP/1.1\r\n"))
    }

    /// A head read whole before its body has come (parsed once; later reads only add to the
    /// body): the exchange waits for the body its length promises, without the close.
    @Test func aBodyThatComesAfterItsHeadIsWaitedFor() throws {
        let server = try CannedServer(
            reply: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kiln-Served-By: instance\r\n\r\nab", rest: "cde", closing: false)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        _ = try InstanceHTTPClient.connectLoopback(fd, port: server.port)
        let start = ContinuousClock.now
        let reply = try InstanceHTTPClient.quickExchange(Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8), on: fd, until: .now + .seconds(2))
        let elapsed = start.duration(to: .now)
        #expect(reply?.status == 200 && reply?.fields["x-kiln-served-by"] == "instance")
        #expect(elapsed >= .milliseconds(40), "returned after \(elapsed), before the body's last 3 bytes were sent")
        #expect(elapsed < .milliseconds(400), "waited \(elapsed): for the close (500 ms), not for the body")
    }
}
