import Foundation
import HTTPTypes
import NIOCore
import Testing

@testable import KilnCore

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
    func pathNamesTheFunction(target: String, function: String, path: String) {
        let route = GatewayRoute.resolve(target: target, host: "localhost:8080", isFunction: known)
        #expect(route == GatewayRoute(function: function, path: path, strippedPrefix: "/\(function)"))
    }

    @Test func hostNamesTheFunctionAndKeepsTheWholePath() {
        let route = GatewayRoute.resolve(target: "/greet?x=1", host: "hello.fns.local:8080", isFunction: known)
        #expect(route == GatewayRoute(function: "hello", path: "/greet?x=1", strippedPrefix: nil))
        // A Host that names no function falls back to the path.
        let fallback = GatewayRoute.resolve(target: "/hello/greet", host: "www.example.test", isFunction: known)
        #expect(fallback?.function == "hello")
        #expect(fallback?.path == "/greet")
    }

    @Test(arguments: ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "localhost", "HELLO", "10.0.0.1"])
    func hostsThatCannotNameAFunction(host: String) {
        #expect(GatewayRoute.functionLabel(ofHost: host) == nil || !known(GatewayRoute.functionLabel(ofHost: host)!))
    }

    @Test func noFunctionInTheRequest() {
        #expect(GatewayRoute.resolve(target: "/", host: nil, isFunction: known) == nil)
        #expect(GatewayRoute.resolve(target: "", host: "localhost", isFunction: known) == nil)
        #expect(GatewayRoute.resolve(target: "/?x=1", host: nil, isFunction: known) == nil)
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
            // Path traversal never reaches the store.
            let traversal = await gateway.handle(GatewayRequest(.get, "/../etc/passwd"))
            #expect(traversal.status == .notFound)
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
            #expect(sent.head.method == .post)
            #expect(sent.head.path == "/owners?x=1")
            #expect(sent.head.headerFields[.init("X-Custom")!] == "yes")
            #expect(sent.head.headerFields[.connection] == nil, "hop-by-hop headers are not forwarded")
            #expect(sent.head.headerFields[.contentLength] == "7")
            #expect(sent.head.headerFields[.init("X-Forwarded-Prefix")!] == "/hello")
            #expect(sent.head.headerFields[.init("X-Forwarded-Host")!] == "gw.test:8080")
            #expect(sent.body.map { String(buffer: $0) } == #"{"a":1}"#)

            // Host routing: the whole path goes to the function.
            let viaHost = await gateway.handle(GatewayRequest(.get, "/greet", host: "hello.fns.test"))
            #expect(viaHost.status == .ok)
            #expect(transport.requests.last?.request.head.path == "/greet")
        }
    }
}
