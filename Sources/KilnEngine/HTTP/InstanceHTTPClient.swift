import CKilnShims
import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Where a sandboxed service listens: a port on loopback inside a network namespace that has no
/// route to the host. kiln reaches it without any IP plumbing by creating the socket inside that
/// namespace (see `kiln_socket_in_netns`).
public struct ServiceEndpoint: Sendable, Equatable {
    /// A path to the namespace: a pinned netns file or /proc/PID/ns/net.
    public var networkNamespacePath: String
    public var port: Int
    /// The sandbox's address on its network (nil: loopback only). The gateway connects to it
    /// directly; kiln's own client enters the namespace either way.
    public var address: String?

    public init(networkNamespacePath: String, port: Int, address: String? = nil) {
        self.networkNamespacePath = networkNamespacePath
        self.port = port
        self.address = address
    }
}

/// An HTTP response, read whole.
public struct HTTPReply: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// A small HTTP/1.1 client over SwiftNIO for talking to one sandboxed service.
public enum InstanceHTTPClient {
    /// Why a request did not get a reply.
    public enum Failure: Error, Sendable, CustomStringConvertible {
        /// Nothing listens on the port (yet): connect(2) was refused.
        case refused
        case timedOut
        case connection(String)

        public var description: String {
            switch self {
            case .refused: "connection refused"
            case .timedOut: "timed out"
            case .connection(let reason): reason
            }
        }
    }

    /// Starts the event loop threads now, so the first request a restore times does not pay
    /// for creating them.
    public static func prepare() {
        _ = MultiThreadedEventLoopGroup.singleton.next()
    }

    /// Sends one request (`Connection: close`) and returns the whole reply.
    public static func send(
        _ method: HTTPMethod = .GET, _ path: String, to endpoint: ServiceEndpoint,
        body: [UInt8]? = nil, headers extraHeaders: [(String, String)] = [], timeout: Duration = .seconds(10)
    ) async throws -> HTTPReply {
        let channel = try await open(endpoint)
        defer { channel.close(promise: nil) }
        let request = Request(method: method, path: path, port: endpoint.port, shape: .kiln, body: body, headers: extraHeaders, closing: true)
        return try await exchange(request, on: channel, timeout: timeout).reply
    }

    /// Sends `GET` of each of `paths` in turn over keep-alive connections of at most
    /// `perConnection` requests, the last of each asking to close it, as a browser or kiln's
    /// gateway would; a new connection is opened after that, or when the service closes one.
    /// `each` sees every reply as it comes, with the shape of its request, and may throw to stop. Warm-up
    /// requests go this way: a service's keep-alive path is code a copy runs for every client
    /// that keeps its connection (the gateway does), and a snapshot warmed up only with
    /// `Connection: close` left it unrun (hello-jdk: a thawed copy's first kept-alive request
    /// took 7 ms, a closing one 1.5 ms). The requests take `shapes` in turn
    /// (``RequestShape/shape(at:of:perConnection:)``).
    public static func sendKeepingAlive(
        _ paths: some Collection<String>, to endpoint: ServiceEndpoint, perConnection: Int = .max, shapes: [RequestShape] = [.kiln],
        timeout: Duration = .seconds(10), each: (HTTPReply, RequestShape) throws -> Void
    ) async throws {
        precondition(perConnection >= 1, "a connection carries at least one request")
        var channel: Channel?
        defer { channel?.close(promise: nil) }
        for (index, path) in paths.enumerated() {
            if channel == nil { channel = try await open(endpoint) }
            let closing = index == paths.count - 1 || index % perConnection == perConnection - 1
            let shape = RequestShape.shape(at: index, of: shapes, perConnection: perConnection)
            let request = Request(method: .GET, path: path, port: endpoint.port, shape: shape, body: nil, headers: [], closing: closing)
            let (reply, reusable) = try await exchange(request, on: channel!, timeout: timeout)
            if !reusable {
                channel?.close(promise: nil)
                channel = nil
            }
            try each(reply, shape)
        }
    }

    /// A request as this client sends it.
    private struct Request: Sendable {
        var method: HTTPMethod
        var path: String
        var port: Int
        var shape: RequestShape
        var body: [UInt8]?
        var headers: [(String, String)]
        /// Whether it asks the service to close the connection after replying.
        var closing: Bool
    }

    /// A connection to the service, its pipeline ready for ``exchange(_:on:timeout:)``.
    private static func open(_ endpoint: ServiceEndpoint) async throws -> Channel {
        let socket = try connectedSocket(to: endpoint)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        do {
            return try await ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ReplyCollector())
                    }
                }
                .withConnectedSocket(socket).get()
        } catch {
            close(socket)
            throw Failure.connection("\(error)")
        }
    }

    /// One request on `channel` and its whole reply; `reusable`: whether the connection may
    /// carry another request (the service keeps it, and the request did not ask to close it).
    private static func exchange(_ request: Request, on channel: Channel, timeout: Duration) async throws -> (reply: HTTPReply, reusable: Bool) {
        let promise = channel.eventLoop.makePromise(of: CollectedReply.self)
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) {
            promise.fail(Failure.timedOut)
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        channel.eventLoop.execute {
            // A kept connection the service closed meanwhile: say so now, not at the timeout.
            guard channel.isActive else {
                promise.fail(Failure.connection("the service closed the connection before the request"))
                return
            }
            do {
                try channel.pipeline.syncOperations.handler(type: ReplyCollector.self).expect(promise, closing: request.closing)
            } catch {
                promise.fail(Failure.connection("\(error)"))
                return
            }
            var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path)
            for field in request.shape.fields(port: request.port, closing: request.closing) { head.headers.add(name: field.name, value: field.value) }
            for (name, value) in request.headers { head.headers.add(name: name, value: value) }
            if let body = request.body { head.headers.add(name: "Content-Length", value: String(body.count)) }
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body = request.body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        let collected = try await promise.futureResult.get()
        return (collected.reply, collected.reusable)
    }

    /// A blocking connect on a socket made inside the service's namespace. Loopback connects
    /// complete or are refused at once, so this never waits on the network.
    package static func connectedSocket(to endpoint: ServiceEndpoint) throws -> NIOBSDSocket.Handle {
        let fd = kiln_socket_in_netns(endpoint.networkNamespacePath, AF_INET)
        guard fd >= 0 else {
            throw Failure.connection("cannot enter network namespace \(endpoint.networkNamespacePath): \(errnoDescription(errno))")
        }
        return try connectLoopback(fd, port: endpoint.port)
    }

    /// A connected socket to the service the way the gateway reaches it: at its address on its
    /// network when it has one (no namespace switch: a plain connect through the bridge), else
    /// through its namespace's loopback (``connectedSocket(to:)``).
    package static func connectedSocket(reaching endpoint: ServiceEndpoint) throws -> NIOBSDSocket.Handle {
        guard let ip = endpoint.address else { return try connectedSocket(to: endpoint) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(endpoint.port).bigEndian)
        guard inet_pton(AF_INET, ip, &address.sin_addr) == 1 else { throw Failure.connection("'\(ip)' is not an IPv4 address") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure.connection("socket: \(errnoDescription(errno))") }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let code = errno
            close(fd)
            throw code == ECONNREFUSED ? Failure.refused : Failure.connection("connect to \(ip):\(endpoint.port): \(errnoDescription(code))")
        }
        return fd
    }

    /// Connects `fd` to 127.0.0.1:`port` (in whatever namespace the socket was made), closing it
    /// on failure. Loopback connects complete or are refused at once.
    package static func connectLoopback(_ fd: Int32, port: Int) throws -> Int32 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let code = errno
            close(fd)
            throw code == ECONNREFUSED ? Failure.refused : Failure.connection("connect to 127.0.0.1:\(port): \(errnoDescription(code))")
        }
        return fd
    }
}

/// A reply, and whether its connection may carry another request.
private struct CollectedReply: Sendable {
    var reply: HTTPReply
    var reusable: Bool
}

/// Collects the response to the request under way and completes its promise; closes the
/// connection after it when the request or the response says so.
private final class ReplyCollector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private var promise: EventLoopPromise<CollectedReply>?
    private var closing = true
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []

    /// The next response completes `promise` (on the channel's loop, before the request is written).
    func expect(_ promise: EventLoopPromise<CollectedReply>, closing: Bool) {
        self.promise = promise
        self.closing = closing
        head = nil
        body = []
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(let buffer):
            body.append(contentsOf: buffer.readableBytesView)
        case .end:
            let reusable = !closing && (head?.isKeepAlive ?? false)
            if let head {
                let reply = HTTPReply(status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) }, body: body)
                promise?.succeed(CollectedReply(reply: reply, reusable: reusable))
            }
            promise = nil
            if !reusable { context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise?.fail(InstanceHTTPClient.Failure.connection("\(error)"))
        promise = nil
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(InstanceHTTPClient.Failure.connection("the service closed the connection before replying"))
        promise = nil
        context.fireChannelInactive()
    }
}
