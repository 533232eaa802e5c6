import HTTPTypes
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where a benchmark or test client connects: the gateway on loopback, or an instance directly
/// (inside its network namespace, as the gateway itself does).
public enum LoadTarget: Sendable {
    case loopback(port: Int)
    case instance(ServiceEndpoint)

    func connectedSocket() throws -> NIOBSDSocket.Handle {
        switch self {
        case .instance(let endpoint):
            return try InstanceHTTPClient.connectedSocket(to: endpoint)
        case .loopback(let port):
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw InstanceHTTPClient.Failure.connection("socket: \(errnoDescription(errno))") }
            return try InstanceHTTPClient.connectLoopback(fd, port: port)
        }
    }
}

/// A keep-alive HTTP/1.1 client connection for benchmarks and tests (the same NIO client the
/// gateway uses towards instances); reconnects when the server closes.
public final class KeepAliveClient: Sendable {
    public let target: LoadTarget
    private let current = Mutex<HTTPConnection?>(nil)

    public init(_ target: LoadTarget) {
        self.target = target
    }

    /// One request; `host` is the Host header (default `localhost`).
    public func send(
        _ method: HTTPRequest.Method = .get, _ path: String, host: String = "localhost", body: [UInt8]? = nil, timeout: Duration = .seconds(60)
    ) async throws -> GatewayResponse {
        let connection: HTTPConnection
        if let open = current.withLock({ $0 }), open.isActive {
            connection = open
        } else {
            connection = try await HTTPConnection.adopt(socket: target.connectedSocket(), on: MultiThreadedEventLoopGroup.singleton.next())
            current.withLock { $0 = connection }
        }
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method.rawValue), uri: path)
        head.headers.add(name: "Host", value: host)
        if let body {
            head.headers.add(name: "Content-Length", value: String(body.count))
            head.headers.add(name: "Content-Type", value: "application/json")
        }
        let request = ForwardedRequest(head: head, body: body.map { ByteBuffer(bytes: $0) })
        do {
            let reply = try await connection.execute(request, timeout: timeout)
            if !reply.reusable { close() }
            return reply.response
        } catch {
            close()
            throw error
        }
    }

    public func close() {
        current.withLock { connection in
            connection?.close()
            connection = nil
        }
    }
}

/// Drives HTTP load: `connections` clients, each sending its next request as soon as the last
/// one is answered, for a fixed time (a closed-loop load, like `wrk`).
public enum LoadGenerator {
    /// One request's fate.
    public struct Sample: Sendable {
        /// The HTTP status, or nil when the request got no response at all.
        public var status: Int?
        /// The `X-Kiln-Instance` header of a response other than 200: which instance failed.
        /// (Not read for a 200: the load generator must do the same work per request whether it
        /// calls an instance directly or the gateway, which alone adds the header.)
        public var instance: String?
        public var latency: Duration
        public var error: String?
    }

    public struct Result: Sendable {
        public var samples: [Sample]
        public var elapsed: Duration
        public var requestsPerSecond: Double { Double(samples.count) / max(elapsed.seconds, 1e-9) }
        public var ok: Int { samples.filter { $0.status == 200 }.count }
        /// Latency percentile (0...1) of all samples, in milliseconds.
        public func latencyMs(_ quantile: Double) -> Double {
            SampleSummary.nearestRank(quantile, of: samples.map(\.latency.milliseconds).sorted())
        }
    }

    /// Runs `connections` closed loops against `target` for `duration`, sending `GET path` with
    /// `host` as the Host header.
    public static func run(
        _ target: LoadTarget, path: String, host: String = "localhost", connections: Int, duration: Duration
    ) async -> Result {
        let start = ContinuousClock.now
        let deadline = start + duration
        let perClient = await withTaskGroup(of: [Sample].self) { group in
            for _ in 0..<connections {
                group.addTask {
                    let client = KeepAliveClient(target)
                    defer { client.close() }
                    var samples: [Sample] = []
                    while ContinuousClock.now < deadline, !Task.isCancelled {
                        samples.append(await one(client, path: path, host: host))
                    }
                    return samples
                }
            }
            var all: [[Sample]] = []
            for await samples in group { all.append(samples) }
            return all
        }
        return Result(samples: perClient.flatMap { $0 }, elapsed: start.duration(to: .now))
    }

    /// Sends `count` requests at once, each on its own connection.
    public static func burst(_ target: LoadTarget, path: String, host: String = "localhost", count: Int) async -> [Sample] {
        await withTaskGroup(of: Sample.self) { group in
            for _ in 0..<count {
                group.addTask {
                    let client = KeepAliveClient(target)
                    defer { client.close() }
                    return await one(client, path: path, host: host)
                }
            }
            var samples: [Sample] = []
            for await sample in group { samples.append(sample) }
            return samples
        }
    }

    static func one(_ client: KeepAliveClient, path: String, host: String) async -> Sample {
        let sent = ContinuousClock.now
        do {
            let response = try await client.send(.get, path, host: host)
            let latency = sent.duration(to: .now)
            if response.status.code == 200 { return Sample(status: 200, instance: nil, latency: latency, error: nil) }
            return Sample(
                status: response.status.code, instance: response.head.headerFields[Gateway.instanceHeader], latency: latency,
                error: response.bodyText)
        } catch {
            return Sample(status: nil, instance: nil, latency: sent.duration(to: .now), error: "\(error)")
        }
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    var seconds: Double { milliseconds / 1000 }
}
