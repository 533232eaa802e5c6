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
    ///
    /// Called from a task that runs on this connection's event loop (the gateway's requests
    /// are), the exchange costs no thread hop at all: the request is written at once and the
    /// continuation resumed from the read that completes the response.
    func execute(_ request: ForwardedRequest, timeout: Duration) async throws -> Reply {
        let nanoseconds = timeout.nanoseconds
        return try await withUnsafeThrowingContinuation { continuation in
            let exchange = Exchange(request: request, deadline: .now() + .nanoseconds(nanoseconds), continuation: continuation)
            let channel = channel
            if channel.eventLoop.inEventLoop {
                Self.start(exchange, on: channel)
            } else {
                channel.eventLoop.execute { Self.start(exchange, on: channel) }
            }
        }
    }

    /// On the channel's loop: a write to a closed channel would never reach the handler (and
    /// so never answer), hence the check first.
    private static func start(_ exchange: Exchange, on channel: any Channel) {
        guard channel.isActive else {
            exchange.continuation.resume(throwing: Failure.closedBeforeResponse("the connection is closed"))
            return
        }
        channel.writeAndFlush(exchange, promise: nil)
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// A request, when it must be answered by, and who waits for the answer: written into the
/// pipeline as one message. The handler resumes `continuation` exactly once.
private struct Exchange: Sendable {
    var request: ForwardedRequest
    var deadline: NIODeadline
    var continuation: UnsafeContinuation<HTTPConnection.Reply, any Error>
}

/// Writes an ``Exchange``'s request as NIOHTTP1 parts and completes its promise with the
/// response that comes back. Lives on the channel's event loop.
private final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Exchange
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: UnsafeContinuation<HTTPConnection.Reply, any Error>?
    private var deadline = NIODeadline.distantFuture
    /// At most one per connection, armed for the deadline of the exchange under way and moved
    /// on lazily when it fires early: scheduling and cancelling a timer per request would cost
    /// more than the rest of this handler.
    private var timer: Scheduled<Void>?
    private var requestKeepsAlive = true
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = unwrapOutboundIn(data)
        guard pending == nil else {
            exchange.continuation.resume(throwing: HTTPConnection.Failure.closedBeforeResponse("the connection is busy with another request"))
            return
        }
        let head = exchange.request.head
        pending = exchange.continuation
        deadline = exchange.deadline
        if timer == nil { arm(context: context) }
        requestKeepsAlive = head.isKeepAlive
        self.head = nil
        body = nil
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = exchange.request.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    private func arm(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            guard handler.pending != nil else { return }
            if NIODeadline.now() < handler.deadline {
                handler.arm(context: context)
            } else {
                handler.finish(.failure(HTTPConnection.Failure.timedOut))
                context.close(promise: nil)
            }
        }
    }

    private func finish(_ result: Result<HTTPConnection.Reply, any Error>) {
        guard let continuation = pending else { return }
        pending = nil
        continuation.resume(with: result)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(var chunk):
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end:
            guard pending != nil, let head else { return }
            let body = self.body ?? ByteBuffer()
            self.head = nil
            self.body = nil
            do {
                let response = try Self.response(head)
                finish(.success(HTTPConnection.Reply(response: GatewayResponse(head: response, body: body), reusable: head.isKeepAlive && requestKeepsAlive)))
            } catch {
                finish(.failure(HTTPConnection.Failure.truncated("malformed response: \(error)")))
                context.close(promise: nil)
            }
        }
    }

    /// The response head in HTTPTypes' terms. (NIOHTTPTypesHTTP1's conversion lowercases every
    /// header name to look for a `Host`, which a response has no use for; this runs per request.)
    private static func response(_ head: HTTPResponseHead) throws -> HTTPResponse {
        guard head.status.code <= 999 else { throw HTTP1TypeConversionError.invalidStatusCode }
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count)
        for (name, value) in head.headers {
            if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
        }
        return HTTPResponse(status: .init(code: Int(head.status.code), reasonPhrase: head.status.reasonPhrase), headerFields: fields)
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
        finish(.failure(head == nil ? HTTPConnection.Failure.closedBeforeResponse(reason) : HTTPConnection.Failure.truncated(reason)))
    }
}
