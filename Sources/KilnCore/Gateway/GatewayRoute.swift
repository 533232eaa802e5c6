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
    /// function, like `localhost:8080`, falls back to the path). Returns nil when the request
    /// names no function at all (`GET /`).
    public static func resolve(target: String, host: String?, isFunction: (String) -> Bool) -> GatewayRoute? {
        let path = target.isEmpty ? "/" : target
        if let host, let name = functionLabel(ofHost: host), isFunction(name) {
            return GatewayRoute(function: name, path: path.hasPrefix("/") ? path : "/" + path, strippedPrefix: nil)
        }
        let queryStart = path.firstIndex(of: "?") ?? path.endIndex
        let pathPart = path[..<queryStart].drop { $0 == "/" }
        let segmentEnd = pathPart.firstIndex(of: "/") ?? pathPart.endIndex
        let name = String(pathPart[..<segmentEnd])
        guard !name.isEmpty else { return nil }
        let rest = pathPart[segmentEnd...]
        return GatewayRoute(function: name, path: (rest.isEmpty ? "/" : String(rest)) + path[queryStart...], strippedPrefix: "/\(name)")
    }

    /// `hello` from `hello.fns.local:8080`; nil for a host of one label (`localhost`), an IP
    /// address, or a first label that cannot be a snapshot name.
    static func functionLabel(ofHost host: String) -> String? {
        // One label (`localhost:8080`, the usual case) or an IPv6 literal: no function named.
        guard host.utf8.contains(UInt8(ascii: ".")), !host.hasPrefix("[") else { return nil }
        let name = host.split(separator: ":", maxSplits: 1).first.map { $0.lowercased() } ?? ""
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, !labels.allSatisfy({ $0.allSatisfy(\.isNumber) }) else { return nil }
        let first = String(labels[0])
        return isPlausibleName(first) ? first : nil
    }

    /// Snapshot names are lowercase letters, digits, `-` and `_` (see `SnapshotStore.validate`);
    /// anything else is not looked up at all.
    public static func isPlausibleName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
    }
}
