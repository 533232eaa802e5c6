import HTTPTypes
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
/// loop, and each request is one task that prefers that loop (``EventLoopExecutor``): the
/// exchange with the instance (``PooledInstanceTransport`` picks a connection on the same loop)
/// never wakes another thread.
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
        gateway: Gateway, address: ListenAddress, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
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
        let executors = EventLoopExecutor.Table(group)
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
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(
                        GatewayRequestHandler(gateway: gateway, executor: executors.executor(for: channel.eventLoop), maxBodyBytes: maxBodyBytes))
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
/// the gateway answer it in a task on this channel's event loop, and writes the answer.
///
/// One request at a time: parts of a pipelined next request are queued until the current
/// response is written, and reading stops while any are queued. (NIOHTTP1's pipelining
/// handler does the same but stops reading during every request, which costs two `epoll_ctl`
/// calls per request; clients that pipeline are rare, keep-alive clients are not.)
/// On a quiesce event (graceful shutdown) an idle connection closes at once, a busy one after
/// its response.
final class GatewayRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let gateway: Gateway
    private let executor: EventLoopExecutor?
    private let maxBodyBytes: Int
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    /// A request was handed to the gateway and its response is not written yet.
    private var answering = false
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var readWithheld = false
    private var quiescing = false
    /// The client shut its side down: close once what it sent is answered.
    private var inputClosed = false

    init(gateway: Gateway, executor: EventLoopExecutor?, maxBodyBytes: Int) {
        self.gateway = gateway
        self.executor = executor
        self.maxBodyBytes = maxBodyBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if answering || !queued.isEmpty {
            queued.append(part)
        } else {
            receive(part, context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        if answering, !queued.isEmpty {
            readWithheld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            quiescing = true
            if !answering, head == nil { context.close(promise: nil) }
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            if !answering, queued.isEmpty { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func receive(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            self.head = head
            body = nil
            bodyTooLarge = false
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
            let keepAlive = head.isKeepAlive
            answering = true
            if bodyTooLarge {
                let reply = Gateway.error(.contentTooLarge, "body-too-large", "the request body exceeds \(maxBodyBytes) bytes")
                respond(reply, to: head, keepAlive: keepAlive, context: context)
                return
            }
            let request: GatewayRequest
            do {
                request = GatewayRequest(head: try Self.request(head), body: body.flatMap { $0.readableBytes > 0 ? $0 : nil })
            } catch {
                let reply = Gateway.error(.badRequest, "bad-request", "the request cannot be forwarded: \(error)")
                respond(reply, to: head, keepAlive: false, context: context)
                return
            }
            body = nil
            Self.answer(request, gateway: gateway, executor: executor, head: head, keepAlive: keepAlive, handler: NIOLoopBound((self, context), eventLoop: context.eventLoop))
        }
    }

    /// Has the gateway answer in a task that prefers this channel's loop, and responds on that
    /// loop. The task starts right here (`Task.immediate`), not as a job queued on the loop: it
    /// runs to the instance exchange before anything else does.
    private static func answer(
        _ request: GatewayRequest, gateway: Gateway, executor: EventLoopExecutor?, head: HTTPRequestHead, keepAlive: Bool,
        handler: NIOLoopBound<(GatewayRequestHandler, ChannelHandlerContext)>
    ) {
        Task.immediate(executorPreference: executor) {
            let reply = await gateway.handle(request)
            let loop = handler.eventLoop
            if loop.inEventLoop {
                let (handler, context) = handler.value
                handler.respond(reply, to: head, keepAlive: keepAlive, context: context)
            } else {
                loop.execute {
                    let (handler, context) = handler.value
                    handler.respond(reply, to: head, keepAlive: keepAlive, context: context)
                }
            }
        }
    }

    /// Writes the response; then closes the connection, or goes on with what was queued.
    private func respond(_ reply: GatewayResponse, to head: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        let keepOpen = keepAlive && !quiescing
        Self.write(reply, version: head.version, method: head.method, keepAlive: keepOpen, context: context)
        answering = false
        guard keepOpen, context.channel.isActive else { return }
        while !answering, let part = queued.popFirst() {
            receive(part, context: context)
        }
        if !answering, inputClosed {
            context.close(promise: nil)
        } else if !answering, readWithheld {
            readWithheld = false
            context.read()
        }
    }

    /// The request in HTTPTypes' terms. An origin-form target (`/path?query`, what clients send
    /// to a server that is not a proxy) is taken as is; anything else goes through
    /// NIOHTTPTypesHTTP1's general conversion (which parses it as a URL).
    static func request(_ head: HTTPRequestHead) throws -> HTTPRequest {
        guard head.uri.utf8.first == UInt8(ascii: "/") else { return try HTTPRequest(head, secure: false, splitCookie: false) }
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count)
        var authority: String?
        for (name, value) in head.headers {
            if authority == nil, name.utf8.count == 4, name.lowercased() == "host" {
                authority = value
            } else if let name = HTTPField.Name(name) {
                fields.append(HTTPField(name: name, value: value))
            }
        }
        return HTTPRequest(method: try HTTPRequest.Method(head.method), scheme: "http", authority: authority, path: head.uri, headerFields: fields)
    }

    /// Writes a whole response in one flush, with a Content-Length (which the gateway dropped
    /// from the instance's response, except for HEAD) and a Connection header when the client
    /// would otherwise assume the other way; closes the connection after it unless kept alive.
    static func write(
        _ reply: GatewayResponse, version: HTTPVersion, method: HTTPMethod, keepAlive: Bool, context: ChannelHandlerContext
    ) {
        var head = HTTPResponseHead(reply.head)
        head.version = version
        if !head.headers.contains(name: "content-length") {
            head.headers.add(name: "Content-Length", value: String(reply.body.readableBytes))
        }
        if !keepAlive, version.major == 1, version.minor >= 1 {
            head.headers.add(name: "Connection", value: "close")
        } else if keepAlive, version.major == 1, version.minor == 0 {
            head.headers.add(name: "Connection", value: "keep-alive")
        }
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if method != .HEAD, reply.body.readableBytes > 0 {
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(reply.body))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
