import HTTPTypes
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOPosix
import ServiceLifecycle

/// The public listener of `kiln serve`, in plain SwiftNIO: HTTP/1.1 in, every request handed to
/// ``Gateway/handle(_:)``, its response written back.
///
/// Why not Hummingbird, as the admin listener: this is the path every proxied request takes,
/// and on a 2-core machine its CPU comes straight out of the service's throughput. A framework
/// built for handlers (an async sequence of request parts per connection, a router, a request
/// context and a logger with a request id per request, conversions to its own types) cost
/// about as much as the proxying itself. Here a connection is one channel handler on one event
/// loop, and each request one ``GatewayExchange`` on that loop: the request goes out on a
/// connection to the instance on the same loop (``PooledInstanceTransport``), and the response
/// comes back through plain calls, without a task, an actor hop or another thread woken.
///
/// Graceful shutdown (the ServiceGroup's, on SIGTERM): stop accepting, let every request in
/// flight finish (those waiting for a restore included), close idle keep-alive connections,
/// and return once every connection is closed (NIOExtras' `ServerQuiescingHelper`, and
/// ``GatewayRequestHandler`` closing a connection after its current response).
final class PublicListener: Service, Sendable {
    private let gateway: Gateway
    private let address: ListenAddress
    private let group: any EventLoopGroup
    private let onBound: @Sendable (Int?) -> Void
    private let logger: Logger

    init(
        gateway: Gateway, address: ListenAddress, group: any EventLoopGroup,
        logger: Logger, onBound: @escaping @Sendable (Int?) -> Void
    ) {
        self.gateway = gateway
        self.address = address
        self.group = group
        self.logger = logger
        self.onBound = onBound
    }

    func run() async throws {
        let quiesce = ServerQuiescingHelper(group: group)
        let gateway = gateway
        let maxBodyBytes = gateway.configuration.maxBodyBytes
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A client may send its request and shut its side down (`printf ... | nc`): it still
            // gets the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // Responses are the instances' as NIO parsed them, or the gateway's own: validating
                    // their headers again would only cost time. Malformed requests are answered by
                    // GatewayRequestHandler (NIO's error handler would be one more stage every
                    // response part passes through).
                    // GatewayRequestHandler frames responses itself (see writeHead): NIO's
                    // encoder would otherwise look for and remove fields on every response.
                    var encoder = HTTPResponseEncoder.Configuration()
                    encoder.automaticallySetFramingHeaders = false
                    try sync.configureHTTPServerPipeline(
                        withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                        withEncoderConfiguration: encoder)
                    try sync.addHandler(GatewayRequestHandler(gateway: gateway, maxBodyBytes: maxBodyBytes))
                }
            }
            .bind(host: address.host, port: address.port).get()
        onBound(channel.localAddress?.port)
        logger.info("public listener up", metadata: ["address": "\(address.host):\(channel.localAddress?.port ?? address.port)"])

        // Until graceful shutdown; a plain cancellation ends the wait as well.
        try? await gracefulShutdown()
        let closed = group.next().makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: closed)
        try await closed.futureResult.get()
    }
}

/// One public connection: collects each request (head and body, up to the body limit), has
/// the gateway answer it (``Gateway/forward(_:body:on:responder:)``), and writes the answer as
/// it comes (this handler is the exchange's ``GatewayResponder``).
///
/// One request at a time: parts of a pipelined next request are queued until the current
/// response is written, and reading stops while any are queued. (NIOHTTP1's pipelining
/// handler does the same but stops reading during every request, which costs two `epoll_ctl`
/// calls per request; clients that pipeline are rare, keep-alive clients are not.)
/// On a quiesce event (graceful shutdown) an idle connection closes at once, a busy one after
/// its response. A client that leaves while its request waits for an instance takes it out of
/// the queue.
final class GatewayRequestHandler: ChannelDuplexHandler, RemovableChannelHandler, GatewayResponder {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// The request being answered.
    private struct Answering {
        var id: Int
        var version: HTTPVersion
        var method: HTTPMethod
        var keepAlive: Bool
        var exchange: GatewayExchange?
        var headWritten = false
        /// Decided with the response head: whether the connection stays open after it.
        var keepOpen = false
    }

    private let gateway: Gateway
    private let maxBodyBytes: Int
    private var context: ChannelHandlerContext?
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    private var answering: Answering?
    private var requestCount = 0
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var readWithheld = false
    private var quiescing = false
    /// The client shut its side down: close once what it sent is answered.
    private var inputClosed = false

    init(gateway: Gateway, maxBodyBytes: Int) {
        self.gateway = gateway
        self.maxBodyBytes = maxBodyBytes
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if answering != nil || !queued.isEmpty {
            queued.append(part)
        } else {
            receive(part, context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        if answering != nil, !queued.isEmpty {
            readWithheld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            quiescing = true
            if answering == nil, head == nil { context.close(promise: nil) }
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            if answering == nil, queued.isEmpty { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { answering?.exchange?.resume() }
        context.fireChannelWritabilityChanged()
    }

    /// A request NIO's parser refused (a malformed head, a body with two lengths) ends the
    /// connection: its bytes can no longer be trusted to say where the next request starts. It
    /// gets a 400 first, unless a response is already on its way.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError, answering?.headWritten != true {
            answering?.exchange?.cancel()
            answering = Answering(id: -1, version: .http1_1, method: .GET, keepAlive: false)
            respond(Gateway.error(.badRequest, .badRequest, "the request is not valid HTTP/1.1: \(error)"))
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        answering?.exchange?.cancel()
        answering = nil
        queued.removeAll()
        context.fireChannelInactive()
    }

    private func receive(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            self.head = head
            body = nil
            bodyTooLarge = head.headers.first(name: "content-length").flatMap(Int.init).map { $0 > maxBodyBytes } ?? false
            // A client that asks first (curl does for bodies over 1 KiB) is told to go on at once
            // rather than after its own timeout; one whose body is too large is not, and gets
            // its 413 once the request is over.
            if head.version.major == 1, head.version.minor >= 1, !bodyTooLarge,
                head.headers.first(name: "expect")?.equalsIgnoringASCIICase("100-continue") == true
            {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(var chunk):
            guard !bodyTooLarge else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodyBytes {
                // Read on to the end of the request (the connection stays usable), keep nothing.
                bodyTooLarge = true
                body = nil
            } else if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            requestCount += 1
            let id = requestCount
            answering = Answering(id: id, version: head.version, method: head.method, keepAlive: head.isKeepAlive)
            if bodyTooLarge {
                respond(Gateway.error(.contentTooLarge, .bodyTooLarge, "the request body exceeds \(maxBodyBytes) bytes"))
                return
            }
            let body = self.body.flatMap { $0.readableBytes > 0 ? $0 : nil }
            self.body = nil
            let exchange = gateway.forward(consume head, body: body, on: context.eventLoop, responder: self)
            // Unless the gateway answered at once (and this is a later request by now).
            if answering?.id == id { answering?.exchange = exchange }
        }
    }

    // MARK: GatewayResponder

    var isWritable: Bool { context?.channel.isWritable ?? true }

    /// Writes the head in the client's HTTP version and frames the body for it (NIO's encoder does
    /// not, here): a body of known length has its Content-Length; one of unknown length (streamed
    /// from the instance) goes in chunks to an HTTP/1.1 client and, to an HTTP/1.0 one, ends with
    /// the connection; HEAD, 1xx, 204 and 304 responses have none.
    func writeHead(_ head: consuming HTTPResponseHead) {
        guard let context, var answering else { return }
        var head = head
        if head.version != answering.version { head.version = answering.version }
        let hasBody = answering.method != .HEAD && head.status.mayHaveResponseBody
        var delimited = true
        if hasBody, !head.headers.contains(name: "content-length") {
            if answering.version.minor >= 1 {
                head.headers.add(name: "Transfer-Encoding", value: "chunked")
            } else {
                delimited = false
            }
        }
        answering.keepOpen = answering.keepAlive && !quiescing && delimited
        if !answering.keepOpen, answering.version.major == 1, answering.version.minor >= 1 {
            head.headers.add(name: "Connection", value: "close")
        } else if answering.keepOpen, answering.version.major == 1, answering.version.minor == 0 {
            head.headers.add(name: "Connection", value: "keep-alive")
        }
        answering.headWritten = true
        self.answering = answering
        context.write(wrapOutboundOut(.head(head)), promise: nil)
    }

    func writeBody(_ part: ByteBuffer) {
        context?.write(wrapOutboundOut(.body(.byteBuffer(part))), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    /// Ends the response; then closes the connection, or goes on with what was queued.
    func writeEnd() {
        guard let context, let answering else { return }
        self.answering = nil
        guard answering.keepOpen, context.channel.isActive else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        while self.answering == nil, let part = queued.popFirst() {
            receive(part, context: context)
        }
        if self.answering == nil, inputClosed {
            context.close(promise: nil)
        } else if self.answering == nil, readWithheld {
            readWithheld = false
            context.read()
        }
    }

    func abort() {
        answering = nil
        context?.close(promise: nil)
    }
}
