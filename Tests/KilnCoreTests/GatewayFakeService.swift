import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

@testable import KilnGateway
@testable import KilnSystem

/// A stand-in for a function's service on loopback, answering by path:
///
/// | path | answer |
/// |---|---|
/// | `/echo` | JSON: method, uri, headers (`[[name, value]]`), body |
/// | `/chunked` | `hello, chunks` in two chunks, no length |
/// | `/big?n=N`, `/big-chunked?n=N` | N bytes of ``pattern(_:)``, with a length or in chunks |
/// | `/head` | Content-Length 1234 and no body |
/// | `/no-content` | 204 |
/// | `/close` | `bye`, then closes the connection |
/// | `/silent` | nothing, ever |
/// | `/cut`, `/cut-big` | a head promising 100 bytes (1 MiB), a tenth of them, then a close |
/// | `/hold` | `held` once ``release()`` is called |
/// | `/huge?n=N` | N bytes without a length, written only while the connection takes them |
final class FakeService: Sendable {
    private struct State {
        var connections = 0
        var requests = 0
        /// Each request's header fields, in order.
        var headers: [[(String, String)]] = []
        var held: [@Sendable () -> Void] = []
        var released = false
        var gateway: Gateway?
        var bytesWritten = 0
    }

    let port: Int
    private let channel: any Channel
    private let state: Mutex<State>

    private init(channel: any Channel) {
        self.channel = channel
        port = channel.localAddress!.port!
        state = Mutex(State())
    }

    static func start() async throws -> FakeService {
        let box = StateBox()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                box.service?.state.withLock { $0.connections += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false)
                    try channel.pipeline.syncOperations.addHandler(FakeServiceHandler(box: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let service = FakeService(channel: channel)
        box.service = service
        return service
    }

    var connections: Int { state.withLock { $0.connections } }
    var requests: Int { state.withLock { $0.requests } }
    /// The header fields of every request so far, in the order they came.
    var requestHeaders: [[(String, String)]] { state.withLock { $0.headers } }
    var held: Int { state.withLock { $0.held.count } }
    /// The gateway in front (for tests that look at its queue).
    var gateway: Gateway? {
        get { state.withLock { $0.gateway } }
        set { state.withLock { $0.gateway = newValue } }
    }

    fileprivate func counted(_ head: HTTPRequestHead) {
        state.withLock {
            $0.requests += 1
            $0.headers.append(head.headers.map { ($0.name, $0.value) })
        }
    }

    /// Body bytes handed to the kernel for `/huge` so far.
    var bytesWritten: Int { state.withLock { $0.bytesWritten } }
    fileprivate func wrote(_ count: Int) { state.withLock { $0.bytesWritten += count } }

    /// Holds `answer` until ``release()`` (at once if it was).
    fileprivate func hold(_ answer: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            if state.released { return true }
            state.held.append(answer)
            return false
        }
        if now { answer() }
    }

    /// Answers every held request, and those to come at once.
    func release() {
        let answers = state.withLock { state in
            state.released = true
            defer { state.held = [] }
            return state.held
        }
        for answer in answers { answer() }
    }

    func stop() async {
        try? await channel.close()
    }

    /// `n` bytes of a repeating, position-dependent text (a shifted or lost byte shows).
    static func pattern(_ n: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
        return String(decoding: (0..<n).map { alphabet[($0 + $0 / alphabet.count) % alphabet.count] }, as: UTF8.self)
    }
}

final class StateBox: @unchecked Sendable {
    // Set once, before the first connection is accepted.
    var service: FakeService?
}

final class FakeServiceHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let box: StateBox
    private var head: HTTPRequestHead?
    private var body = ""
    /// What `/huge` still has to write.
    private var hugeLeft = 0
    private var writingHuge = false

    init(box: StateBox) {
        self.box = box
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = ""
        case .body(let part):
            body += String(buffer: part)
        case .end:
            guard let head else { return }
            box.service?.counted(head)
            answer(head, context: context)
        }
    }

    private func answer(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = String(request.uri.prefix { $0 != "?" })
        let n = request.uri.split(separator: "n=").last.flatMap { Int($0) } ?? 0
        switch path {
        case "/echo":
            let document: [String: Any] = [
                "method": request.method.rawValue, "uri": request.uri, "headers": request.headers.map { [$0.name, $0.value] }, "body": body,
            ]
            respond(context, .ok, body: String(decoding: try! JSONSerialization.data(withJSONObject: document), as: UTF8.self))
        case "/chunked":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "hello, ")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "chunks")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/big", "/big-chunked":
            let headers: HTTPHeaders = path == "/big" ? ["Content-Length": String(n)] : [:]
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            let content = Array(FakeService.pattern(n).utf8)
            for start in stride(from: 0, to: n, by: 16 << 10) {
                context.writeAndFlush(
                    wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: content[start..<min(n, start + (16 << 10))])))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/head":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "1234"]))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/localhost-only":
            // A service that checks its Host: only `localhost` names, with a port or without.
            let host = request.headers.first(name: "Host") ?? ""
            respond(context, host.hasPrefix("localhost") ? .ok : .badRequest, body: host.hasPrefix("localhost") ? "ok" : "unknown host \(host)")
        case "/no-content":
            respond(context, .noContent, body: "")
        case "/close":
            let channel = context.channel
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "3", "Connection": "close"]))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "bye")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        case "/cut", "/cut-big":
            let promised = path == "/cut" ? 100 : 1 << 20
            let channel = context.channel
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": String(promised)]))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "x"), count: promised / 10)))))
                .whenComplete { _ in channel.close(promise: nil) }
        case "/hold":
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let loop = context.eventLoop
            box.service?.hold {
                loop.execute {
                    let (handler, context) = bound.value
                    handler.respond(context, .ok, body: "held")
                }
            }
        case "/huge":
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
            hugeLeft = n
            writeHuge(context)
        case "/silent":
            break
        default:
            respond(context, .notFound, body: "no such path")
        }
    }

    /// Writes `/huge`'s body while the connection takes it (NIO's writability), the way a server
    /// that respects back-pressure does.
    private func writeHuge(_ context: ChannelHandlerContext) {
        // A flush can make the channel writable again, and NIO says so from within the write:
        // the loop below is already running then.
        guard !writingHuge else { return }
        writingHuge = true
        defer { writingHuge = false }
        let part = ByteBuffer(repeating: UInt8(ascii: "h"), count: 64 << 10)
        while hugeLeft > 0, context.channel.isWritable {
            let count = min(hugeLeft, part.readableBytes)
            hugeLeft -= count
            box.service?.wrote(count)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(part.getSlice(at: 0, length: count)!))), promise: nil)
            if hugeLeft == 0 { context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil) }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, hugeLeft > 0 { writeHuge(context) }
        context.fireChannelWritabilityChanged()
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, body: String) {
        var headers = HTTPHeaders()
        if status != .noContent { headers.add(name: "Content-Length", value: String(body.utf8.count)) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
