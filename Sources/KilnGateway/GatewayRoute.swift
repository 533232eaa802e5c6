import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem

/// Which function a request is for, and the path its service sees.
///
/// Two ways to name a function: the first path segment (`/hello/greet?x=1` goes to `hello` as
/// `/greet?x=1`), or the first label of the `Host` header (`Host: hello.fns.local` sends the
/// whole path to `hello`), so a function can be given its own host name and keep absolute paths.
public struct GatewayRoute: Sendable, Equatable {
    public var function: String
    /// Path and query string as the service sees them; always starts with `/`.
    public var path: String
    /// The path prefix the gateway removed (`/hello`), or nil when the Host header named the
    /// function; passed on as `X-Forwarded-Prefix`.
    public var strippedPrefix: String?

    public init(function: String, path: String, strippedPrefix: String?) {
        self.function = function
        self.path = path
        self.strippedPrefix = strippedPrefix
    }

    /// Routes a request target (`path?query`) and `Host` value. `isFunction` says whether a name
    /// is a function the gateway can run; it decides Host routing (a Host that names no
    /// function, like `localhost:8080`, falls back to the path). Throws ``GatewayRouteRejection``
    /// when the request names no function at all (`GET /`) or its target must not be forwarded.
    public static func resolve(target: String, host: String?, isFunction: (String) -> Bool) throws(GatewayRouteRejection) -> GatewayRoute {
        let path = target.isEmpty ? "/" : target
        if let problem = problem(inTarget: path) { throw .invalidTarget(problem) }
        if let host, let name = functionLabel(ofHost: host), isFunction(name) {
            return GatewayRoute(function: name, path: path.hasPrefix("/") ? path : "/" + path, strippedPrefix: nil)
        }
        // Split as HTTP does, at bytes: a Character-wise split would not see a '/' or '?'
        // followed by a combining mark, which a service still reads as one.
        let bytes = path.utf8
        let queryStart = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.endIndex
        let nameStart = bytes[..<queryStart].firstIndex { $0 != UInt8(ascii: "/") } ?? queryStart
        let nameEnd = bytes[nameStart..<queryStart].firstIndex(of: UInt8(ascii: "/")) ?? queryStart
        guard nameStart < nameEnd else { throw .noFunction }
        let name = String(decoding: bytes[nameStart..<nameEnd], as: UTF8.self)
        let rest = String(decoding: bytes[nameEnd...], as: UTF8.self)
        return GatewayRoute(function: name, path: rest.hasPrefix("/") ? rest : "/" + rest, strippedPrefix: "/\(name)")
    }

    /// Why a target must not be forwarded, or nil. The path a service sees must not climb above
    /// its root, and what a service takes for `..` is more than the two bytes: one that decodes
    /// before it resolves sees `..` in `%2e%2e` or `..%2f`, Windows-minded code splits at `\`,
    /// and Tomcat (behind most Spring services) drops `;params` from a segment, so `..;x` is `..`
    /// to it. So the path (not the query) is percent-decoded once, split at `/` and `\`, each
    /// segment cut at `;`, and a `.` or `..` segment refused; so is whitespace or a control
    /// character anywhere, which no HTTP parser passes on and which would end or split the
    /// forwarded request line.
    static func problem(inTarget target: String) -> String? {
        // One pass over the bytes first: a path with no '.' and no '%' (most of them) has no dot
        // segment however it is split, and needs no decoding.
        var mayHoldDotSegment = false
        var inQuery = false
        for byte in target.utf8 {
            if InputValidation.isSpaceOrControl(byte) { return "it holds whitespace or a control character" }
            if byte == UInt8(ascii: "?") { inQuery = true }
            if !inQuery, byte == UInt8(ascii: ".") || byte == UInt8(ascii: "%") { mayHoldDotSegment = true }
        }
        guard mayHoldDotSegment else { return nil }
        let path = target.utf8.prefix { $0 != UInt8(ascii: "?") }
        let segments = percentDecoded(path).split(omittingEmptySubsequences: false) { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") }
        let dotSegment = segments.contains { segment in
            let name = segment.prefix { $0 != UInt8(ascii: ";") }
            return name.elementsEqual(".".utf8) || name.elementsEqual("..".utf8)
        }
        return dotSegment ? "it has a '.' or '..' segment (percent-encoded or not)" : nil
    }

    /// `bytes` with each `%XX` escape decoded; a `%` not followed by two hex digits stays as it is.
    static func percentDecoded(_ bytes: some Collection<UInt8>) -> [UInt8] {
        func hexValue(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        let input = Array(bytes)
        var output: [UInt8] = []
        output.reserveCapacity(input.count)
        var index = 0
        while index < input.count {
            if input[index] == UInt8(ascii: "%"), index + 2 < input.count, let high = hexValue(input[index + 1]), let low = hexValue(input[index + 2])
            {
                output.append(high << 4 | low)
                index += 3
            } else {
                output.append(input[index])
                index += 1
            }
        }
        return output
    }

    /// `hello` from `hello.fns.local:8080`; nil for a host of one label (`localhost`), an IP
    /// address, or a first label that cannot be a snapshot name. Only ASCII letters are folded
    /// to lower case: Unicode case mapping would turn a `K` (U+212A KELVIN SIGN) into `k`.
    static func functionLabel(ofHost host: String) -> String? {
        guard !host.hasPrefix("[") else { return nil }  // IPv6 literal
        let hostname = host.utf8.prefix { $0 != UInt8(ascii: ":") }
        // Most requests carry `localhost:PORT` or an IPv4 address: no dot, or nothing but digits
        // and dots, is never a function's host. Said without building any string.
        guard hostname.contains(UInt8(ascii: ".")),
            !hostname.allSatisfy({ $0 == UInt8(ascii: ".") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        else { return nil }
        let name = String(decoding: hostname.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, !labels.allSatisfy({ $0.allSatisfy(\.isNumber) }) else { return nil }
        let first = String(labels[0])
        return isPlausibleName(first) ? first : nil
    }

    /// Snapshot names are lowercase letters, digits, `-` and `_` (see `SnapshotStore.validate`);
    /// anything else is not looked up at all.
    public static func isPlausibleName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy {
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
            }
    }
}

/// Why ``GatewayRoute/resolve(target:host:isFunction:)`` routes a request nowhere.
public enum GatewayRouteRejection: Error, Sendable, Equatable, CustomStringConvertible {
    /// The request names no function (`GET /`): 404 `function-not-found`.
    case noFunction
    /// The target cannot be forwarded (the reason): 400 `invalid-path`.
    case invalidTarget(String)

    public var description: String {
        switch self {
        case .noFunction: "no function in the request path"
        case .invalidTarget(let problem): "the request target cannot be forwarded: \(problem)"
        }
    }
}
