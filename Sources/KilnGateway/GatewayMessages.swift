import Foundation
import HTTPTypes
import KilnSystem
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// A whole request, as tests and tools hand one to ``Gateway/handle(_:)``.
public struct GatewayRequest: Sendable {
    /// Method, request target (`/hello/greet?x=1`), Host (`authority`) and headers.
    public var head: HTTPRequest
    public var body: ByteBuffer?

    public init(head: HTTPRequest, body: ByteBuffer?) {
        self.head = head
        self.body = body
    }

    /// A request with no body, e.g. `GatewayRequest(.get, "/hello/greet")`.
    public init(_ method: HTTPRequest.Method, _ target: String, host: String? = nil, body: ByteBuffer? = nil) {
        self.init(head: HTTPRequest(method: method, scheme: nil, authority: host, path: target), body: body)
    }
}

/// A whole HTTP response: an instance's, or the gateway's own (errors).
public struct GatewayResponse: Sendable {
    public var head: HTTPResponse
    public var body: ByteBuffer

    public init(head: HTTPResponse, body: ByteBuffer) {
        self.head = head
        self.body = body
    }

    public var status: HTTPResponse.Status { head.status }
    public var bodyText: String { String(buffer: body) }

    /// A response as NIOHTTP1 parsed it, in HTTPTypes' terms.
    init(_ head: HTTPResponseHead, body: ByteBuffer) {
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count)
        for (name, value) in head.headers {
            if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
        }
        self.init(
            head: HTTPResponse(status: .init(code: Int(head.status.code), reasonPhrase: head.status.reasonPhrase), headerFields: fields), body: body)
    }

    /// The head in NIOHTTP1's terms, with the body's length.
    var nioHead: HTTPResponseHead {
        var head = HTTPResponseHead(head)
        head.headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        return head
    }
}

// The gateway's own answers.
extension Gateway {
    /// The answer to a request that got no instance, and how it ended (for the metrics).
    static func response(for failure: GatewayFailure, function: String) -> (GatewayResponse, GatewayMetrics.Outcome) {
        let outcome: GatewayMetrics.Outcome
        let hint: String?
        switch failure {
        case .queueFull:
            (outcome, hint) = (.queueFull, "retry later, or raise the function's max instances")
        case .queueTimeout:
            (outcome, hint) = (.queueTimeout, "retry later, or raise the function's max instances")
        case .snapshotUnusable, .launchFailed:
            (outcome, hint) = (.unavailable, "see the gateway's log; the admin API's /functions/\(function) shows its state")
        case .shuttingDown:
            (outcome, hint) = (.shuttingDown, nil)
        }
        return (error(.serviceUnavailable, failure.code, failure.description, function: function, hint: hint), outcome)
    }

    /// A JSON error in the shape of the CLI's `--json` errors: `{"error": {"code", "message", ...}}`.
    static func error(
        _ status: HTTPResponse.Status, _ code: KilnError.Code, _ message: String, function: String? = nil, instance: String? = nil,
        hint: String? = nil
    ) -> GatewayResponse {
        struct Document: Encodable {
            struct Body: Encodable {
                var code: String
                var message: String
                var function: String?
                var instance: String?
                var hint: String?
            }
            var error: Body
        }
        let data =
            (try? KilnJSON.compactEncoder().encode(
                Document(error: .init(code: code.rawValue, message: message, function: function, instance: instance, hint: hint)))) ?? Data()
        var fields = HTTPFields()
        fields[.contentType] = "application/json"
        if let instance { fields[instanceHeader] = instance }
        return GatewayResponse(head: HTTPResponse(status: status, headerFields: fields), body: ByteBuffer(bytes: data))
    }
}

/// Collects a response for ``Gateway/handle(_:)``.
final class ResponseCollector: GatewayResponder {
    private var continuation: CheckedContinuation<GatewayResponse, Never>?
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()

    init(_ continuation: CheckedContinuation<GatewayResponse, Never>) {
        self.continuation = continuation
    }

    var isWritable: Bool { true }

    func writeHead(_ head: HTTPResponseHead) { self.head = head }

    func writeBody(_ part: ByteBuffer) { body.writeImmutableBuffer(part) }

    func flush() {}

    func writeEnd() {
        guard let head else { return abort() }
        continuation?.resume(returning: GatewayResponse(head, body: body))
        continuation = nil
    }

    func abort() {
        continuation?.resume(returning: Gateway.error(.badGateway, .instanceFailed, "the response was cut short"))
        continuation = nil
    }
}
