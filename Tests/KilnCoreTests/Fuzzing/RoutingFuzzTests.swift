import Foundation
import HTTPTypes
import NIOHTTP1
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// Issue 7, "Bad input", for the gateway: any request target and Host header is routed to a
/// function with a path that starts with `/` and cannot climb above the service's root, or gets
/// a typed rejection (and, through the gateway, a JSON 400 or 404), never a crash.
@Suite("fuzzing the gateway's routing")
struct RoutingFuzzTests {
    static let functions: Set<String> = ["hello", "pet-clinic", "kiln", "a"]

    struct Request: CustomStringConvertible {
        var target: String
        var host: String?
        var description: String { "target \(Fuzzer.excerpt(target)), host \(host.map { Fuzzer.excerpt($0) } ?? "none")" }
    }

    static func inputs() throws -> (targets: StringFuzzInputs, hosts: StringFuzzInputs) {
        let targets = StringFuzzInputs(
            seeds: FuzzCorpus.lines("targets"),
            dictionary: [
                "/", "//", "?", "#", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", ";", ";jsessionid=1", "%00", "\u{0}", " ", "\r\n", "%", "%%",
                "%zz",
                "hello", "pet-clinic", "HELLO", "\u{212A}iln", "é", "*", "@", "http://",
            ])
        let hosts = StringFuzzInputs(
            seeds: FuzzCorpus.lines("hosts"), dictionary: [".", ":", "[", "]", "hello", "kiln", "\u{212A}", "HELLO", "fns", "8080", "1", " "])
        try #require(!targets.seeds.isEmpty && !hosts.seeds.isEmpty, "no routing seeds under \(FuzzCorpus.directory.path)")
        return (targets, hosts)
    }

    static func generate(_ targets: StringFuzzInputs, _ hosts: StringFuzzInputs, _ random: inout FuzzRandom) -> Request {
        var target = targets.next(&random)
        if random.oneIn(1_000) {  // huge: up to 200 KB of segments
            target = "/hello" + String(repeating: random.pick(["/a", "/..", "%2e", "/"]), count: 1 << 16) + target
        }
        return Request(target: target, host: random.oneIn(3) ? nil : hosts.next(&random))
    }

    @Test func routes() async throws {
        let (targets, hosts) = try Self.inputs()
        let seeds = targets.seeds.flatMap { target in
            [Request(target: target, host: nil)] + hosts.seeds.prefix(5).map { Request(target: target, host: $0) }
        }
        await Fuzzer("routing", iterations: 20_000).run(seeds: seeds, generate: { Self.generate(targets, hosts, &$0) }, describe: \.description) {
            request in
            try Self.checkRoute(target: request.target, host: request.host)
        }
    }

    /// The routing contract, checked against oracles that do not share the router's code.
    static func checkRoute(target: String, host: String?) throws {
        let route: GatewayRoute
        do throws(GatewayRouteRejection) {
            route = try GatewayRoute.resolve(target: target, host: host, isFunction: functions.contains)
        } catch .noFunction {
            try invariant(firstSegment(of: target).isEmpty, "no function found in a target whose first segment is '\(firstSegment(of: target))'")
            try invariant(!hasControlOrSpace(target) && !climbs(target), "a target that must be refused was only 'no function'")
            return
        } catch .invalidTarget(let problem) {
            try invariant(!problem.isEmpty, "refused without a reason")
            try invariant(hasControlOrSpace(target) || climbs(target), "refused a target that is fine: \(problem)")
            return
        }
        try invariant(route.path.hasPrefix("/"), "the service would see '\(route.path)', which does not start with '/'")
        try invariant(!hasControlOrSpace(route.path), "the service would see a control character or space")
        try invariant(!climbs(route.path), "the service would see '\(route.path)', which climbs above its root")
        if let prefix = route.strippedPrefix {
            // Path routing: the first segment names the function, the service sees the rest.
            try invariant(prefix == "/" + route.function && !route.function.isEmpty, "stripped '\(prefix)' for function '\(route.function)'")
            try invariant(
                route.function == firstSegment(of: target), "routed to '\(route.function)', the first segment is '\(firstSegment(of: target))'")
            let rest = String(decoding: target.utf8.drop { $0 == UInt8(ascii: "/") }.dropFirst(route.function.utf8.count), as: UTF8.self)
            try invariant(route.path == rest || route.path == "/" + rest, "'\(target)' became \(route.function) + '\(route.path)'")
        } else {
            // Host routing: a function's own host name; the whole path goes to it.
            let label = (host ?? "").split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)[0]
                .split(separator: ".", omittingEmptySubsequences: false)[0]
            try invariant(functions.contains(route.function), "host-routed to '\(route.function)', not a function")
            try invariant(
                label.unicodeScalars.allSatisfy(\.isASCII) && label.lowercased() == route.function,
                "host '\(host ?? "")' routed to '\(route.function)'")
            try invariant(
                route.path == target || route.path == "/" + target || (target.isEmpty && route.path == "/"), "'\(target)' became '\(route.path)'")
        }
    }

    /// The first segment of the target's path (before `?`), leading slashes skipped.
    static func firstSegment(of target: String) -> String {
        let path = target.utf8.prefix { $0 != UInt8(ascii: "?") }.drop { $0 == UInt8(ascii: "/") }
        return String(decoding: path.prefix { $0 != UInt8(ascii: "/") }, as: UTF8.self)
    }

    static func hasControlOrSpace(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F }
    }

    /// Whether a service could read the target's path as climbing: percent-decode it, read `\`
    /// as `/`, cut `;params` off each segment (Tomcat), then resolve dot segments (RFC 3986
    /// 5.2.4) on a stack: any `.` or `..` changes the path.
    static func climbs(_ target: String) -> Bool {
        let path = Array(target.utf8.prefix { $0 != UInt8(ascii: "?") })
        func hex(_ byte: UInt8) -> UInt8? { UInt8(String(UnicodeScalar(byte)), radix: 16) }
        var decoded: [UInt8] = []
        var index = 0
        while index < path.count {
            if path[index] == UInt8(ascii: "%"), index + 2 < path.count, let high = hex(path[index + 1]), let low = hex(path[index + 2]) {
                decoded.append(high * 16 + low)
                index += 3
            } else {
                decoded.append(path[index])
                index += 1
            }
        }
        decoded = decoded.map { $0 == UInt8(ascii: "\\") ? UInt8(ascii: "/") : $0 }
        let segments = decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map {
            Array($0.prefix { $0 != UInt8(ascii: ";") })
        }
        var resolved: [[UInt8]] = []
        for segment in segments {
            switch segment {
            case Array(".".utf8): continue
            case Array("..".utf8): _ = resolved.popLast()
            default: resolved.append(segment)
            }
        }
        return resolved != segments
    }

    /// The same contract through the gateway itself (fake instances): JSON 400 or 404 for what is
    /// refused, and the service gets exactly the routed path for what is not.
    @Test func gatewayAnswersEveryRequest() async throws {
        let (targets, hosts) = try Self.inputs()
        try await withFakeGateway(provider: FakeProvider(functions: Self.functions, launchDelay: .zero)) { gateway, provider, transport in
            await Fuzzer("gateway", iterations: 2_000).run(generate: { Self.generate(targets, hosts, &$0) }, describe: \.description) { request in
                let gatewayRequest = GatewayRequest(.get, request.target, host: request.host)
                // HTTPTypes may already have cleaned the target or host, and an absolute-form
                // target carries its own host: route what the gateway sees.
                let head = gatewayRequest.head
                let (target, host) = Gateway.targetAndHost(
                    of: HTTPRequestHead(
                        version: .http1_1, method: .GET, uri: head.path ?? "/", headers: HTTPHeaders(head.authority.map { [("Host", $0)] } ?? [])))
                let expected = Result { () throws(GatewayRouteRejection) in
                    try GatewayRoute.resolve(target: target, host: host, isFunction: Self.functions.contains)
                }
                let sentBefore = transport.requests.count
                let response = await gateway.handle(gatewayRequest)
                let error = errorBody(response)
                switch expected {
                case .failure(.noFunction):
                    try invariant(response.status == .notFound && error["code"] == "function-not-found", "answered \(response.status) \(error)")
                case .failure(.invalidTarget):
                    try invariant(response.status == .badRequest && error["code"] == "invalid-path", "answered \(response.status) \(error)")
                    try invariant(error["message"]?.contains("cannot be forwarded") == true, "the message does not say why: \(error)")
                case .success(let route) where !Self.functions.contains(route.function):
                    try invariant(
                        response.status == .notFound && error["code"] == "function-not-found",
                        "answered \(response.status) \(error) for '\(route.function)'")
                case .success(let route):
                    try invariant(response.status == .ok, "answered \(response.status) \(error)")
                    try invariant(transport.requests.count == sentBefore + 1, "forwarded \(transport.requests.count - sentBefore) requests")
                    let sent = transport.requests.last?.request.head
                    try invariant(sent?.uri == route.path, "forwarded '\(sent?.uri ?? "nil")', routed '\(route.path)'")
                    try invariant(!Self.climbs(route.path) && !Self.hasControlOrSpace(route.path), "forwarded '\(route.path)'")
                }
                if case .failure = expected { try invariant(transport.requests.count == sentBefore, "forwarded a refused request") }
            }
            #expect(provider.launches <= Self.functions.count, "refused requests must not launch instances")
        }
    }
}
