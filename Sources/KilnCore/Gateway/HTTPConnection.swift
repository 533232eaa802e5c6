import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// One keep-alive HTTP/1.1 client connection over a socket made elsewhere (inside a service's
/// network namespace, or a plain loopback one), carrying one request at a time.
///
/// NIOHTTP1 does the parsing and framing; this only pairs each request with its response and
/// says whether the connection can be used again.
final class HTTPConnection: Sendable {
    /// Why an exchange failed, and whether the request can have reached the server.
    enum Failure: Error, Sendable {
        /// The connection closed (or broke) before any byte of a response head arrived.
        case closedBeforeResponse(String)
        /// The response was cut short after its head.
        case truncated(String)
        case timedOut
    }

    struct Reply: Sendable {
        var response: GatewayResponse
        /// Both sides allow another request on this connection.
        var reusable: Bool
    }

    let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Wraps an already connected socket; it is closed if that fails.
    static func adopt(socket: NIOBSDSocket.Handle, on loop: any EventLoop) async throws -> HTTPConnection {
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ExchangeHandler())
                    }
                }
                .withConnectedSocket(socket).get()
        } catch {
            // NIO did not take the socket over (as in InstanceHTTPClient.send).
            Glibc.close(socket)
            throw error
        }
        return HTTPConnection(channel: channel)
    }

    var isActive: Bool { channel.isActive }

    /// Sends a request and reads its whole response, or fails with ``Failure``.
    func execute(_ request: ForwardedRequest, timeout: Duration) async throws -> Reply {
        let promise = channel.eventLoop.makePromise(of: Reply.self)
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) { [channel] in
            promise.fail(Failure.timedOut)
            channel.close(promise: nil)
        }
        // A pooled connection can close (its instance killed) just before it is reused: then the
        // write fails and no response will ever come, so the exchange fails at once instead of
        // waiting out the timeout. Nothing was sent, so the caller may retry elsewhere.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in promise.fail(Failure.closedBeforeResponse("the request could not be written: \(error)")) }
        channel.writeAndFlush(Exchange(request: request, promise: promise), promise: written)
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// A request and the promise of its response, written into the pipeline as one message.
private struct Exchange: Sendable {
    var request: ForwardedRequest
    var promise: EventLoopPromise<HTTPConnection.Reply>
}

/// Writes an ``Exchange``'s request as NIOHTTP1 parts and completes its promise with the
/// response that comes back. Lives on the channel's event loop.
private final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Exchange
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: EventLoopPromise<HTTPConnection.Reply>?
    private var requestKeepsAlive = true
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = unwrapOutboundIn(data)
        guard pending == nil else {
            let failure = HTTPConnection.Failure.closedBeforeResponse("the connection is busy with another request")
            exchange.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        let head: HTTPRequestHead
        do {
            head = try HTTPRequestHead(exchange.request.head)
        } catch {
            let failure = HTTPConnection.Failure.closedBeforeResponse("cannot encode the request: \(error)")
            exchange.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        pending = exchange.promise
        requestKeepsAlive = head.isKeepAlive
        self.head = nil
        body = nil
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = exchange.request.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(var chunk):
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end:
            guard let promise = pending, let head else { return }
            pending = nil
            do {
                let response = try HTTPResponse(head)
                let reply = HTTPConnection.Reply(
                    response: GatewayResponse(head: response, body: body ?? ByteBuffer()), reusable: head.isKeepAlive && requestKeepsAlive)
                promise.succeed(reply)
            } catch {
                promise.fail(HTTPConnection.Failure.truncated("malformed response: \(error)"))
                context.close(promise: nil)
            }
            self.head = nil
            body = nil
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(reason: "\(error)")
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(reason: "the connection closed")
        context.fireChannelInactive()
    }

    private func fail(reason: String) {
        guard let promise = pending else { return }
        pending = nil
        promise.fail(head == nil ? HTTPConnection.Failure.closedBeforeResponse(reason) : HTTPConnection.Failure.truncated(reason))
    }
}
