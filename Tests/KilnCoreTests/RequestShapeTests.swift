import Testing

@testable import KilnEngine

/// The shapes of request a warm-up sends (``RequestShape``): which fields each has, and the turn
/// they take over a run of kept-alive connections.
@Suite("request shapes")
struct RequestShapeTests {
    static func names(_ fields: [(name: String, value: String)]) -> [String] { fields.map(\.name) }

    @Test func kilnsOwnRequestsSayWhetherTheyCloseTheirConnection() {
        let kept = RequestShape.kiln.fields(port: 8080, closing: false)
        #expect(kept.map { "\($0.name): \($0.value)" } == ["Host: localhost:8080", "Connection: keep-alive", "User-Agent: kiln"])
        #expect(RequestShape.kiln.fields(port: 8080, closing: true).contains { $0 == ("Connection", "close") })
    }

    @Test func aForwardedRequestHasTheGatewaysFieldsAndNoConnectionFieldUntilItCloses() {
        let kept = RequestShape.forwarded(prefix: "/boot").fields(port: 9000, closing: false)
        #expect(kept.first { $0.name == "Host" }?.value == "127.0.0.1:9000")
        #expect(kept.first { $0.name == "X-Forwarded-Host" }?.value == "127.0.0.1:9000")
        #expect(kept.first { $0.name == "X-Forwarded-Prefix" }?.value == "/boot")
        #expect(kept.first { $0.name == "X-Forwarded-Proto" }?.value == "http")
        #expect(!Self.names(kept).contains("Connection"))
        let unrouted = RequestShape.forwarded(prefix: nil).fields(port: 9000, closing: true)
        #expect(!Self.names(unrouted).contains("X-Forwarded-Prefix"))
        #expect(unrouted.last.map { "\($0.name): \($0.value)" } == "Connection: close")
    }

    @Test func aClientsRequestNamesItsHostWithoutAPortAndNegotiates() {
        let fields = RequestShape.client.fields(port: 8080, closing: false)
        #expect(fields.first { $0.name == "Host" }?.value == "localhost")
        #expect(Set(Self.names(fields)).isSuperset(of: ["Accept", "Accept-Encoding", "Accept-Language", "X-Forwarded-For"]))
        #expect(!Self.names(fields).contains("Connection"))
    }

    @Test func theShapesTakeTurnsShiftedOnEachConnection() {
        let shapes = RequestShape.warmUp(function: "fn")
        #expect(shapes == [.kiln, .forwarded(prefix: "/fn"), .client])
        let turn = (0..<9).map { RequestShape.shape(at: $0, of: shapes, perConnection: 3) }
        // Each connection of three has every shape once, each in a different place than before.
        for connection in 0..<3 {
            #expect(Set(turn[(connection * 3)..<(connection * 3 + 3)].map { "\($0)" }).count == 3)
        }
        for place in 0..<3 {
            #expect(Set((0..<3).map { "\(turn[$0 * 3 + place])" }).count == 3, "shape \(place) of each connection")
        }
        // One connection for everything: a plain turn.
        #expect((0..<4).map { RequestShape.shape(at: $0, of: shapes, perConnection: .max) } == [shapes[0], shapes[1], shapes[2], shapes[0]])
        #expect(RequestShape.warmUp(function: nil)[1] == .forwarded(prefix: nil))
    }
}
