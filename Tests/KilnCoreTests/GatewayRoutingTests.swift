import Foundation
import HTTPTypes
import NIOCore
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("gateway routing")
struct GatewayRoutingTests {
    let known: (String) -> Bool = { ["hello", "pet-clinic"].contains($0) }

    @Test(arguments: [
        ("/hello/greet", "hello", "/greet"),
        ("/hello/greet?name=kiln&x=1", "hello", "/greet?name=kiln&x=1"),
        ("/hello", "hello", "/"),
        ("/hello/", "hello", "/"),
        ("/hello?x=1", "hello", "/?x=1"),
        ("/hello/owners/1/pets", "hello", "/owners/1/pets"),
        ("//hello/greet", "hello", "/greet"),
        ("/nope/x", "nope", "/x"),
    ])
    func pathNamesTheFunction(target: String, function: String, path: String) throws {
        let route = try GatewayRoute.resolve(target: target, host: "localhost:8080", isFunction: known)
        #expect(route == GatewayRoute(function: function, path: path, strippedPrefix: "/\(function)"))
    }

    @Test func hostNamesTheFunctionAndKeepsTheWholePath() throws {
        let route = try GatewayRoute.resolve(target: "/greet?x=1", host: "hello.fns.local:8080", isFunction: known)
        #expect(route == GatewayRoute(function: "hello", path: "/greet?x=1", strippedPrefix: nil))
        // A Host that names no function falls back to the path.
        let fallback = try GatewayRoute.resolve(target: "/hello/greet", host: "www.example.test", isFunction: known)
        #expect(fallback.function == "hello")
        #expect(fallback.path == "/greet")
    }

    @Test(arguments: ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "localhost", "HELLO", "10.0.0.1"])
    func hostsThatCannotNameAFunction(host: String) {
        #expect(GatewayRoute.functionLabel(ofHost: host) == nil || !known(GatewayRoute.functionLabel(ofHost: host)!))
    }

    @Test func noFunctionInTheRequest() {
        #expect(throws: GatewayRouteRejection.noFunction) { try GatewayRoute.resolve(target: "/", host: nil, isFunction: known) }
        #expect(throws: GatewayRouteRejection.noFunction) { try GatewayRoute.resolve(target: "", host: "localhost", isFunction: known) }
        #expect(throws: GatewayRouteRejection.noFunction) { try GatewayRoute.resolve(target: "/?x=1", host: nil, isFunction: known) }
    }

    /// Dot segments a service could resolve above its root, however they are spelled, and
    /// characters that would break the forwarded request line.
    @Test(arguments: [
        "/hello/../x", "/hello/..", "/hello/./x", "/../hello/x", "/hello/%2e%2e/x", "/hello/%2E./x", "/hello/..%2fx",
        "/hello/a%2f..%2f..%2fb", "/hello/..%5cx", "/hello/..\\x", "/hello/..;jsessionid=1/x", "/hello/x/..?a=1",
        "/hello/a b", "/hello/a\u{0}b", "/hello/a\r\nX-Injected: 1",
    ])
    func targetsThatCannotBeForwardedAreRejected(target: String) {
        for host in [nil, "hello.fns.test"] {
            let error = #expect(throws: GatewayRouteRejection.self) { try GatewayRoute.resolve(target: target, host: host, isFunction: known) }
            guard case .invalidTarget(let problem) = error else {
                Issue.record("\(target) gave \(String(describing: error)), not invalidTarget")
                continue
            }
            #expect(problem.contains("'..'") || problem.contains("whitespace"))
        }
    }

    @Test(arguments: ["/hello/..x/y", "/hello/.well-known/a", "/hello/x?path=../../etc", "/hello/a%2Fb", "/hello//x", "/hello/%zz"])
    func targetsThatOnlyLookOddAreForwarded(target: String) throws {
        let route = try GatewayRoute.resolve(target: target, host: nil, isFunction: known)
        #expect(route.function == "hello")
        #expect(target == "/hello" + route.path)
    }

    @Test func hostLabelsFoldOnlyASCIICase() {
        #expect(GatewayRoute.functionLabel(ofHost: "HELLO.fns.test:8080") == "hello")
        // U+212A KELVIN SIGN lower-cases to an ASCII "k" in Unicode; it must not name "kiln".
        #expect(GatewayRoute.functionLabel(ofHost: "\u{212A}iln.fns.test") == nil)
    }

    @Test func namesThatCannotBeSnapshotsAreNotLookedUp() {
        #expect(GatewayRoute.isPlausibleName("hello-2_b"))
        #expect(!GatewayRoute.isPlausibleName(".."))
        #expect(!GatewayRoute.isPlausibleName("Hello"))
        #expect(!GatewayRoute.isPlausibleName("a%2Fb"))
        #expect(!GatewayRoute.isPlausibleName(""))
    }

    @Test func unknownFunctionIs404JSONNamingIt() async throws {
        try await withFakeGateway { gateway, provider, _ in
            let response = await gateway.handle(GatewayRequest(.get, "/nope/greet"))
            #expect(response.status == .notFound)
            #expect(response.head.headerFields[.contentType] == "application/json")
            let error = errorBody(response)
            #expect(error["code"] == "function-not-found")
            #expect(error["function"] == "nope")
            #expect(error["message"]?.contains("'nope'") == true)
            #expect(provider.launches == 0)

            let root = await gateway.handle(GatewayRequest(.get, "/"))
            #expect(root.status == .notFound)
            #expect(errorBody(root)["code"] == "function-not-found")
            // Path traversal never reaches the store, nor an instance.
            let traversal = await gateway.handle(GatewayRequest(.get, "/../etc/passwd"))
            #expect(traversal.status == .badRequest)
            #expect(errorBody(traversal)["code"] == "invalid-path")
            #expect(errorBody(traversal)["message"]?.contains("'..'") == true)
            let escape = await gateway.handle(GatewayRequest(.get, "/hello/%2e%2e/other/x"))
            #expect(escape.status == .badRequest)
            #expect(provider.launches == 0)
        }
    }

    @Test func forwardsPathQueryBodyAndHeaders() async throws {
        try await withFakeGateway { gateway, _, transport in
            var head = HTTPRequest(method: .post, scheme: nil, authority: "gw.test:8080", path: "/hello/owners?x=1")
            head.headerFields[.contentType] = "application/json"
            head.headerFields[.connection] = "keep-alive"
            head.headerFields[.init("X-Custom")!] = "yes"
            let response = await gateway.handle(GatewayRequest(head: head, body: ByteBuffer(string: #"{"a":1}"#)))
            #expect(response.status == .ok)
            #expect(response.head.headerFields[Gateway.instanceHeader] == "hello-1")
            let sent = try #require(transport.requests.first?.request)
            #expect(sent.head.method == .POST)
            #expect(sent.head.uri == "/owners?x=1")
            #expect(sent.head.headers["X-Custom"] == ["yes"])
            #expect(sent.head.headers["connection"].isEmpty, "hop-by-hop headers are not forwarded")
            #expect(sent.head.headers["content-length"] == ["7"])
            #expect(sent.head.headers["X-Forwarded-Prefix"] == ["/hello"])
            #expect(sent.head.headers["X-Forwarded-Host"] == ["gw.test:8080"])
            #expect(sent.head.headers["Host"] == ["gw.test:8080"])
            #expect(sent.body.map { String(buffer: $0) } == #"{"a":1}"#)

            // Host routing: the whole path goes to the function.
            let viaHost = await gateway.handle(GatewayRequest(.get, "/greet", host: "hello.fns.test"))
            #expect(viaHost.status == .ok)
            #expect(transport.requests.last?.request.head.uri == "/greet")
        }
    }
}
