import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import NIOCore
import NIOPosix
import Synchronization

/// Talks to instances over keep-alive HTTP/1.1 connections, kept idle per instance between
/// requests.
///
/// An instance on a network (`--network kiln`) is reached at its address through the bridge:
/// a plain connect, no namespace switch. A loopback-only instance (`--network none`) is reached
/// through its namespace: the socket is made inside it (`kiln_socket_in_netns`, as `kiln
/// request` does) and handed to NIO with `withConnectedSocket`. Reusing connections
/// matters: making one costs two `setns` calls and a TCP handshake, a JVM's first request on a
/// new connection is slower, and a connection per request would leave thousands of sockets
/// in TIME_WAIT inside each namespace.
///
/// A request only ever goes out on a connection of the event loop it comes from (its client's):
/// the request, the response and the connection's return to the pool then happen on one thread,
/// as plain calls, with nothing to wake.
public final class PooledInstanceTransport: InstanceTransport {
    private struct Idle {
        var connection: InstanceConnection
        /// Since when the service has had it idle; nil for a connection made ahead to a frozen
        /// instance (``connectAhead(to:on:)``), which the service has not accepted yet and so
        /// cannot time out: its clock starts when the instance takes its first request.
        var since: ContinuousClock.Instant?
    }

    /// Idle connections kept per instance; more are closed after use.
    public let maxIdlePerInstance: Int
    /// An idle connection older than this is not reused: servers close idle connections after
    /// a while (Jetty after 30 s), and a request written as the server closes would be lost.
    public let maxIdleTime: Duration
    private let idle = Mutex<[String: [Idle]]>([:])
    private let connect: @Sendable (GatewayInstance) throws -> NIOBSDSocket.Handle

    /// - Parameter connect: makes a connected socket to an instance; by default at its address,
    ///   or inside its network namespace if it has none (tests pass a plain loopback connect).
    public init(
        maxIdlePerInstance: Int = 32, maxIdleTime: Duration = .seconds(15),
        connect: (@Sendable (GatewayInstance) throws -> NIOBSDSocket.Handle)? = nil
    ) {
        self.maxIdlePerInstance = maxIdlePerInstance
        self.maxIdleTime = maxIdleTime
        self.connect = connect ?? { try InstanceHTTPClient.connectedSocket(reaching: $0.endpoint) }
    }

    public func send(
        _ request: ForwardedRequest, to instance: GatewayInstance, timeout: Duration, on loop: any EventLoop, receiver: any ResponseReceiver
    ) -> any ResponseReading {
        loop.preconditionInEventLoop()
        let exchange = UpstreamExchange(request: request, deadline: .now() + .nanoseconds(timeout.nanoseconds), receiver: receiver, loop: loop)
        if let connection = checkOut(instance.id, on: loop) {
            connection.handler.start(exchange)
            return exchange
        }
        let socket: NIOBSDSocket.Handle
        do {
            socket = try connect(instance)
        } catch {
            exchange.failSoon(.notSent("\(error)"))
            return exchange
        }
        let instanceID = instance.id
        // A strong reference (no weak one: that would give every handler a side table, and
        // each retain of it a slower path): an idle connection refers to the transport that
        // keeps it, a cycle that `forget` and `shutdown` break.
        InstanceConnection.open(socket: socket, on: loop) { connection in self.checkIn(connection, for: instanceID) }
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let connection): connection.handler.start(exchange)
                case .failure(let error): exchange.fail(.notSent("\(error)"))
                }
            }
        return exchange
    }

    /// Connects to a frozen instance ahead of its first request, one connection per loop, and
    /// keeps them idle. A request at zero then finds its connection made: no namespace switch,
    /// no handshake and no new channel between the thaw and the request (and Tomcat's acceptor
    /// takes the connection as the copy wakes, while the request is already queued on it).
    /// Failures are left to the first request, which connects as usual.
    public func connectAhead(to instance: GatewayInstance, on loops: [any EventLoop]) {
        let instanceID = instance.id
        for loop in loops {
            guard let socket = try? connect(instance) else { return }
            InstanceConnection.open(socket: socket, on: loop) { connection in self.checkIn(connection, for: instanceID) }
                .whenSuccess { connection in self.checkIn(connection, for: instanceID, idleSince: nil) }
        }
    }

    /// The most recently used live idle connection on `loop` (the warmest); dead or stale ones
    /// are dropped on the way. Taking one made ahead wakes its instance: its other connections
    /// made ahead start their idle clocks now.
    private func checkOut(_ id: String, on loop: any EventLoop) -> InstanceConnection? {
        let now = ContinuousClock.now
        var discarded: [InstanceConnection] = []
        defer { for connection in discarded { connection.close() } }
        return idle.withLock { table -> InstanceConnection? in
            guard table[id] != nil else { return nil }
            // Changed where it is in the table (`table[id]!`), not copied out and back.
            var index = table[id]!.endIndex
            while index > 0 {
                index -= 1
                let entry = table[id]![index]
                guard entry.connection.channel.isActive, entry.since.map({ $0.duration(to: now) < maxIdleTime }) ?? true else {
                    discarded.append(table[id]!.remove(at: index).connection)
                    continue
                }
                if entry.connection.channel.eventLoop === loop {
                    // The first connection taken from a frozen instance is one made ahead (one
                    // waits on every loop): only then do the others need their clocks started.
                    if entry.since == nil {
                        for other in table[id]!.indices where table[id]![other].since == nil { table[id]![other].since = now }
                    }
                    return table[id]!.remove(at: index).connection
                }
            }
            return nil
        }
    }

    /// Keeps an idle connection: idle since now, or (`idleSince` nil) made ahead and not
    /// accepted yet. A connection made ahead to an instance that went away before it was kept
    /// here would stay for good (no request looks for it, and ``forget(_:)`` has run): each
    /// such check-in first sweeps out every closed connection.
    private func checkIn(_ connection: InstanceConnection, for id: String, idleSince since: ContinuousClock.Instant? = .now) {
        let kept = idle.withLock { table -> Bool in
            if since == nil {
                for key in table.keys { table[key]!.removeAll { !$0.connection.channel.isActive } }
                table = table.filter { !$0.value.isEmpty }
            }
            guard table[id, default: []].count < maxIdlePerInstance else { return false }
            table[id, default: []].append(Idle(connection: connection, since: since))
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
