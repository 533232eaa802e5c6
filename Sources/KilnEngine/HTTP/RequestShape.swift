/// What a request says besides its method and path: its `Host` and its other header fields.
///
/// A JVM compiles a service's request path for the requests it has seen. HotSpot's C2 leaves a
/// branch no request took out of the compiled code, with a trap in its place: the first request
/// that takes it throws the method back to the interpreter ("made not entrant") and has it
/// compiled again. A snapshot warmed up only with kiln's own requests (`Host: localhost:8080`,
/// `User-Agent: kiln`, nothing else) had Tomcat's host parsing and mapping, its header
/// preparation and Spring's content negotiation compiled for exactly that; the first request
/// `kiln serve` forwarded to a copy (`Host: 127.0.0.1:18080`, `Accept: */*`, `X-Forwarded-*`)
/// sent nine of those methods back (`-XX:+PrintCompilation` in a restored copy of the Spring
/// sample), and the copy answered it interpreting and compiling. So a warm-up sends each path in
/// a few shapes (``warmUp(function:)``): the branches real requests take are compiled in the
/// snapshot, and the copies' first requests run them.
public enum RequestShape: Sendable, Equatable {
    /// kiln's own requests (its readiness probe, hooks and `kiln request`): `Host:
    /// localhost:PORT`, `Connection: keep-alive` or `close`, `User-Agent: kiln`.
    case kiln
    /// What `kiln serve` forwards from a command-line client: that client's `Host` (an IPv4
    /// address and the gateway's port), `User-Agent` and `Accept: */*`, and the gateway's
    /// `X-Forwarded-Prefix` (the function's route, when it has one) and `X-Forwarded-Proto`; no
    /// `Connection` field (HTTP/1.1 keeps the connection) but on the request that closes it.
    case forwarded(prefix: String?)
    /// A library or browser client: `Host: localhost` without a port, content negotiation
    /// (`Accept` of JSON before anything, `Accept-Encoding`, `Accept-Language`) and the
    /// `X-Forwarded-For` of a proxy in front.
    case client

    /// What a request of this shape is, and its fields, in words (for an error about one).
    public var summary: String {
        switch self {
        case .kiln: "kiln's own request (Host: localhost:PORT, User-Agent: kiln)"
        case .forwarded(let prefix):
            "a request as kiln serve forwards it (Host: 127.0.0.1:PORT, User-Agent: curl/7.88.1, Accept: */*, X-Forwarded-Host: 127.0.0.1:PORT, "
                + (prefix.map { "X-Forwarded-Prefix: \($0), " } ?? "") + "X-Forwarded-Proto: http)"
        case .client:
            "a library client's request (Host: localhost, Accept: application/json, text/plain, */*, Accept-Encoding: gzip, deflate, "
                + "Accept-Language, X-Forwarded-For: 127.0.0.1)"
        }
    }

    /// The shapes a warm-up sends in turn, for a service served as `function` (nil: no route).
    public static func warmUp(function: String?) -> [RequestShape] {
        [.kiln, .forwarded(prefix: function.map { "/\($0)" }), .client]
    }

    /// The header fields of a request in this shape to a service on `port`; `closing`: the
    /// request asks for its connection to be closed after the reply.
    public func fields(port: Int, closing: Bool) -> [(name: String, value: String)] {
        switch self {
        case .kiln:
            return [("Host", "localhost:\(port)"), ("Connection", closing ? "close" : "keep-alive"), ("User-Agent", "kiln")]
        case .forwarded(let prefix):
            // The gateway keeps the client's Host and names it again in X-Forwarded-Host.
            var fields: [(name: String, value: String)] = [
                ("Host", "127.0.0.1:\(port)"), ("User-Agent", "curl/7.88.1"), ("Accept", "*/*"), ("X-Forwarded-Host", "127.0.0.1:\(port)"),
            ]
            if let prefix { fields.append(("X-Forwarded-Prefix", prefix)) }
            fields.append(("X-Forwarded-Proto", "http"))
            if closing { fields.append(("Connection", "close")) }
            return fields
        case .client:
            var fields: [(name: String, value: String)] = [
                ("Host", "localhost"), ("Accept", "application/json, text/plain, */*"), ("Accept-Encoding", "gzip, deflate"),
                ("Accept-Language", "en-US,en;q=0.9"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"), ("X-Forwarded-For", "127.0.0.1"),
            ]
            if closing { fields.append(("Connection", "close")) }
            return fields
        }
    }

    /// The shape of request `index` of a run over connections of `perConnection` requests:
    /// `shapes` in turn, shifted by one on each connection, so every shape is sent on a new, a
    /// kept and a closing connection alike (with three shapes and three requests a connection,
    /// a plain turn would send each shape always in the same place).
    static func shape(at index: Int, of shapes: [RequestShape], perConnection: Int) -> RequestShape {
        precondition(!shapes.isEmpty, "at least one shape")
        let connection = perConnection == .max ? 0 : index / perConnection
        return shapes[(index + connection) % shapes.count]
    }
}
