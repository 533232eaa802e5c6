import NIOCore
import NIOPosix
import Synchronization

/// Talks to instances over keep-alive HTTP/1.1 connections, kept idle per instance between
/// requests.
///
/// Each connection's socket is made inside the instance's network namespace
/// (`kiln_socket_in_netns`, as `kiln request` does) and handed to NIO with
/// `withConnectedSocket`: no veth, no IP address, no port on the host. Reusing connections
/// matters: making one costs two `setns` calls and a TCP handshake, a JVM's first request on a
/// new connection is slower, and a connection per request would leave thousands of sockets
/// in TIME_WAIT inside each namespace.
public final class PooledInstanceTransport: InstanceTransport {
    private struct Idle {
        var connection: HTTPConnection
        var since: ContinuousClock.Instant
    }

    /// Idle connections kept per instance; more are closed after use.
    public let maxIdlePerInstance: Int
    /// An idle connection older than this is not reused: servers close idle connections after
    /// a while (Jetty after 30 s), and a request written as the server closes would be lost.
    public let maxIdleTime: Duration
    private let idle = Mutex<[String: [Idle]]>([:])
    private let group: any EventLoopGroup
    private let executors: EventLoopExecutor.Table
    private let connect: @Sendable (GatewayInstance) throws -> NIOBSDSocket.Handle

    /// - Parameter connect: makes a connected socket to an instance; by default inside its
    ///   network namespace (tests pass a plain loopback connect).
    public init(
        maxIdlePerInstance: Int = 32, maxIdleTime: Duration = .seconds(15),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connect: (@Sendable (GatewayInstance) throws -> NIOBSDSocket.Handle)? = nil
    ) {
        self.maxIdlePerInstance = maxIdlePerInstance
        self.maxIdleTime = maxIdleTime
        self.group = group
        executors = EventLoopExecutor.Table(group)
        self.connect = connect ?? { try InstanceHTTPClient.connectedSocket(to: $0.endpoint) }
    }

    public func send(_ request: ForwardedRequest, to instance: GatewayInstance, timeout: Duration) async throws -> GatewayResponse {
        // The caller's loop when it runs on one (the public listener's requests do): the
        // exchange then stays on that thread from the client's bytes to the instance and back.
        let loop = executors.current?.eventLoop
        let connection: HTTPConnection
        if let reused = checkOut(instance.id, preferring: loop) {
            connection = reused
        } else {
            do {
                let socket = try connect(instance)
                connection = try await HTTPConnection.adopt(socket: socket, on: loop ?? group.next())
            } catch {
                throw TransportFailure.notSent("\(error)")
            }
        }
        do {
            let reply = try await connection.execute(request, timeout: timeout)
            if reply.reusable, connection.isActive {
                checkIn(connection, for: instance.id)
            } else {
                connection.close()
            }
            return reply.response
        } catch let failure as HTTPConnection.Failure {
            connection.close()
            switch failure {
            case .closedBeforeResponse(let reason): throw TransportFailure.noResponse(reason)
            case .truncated(let reason): throw TransportFailure.failed("the response was cut short: \(reason)")
            case .timedOut: throw TransportFailure.timedOut
            }
        } catch {
            connection.close()
            throw TransportFailure.failed("\(error)")
        }
    }

    /// The most recently used live idle connection on `loop` (the warmest), else on any loop
    /// when `loop` is nil; dead or stale ones are dropped on the way.
    private func checkOut(_ id: String, preferring loop: (any EventLoop)?) -> HTTPConnection? {
        let now = ContinuousClock.now
        var discarded: [HTTPConnection] = []
        defer { for connection in discarded { connection.close() } }
        return idle.withLock { table -> HTTPConnection? in
            guard var entries = table[id] else { return nil }
            defer { table[id] = entries }
            var index = entries.endIndex
            while index > entries.startIndex {
                index -= 1
                let entry = entries[index]
                guard entry.connection.isActive, entry.since.duration(to: now) < maxIdleTime else {
                    discarded.append(entries.remove(at: index).connection)
                    continue
                }
                if loop == nil || entry.connection.channel.eventLoop === loop! {
                    return entries.remove(at: index).connection
                }
            }
            return nil
        }
    }

    private func checkIn(_ connection: HTTPConnection, for id: String) {
        let kept = idle.withLock { table -> Bool in
            guard table[id, default: []].count < maxIdlePerInstance else { return false }
            table[id, default: []].append(Idle(connection: connection, since: .now))
            return true
        }
        if !kept { connection.close() }
    }

    public func forget(_ instance: GatewayInstance) {
        let dropped = idle.withLock { $0.removeValue(forKey: instance.id) } ?? []
        for entry in dropped { entry.connection.close() }
    }

    public func shutdown() {
        let dropped = idle.withLock { table in
            defer { table = [:] }
            return table.values.flatMap { $0 }
        }
        for entry in dropped { entry.connection.close() }
    }

    /// Idle connections kept now (for tests).
    public var idleConnectionCount: Int { idle.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
