import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Talks to instances over keep-alive HTTP/1.1 connections, kept idle per instance between
/// requests.
///
/// Each connection's socket is made inside the instance's network namespace
/// (`kiln_socket_in_netns`, as `kiln request` does) and handed to NIO with
/// `withConnectedSocket`: no veth, no IP address, no port on the host. Reusing connections
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
        var since: ContinuousClock.Instant
    }

    /// Idle connections kept per instance; more are closed after use.
    public let maxIdlePerInstance: Int
    /// An idle connection older than this is not reused: servers close idle connections after
    /// a while (Jetty after 30 s), and a request written as the server closes would be lost.
    public let maxIdleTime: Duration
    private let idle = Mutex<[String: [Idle]]>([:])
    private let connect: @Sendable (GatewayInstance) throws -> NIOBSDSocket.Handle

    /// - Parameter connect: makes a connected socket to an instance; by default inside its
    ///   network namespace (tests pass a plain loopback connect).
    public init(
        maxIdlePerInstance: Int = 32, maxIdleTime: Duration = .seconds(15),
        connect: (@Sendable (GatewayInstance) throws -> NIOBSDSocket.Handle)? = nil
    ) {
        self.maxIdlePerInstance = maxIdlePerInstance
        self.maxIdleTime = maxIdleTime
        self.connect = connect ?? { try InstanceHTTPClient.connectedSocket(to: $0.endpoint) }
    }

    public func send(
        _ request: ForwardedRequest, to instance: GatewayInstance, timeout: Duration, on loop: any EventLoop, receiver: any ResponseReceiver
    ) -> any ResponseReading {
        loop.preconditionInEventLoop()
        let exchange = InstanceExchange(request: request, deadline: .now() + .nanoseconds(timeout.nanoseconds), receiver: receiver, loop: loop)
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
        let handler = InstanceConnectionHandler { connection in self.checkIn(connection, for: instanceID) }
        let boundHandler = NIOLoopBound(handler, eventLoop: loop)
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // The request heads are the gateway's, built from what the client's parser
                    // accepted: validating them again would only cost time.
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(enableOutboundHeaderValidation: false)
                    try channel.pipeline.syncOperations.addHandler(boundHandler.value)
                }
            }
            .withConnectedSocket(socket)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success:
                    handler.start(exchange)
                case .failure(let error):
                    // NIO did not take the socket over (as in InstanceHTTPClient.send).
                    Glibc.close(socket)
                    exchange.fail(.notSent("\(error)"))
                }
            }
        return exchange
    }

    /// The most recently used live idle connection on `loop` (the warmest); dead or stale ones
    /// are dropped on the way.
    private func checkOut(_ id: String, on loop: any EventLoop) -> InstanceConnection? {
        let now = ContinuousClock.now
        var discarded: [InstanceConnection] = []
        defer { for connection in discarded { connection.close() } }
        return idle.withLock { table -> InstanceConnection? in
            guard var entries = table[id] else { return nil }
            defer { table[id] = entries }
            var index = entries.endIndex
            while index > entries.startIndex {
                index -= 1
                let entry = entries[index]
                guard entry.connection.channel.isActive, entry.since.duration(to: now) < maxIdleTime else {
                    discarded.append(entries.remove(at: index).connection)
                    continue
                }
                if entry.connection.channel.eventLoop === loop {
                    return entries.remove(at: index).connection
                }
            }
            return nil
        }
    }

    private func checkIn(_ connection: InstanceConnection, for id: String) {
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

/// An idle connection as the pool keeps it: its channel, and its handler (touched only on the
/// channel's loop, which is the only loop it is ever checked out to).
private struct InstanceConnection: @unchecked Sendable {
    let channel: any Channel
    let handler: InstanceConnectionHandler

    func close() { channel.close(promise: nil) }
}

/// One request on its way to an instance: what to send, by when, and who hears of the
/// response. Also the flow-control handle ``InstanceTransport/send(_:to:timeout:on:receiver:)``
/// returns.
private final class InstanceExchange: ResponseReading {
    let request: ForwardedRequest
    let deadline: NIODeadline
    let receiver: any ResponseReceiver
    /// The loop of the receiver (and of the connection that carries it).
    let loop: any EventLoop
    /// The connection carrying it, while it is on one.
    var handler: InstanceConnectionHandler?
    private var finished = false

    init(request: ForwardedRequest, deadline: NIODeadline, receiver: any ResponseReceiver, loop: any EventLoop) {
        self.request = request
        self.deadline = deadline
        self.receiver = receiver
        self.loop = loop
    }

    func resume() {
        handler?.resumeReading(for: self)
    }

    /// Reports the failure (once) to the receiver.
    func fail(_ failure: TransportFailure) {
        guard !finished else { return }
        finished = true
        handler = nil
        receiver.receiveFailure(failure)
    }

    /// Reports the failure on a later turn of the loop: a receiver hears nothing before `send`
    /// has returned.
    func failSoon(_ failure: TransportFailure) {
        let bound = NIOLoopBound(self, eventLoop: loop)
        loop.execute { bound.value.fail(failure) }
    }

    func end() {
        guard !finished else { return }
        finished = true
        handler = nil
        receiver.receiveEnd()
    }
}

/// Carries one ``InstanceExchange`` at a time over an HTTP/1.1 connection: writes the request,
/// passes the response on part by part, holds reads back while the receiver cannot take more,
/// and returns the connection to the pool once a response ends with both sides keeping it alive.
private final class InstanceConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let onReusable: (InstanceConnection) -> Void
    private var context: ChannelHandlerContext?
    private var exchange: InstanceExchange?
    private var responseStarted = false
    private var requestKeepsAlive = true
    private var responseKeepsAlive = true
    private var readHeld = false
    /// At most one per connection, armed for the deadline of the exchange under way and moved
    /// on lazily when it fires early: scheduling and cancelling a timer per request would cost
    /// more than the rest of this handler.
    private var timer: Scheduled<Void>?

    init(onReusable: @escaping (InstanceConnection) -> Void) {
        self.onReusable = onReusable
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes the exchange's request (on the channel's loop).
    func start(_ exchange: InstanceExchange) {
        guard let context, context.channel.isActive, self.exchange == nil else {
            exchange.failSoon(.notSent("the connection to the instance is closed"))
            return
        }
        self.exchange = exchange
        exchange.handler = self
        responseStarted = false
        requestKeepsAlive = exchange.request.head.isKeepAlive
        if timer == nil { arm(context: context) }
        context.write(wrapOutboundOut(.head(exchange.request.head)), promise: nil)
        if let body = exchange.request.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if readHeld {
            readHeld = false
            context.read()
        }
    }

    func resumeReading(for exchange: InstanceExchange) {
        guard exchange === self.exchange, readHeld, let context else { return }
        readHeld = false
        context.read()
    }

    func read(context: ChannelHandlerContext) {
        if let exchange, !exchange.receiver.isReadyForMore {
            readHeld = true
        } else {
            context.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let exchange else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            // An interim response (100 Continue, 103 Early Hints) is not the answer.
            if head.status.code / 100 == 1, head.status != .switchingProtocols { return }
            responseStarted = true
            responseKeepsAlive = head.isKeepAlive
            exchange.receiver.receiveHead(head)
        case .body(let part):
            exchange.receiver.receiveBody(part)
        case .end:
            self.exchange = nil
            // Back to the pool before the receiver hears of the end: the next request of the
            // same client, sent from within that call, can then go out on this connection.
            if requestKeepsAlive, responseKeepsAlive, context.channel.isActive {
                onReusable(InstanceConnection(channel: context.channel, handler: self))
            } else {
                context.close(promise: nil)
            }
            exchange.end()
        }
    }

    private func arm(context: ChannelHandlerContext) {
        guard let deadline = exchange?.deadline else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            guard let exchange = handler.exchange else { return }
            if NIODeadline.now() < exchange.deadline {
                handler.arm(context: context)
            } else {
                handler.exchange = nil
                exchange.fail(.timedOut)
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(reason: "\(error)")
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(reason: "the connection closed")
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func fail(reason: String) {
        guard let exchange else { return }
        self.exchange = nil
        exchange.fail(responseStarted ? .failed("the response was cut short: \(reason)") : .noResponse(reason))
    }
}
