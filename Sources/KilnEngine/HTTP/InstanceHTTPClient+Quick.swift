import Foundation
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

extension InstanceHTTPClient {
    /// `GET path` on a new connection (`Connection: close`), asked and awaited on the calling
    /// thread for at most `budget`: the reply's status, or nil when no whole reply head came
    /// within it (the connection is then closed; ask again the usual way).
    ///
    /// Why not through the event loop: a request there hops to an event loop thread and back,
    /// and right after a restore or thaw each hop waits for a CPU the waking JVM's threads hold.
    /// A thawed Spring copy's readiness request took 1.2-7.5 ms to open its channel alone (its
    /// connect took 0.1-2 ms); asked here, nothing waits but the service. The budget bounds
    /// how long a cooperative thread is blocked.
    public static func quickStatus(_ path: String, to endpoint: ServiceEndpoint, within budget: Duration) throws -> Int? {
        let deadline = ContinuousClock.now + budget
        let fd = try connectedSocket(to: endpoint)
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost:\(endpoint.port)\r\nConnection: close\r\nUser-Agent: kiln\r\n\r\n".utf8)
        return try quickExchange(request, on: fd, until: deadline)?.status
    }

    /// Sends `request` on the connected socket `fd` and reads the reply on the calling thread
    /// until its framing says it is whole (or the service closes the connection), for at most
    /// until `deadline`: its head, or nil when no whole reply head came by then. The caller
    /// closes `fd`. (What ``quickStatus(_:to:within:)`` asks with; `kiln bench standby` times
    /// its requests through the gateway with it, as a client in a process of its own would.)
    package static func quickExchange(_ request: [UInt8], on fd: Int32, until deadline: ContinuousClock.Instant) throws -> ReplyHead? {
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, request.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else {
                if n < 0, errno == EINTR { continue }
                throw Failure.connection("send: \(String(cString: strerror(errno)))")
            }
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        // Parsed once, when its blank line has come; later reads only add to the body.
        var head: ReplyHead?
        while true {
            if head == nil { head = ReplyHead(received) }
            if let head, head.isComplete(received) { return head }
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { return nil }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, left.pollMilliseconds)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                // The service closed the connection: what it sent is all there is.
                if let head { return head }
                throw Failure.connection(n == 0 ? "the service closed the connection without a reply" : "recv: \(String(cString: strerror(errno)))")
            }
            received += buffer[0..<n]
        }
    }

    /// The status line, header fields and framing of a reply read so far.
    package struct ReplyHead {
        package var status: Int
        /// Each header field, its name lowercased (the last of a repeated one).
        package var fields: [String: String] = [:]
        /// Where the body starts.
        var bodyStart: Int
        var contentLength: Int?
        var chunked: Bool

        /// Nil until the whole head (up to the blank line) is there.
        package init?(_ bytes: [UInt8]) {
            let blank: [UInt8] = Array("\r\n\r\n".utf8)
            guard let end = bytes.indices.dropLast(3).first(where: { bytes[$0..<$0 + 4].elementsEqual(blank) }) else { return nil }
            let head = String(decoding: bytes[..<end], as: UTF8.self)
            let lines = head.components(separatedBy: "\r\n")
            let statusFields = lines[0].split(separator: " ", maxSplits: 2)
            guard statusFields.count >= 2, statusFields[0].hasPrefix("HTTP/1."), let status = Int(statusFields[1]) else { return nil }
            self.status = status
            self.bodyStart = end + 4
            self.contentLength = nil
            self.chunked = false
            for line in lines.dropFirst() {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { continue }
                let name = parts[0].lowercased()
                let value = parts[1].trimmingCharacters(in: .whitespaces)
                fields[name] = value
                if name == "content-length" { contentLength = Int(value) }
                if name == "transfer-encoding", value.lowercased().contains("chunked") { chunked = true }
            }
        }

        /// Whether `bytes` hold the whole reply by its framing (a body without a length ends
        /// when the service closes the connection, which the caller sees).
        func isComplete(_ bytes: [UInt8]) -> Bool {
            let body = bytes.count - bodyStart
            if let contentLength { return body >= contentLength }
            if chunked { return bytes.count >= 5 && bytes.suffix(5).elementsEqual(Array("0\r\n\r\n".utf8)) }
            return status == 204 || status == 304 || (100..<200).contains(status)
        }
    }
}
