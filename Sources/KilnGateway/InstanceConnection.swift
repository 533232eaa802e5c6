import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A keep-alive HTTP/1.1 client connection over a socket made elsewhere (inside an instance's
/// network namespace, or a plain loopback one), and its handler: the gateway's connections to
/// instances (``PooledInstanceTransport``) and the one-request-at-a-time client of tools and
/// tests (``HTTPConnection``) are both this.
struct InstanceConnection: @unchecked Sendable {
    let channel: any Channel
    /// Touched only on the channel's loop (the only loop a connection is ever used from).
    let handler: InstanceConnectionHandler

    /// Wraps a connected socket in a channel on `loop`; the socket is closed if that fails.
    /// `onReusable` is called (on `loop`) each time a response ends with the connection fit for
    /// another request.
    static func open(
        socket: NIOBSDSocket.Handle, on loop: any EventLoop, onReusable: @escaping @Sendable (InstanceConnection) -> Void
    ) -> EventLoopFuture<InstanceConnection> {
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // The request heads are the gateway's, built from what the client's parser
                    // accepted, with their framing (a Content-Length for any body) set: validating
                    // or re-framing them would only cost time (and copies of their fields).
                    var encoder = HTTPRequestEncoder.Configuration()
                    encoder.automaticallySetFramingHeaders = false
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(enableOutboundHeaderValidation: false, encoderConfiguration: encoder)
                    try channel.pipeline.syncOperations.addHandler(InstanceConnectionHandler(onReusable: onReusable))
                }
            }
            .withConnectedSocket(socket)
            .flatMapErrorThrowing { error in
                // NIO did not take the socket over.
                Glibc.close(socket)
                throw error
            }
            .flatMapThrowing { channel in
                InstanceConnection(channel: channel, handler: try channel.pipeline.syncOperations.handler(type: InstanceConnectionHandler.self))
            }
    }

    func close() { channel.close(promise: nil) }
}

/// One request on its way to an instance: what to send, by when, and who hears of the
/// response. Also the flow-control handle ``InstanceTransport/send(_:to:timeout:on:receiver:)``
/// returns.
final class UpstreamExchange: ResponseReading {
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

/// Carries one ``UpstreamExchange`` at a time over an HTTP/1.1 connection: writes the request,
/// passes the response on part by part, holds reads back while the receiver cannot take more,
/// and hands the connection back (`onReusable`) once a response ends with both sides keeping it
/// alive.
final class InstanceConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let onReusable: @Sendable (InstanceConnection) -> Void
    private var context: ChannelHandlerContext?
    private var exchange: UpstreamExchange?
    private var responseStarted = false
    private var requestKeepsAlive = true
    private var responseKeepsAlive = true
    private var readHeld = false
    /// At most one per connection, armed for the deadline of the exchange under way and moved
    /// on lazily when it fires early: scheduling and cancelling a timer per request would cost
    /// more than the rest of this handler.
    private var timer: Scheduled<Void>?

    init(onReusable: @escaping @Sendable (InstanceConnection) -> Void) {
        self.onReusable = onReusable
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes the exchange's request (on the channel's loop).
    func start(_ exchange: UpstreamExchange) {
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

    func resumeReading(for exchange: UpstreamExchange) {
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
