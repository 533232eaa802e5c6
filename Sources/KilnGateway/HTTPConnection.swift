import HTTPTypes
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import NIOCore
import NIOHTTP1
import NIOPosix

/// One keep-alive HTTP/1.1 client connection for tools and tests (``KeepAliveClient``, the
/// benchmarks' first requests): `async`, one request at a time, each response read whole.
///
/// It is the gateway's own connection to instances (``InstanceConnection``) with a collector as
/// the receiver, so tests that drive it exercise the same client code.
package final class HTTPConnection: Sendable {
    package struct Reply: Sendable {
        package var response: GatewayResponse
        /// Both sides allow another request on this connection.
        package var reusable: Bool
    }

    private let connection: InstanceConnection

    private init(_ connection: InstanceConnection) {
        self.connection = connection
    }

    var channel: any Channel { connection.channel }
    package var isActive: Bool { connection.channel.isActive }

    /// Wraps an already connected socket; it is closed if that fails.
    package static func adopt(socket: NIOBSDSocket.Handle, on loop: any EventLoop) async throws -> HTTPConnection {
        HTTPConnection(try await InstanceConnection.open(socket: socket, on: loop, onReusable: { _ in }).get())
    }

    /// Sends a request and reads its whole response, or fails with a ``TransportFailure``
    /// (``TransportFailure/notSent(_:)`` when the connection was already closed).
    package func execute(_ request: ForwardedRequest, timeout: Duration) async throws -> Reply {
        let connection = connection
        let deadline = NIODeadline.now() + .nanoseconds(timeout.nanoseconds)
        return try await withUnsafeThrowingContinuation { continuation in
            let loop = connection.channel.eventLoop
            let start: @Sendable () -> Void = {
                let collector = ReplyCollector(continuation, channel: connection.channel)
                connection.handler.start(UpstreamExchange(request: request, deadline: deadline, receiver: collector, loop: loop))
            }
            if loop.inEventLoop { start() } else { loop.execute(start) }
        }
    }

    package func close() {
        connection.close()
    }
}

/// Gathers one response and resumes its caller with it.
private final class ReplyCollector: ResponseReceiver {
    private let continuation: UnsafeContinuation<HTTPConnection.Reply, any Error>
    private let channel: any Channel
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()

    init(_ continuation: UnsafeContinuation<HTTPConnection.Reply, any Error>, channel: any Channel) {
        self.continuation = continuation
        self.channel = channel
    }

    var isReadyForMore: Bool { true }

    func receiveHead(_ head: HTTPResponseHead) { self.head = head }

    func receiveBody(_ part: ByteBuffer) { body.writeImmutableBuffer(part) }

    func receiveEnd() {
        guard let head else { return continuation.resume(throwing: TransportFailure.failed("a response without a head")) }
        // The connection handler has closed the channel by now if either side ended it.
        continuation.resume(returning: HTTPConnection.Reply(response: GatewayResponse(head, body: body), reusable: channel.isActive))
    }

    func receiveFailure(_ failure: TransportFailure) {
        continuation.resume(throwing: failure)
    }
}
