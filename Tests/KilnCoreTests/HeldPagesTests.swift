import HTTPTypes
import Testing

@testable import KilnGateway

/// The gateway's held pages stay within their budget: the functions restored longest ago are let
/// go first, a pin too big alone is refused (once per snapshot version), pins of removed or
/// re-baked snapshots go, and nothing is kept after the gateway's end.
@Suite struct HeldPagesTests {
    final class FakePin: HeldPagesPin {
        let lockedBytes: Int
        init(_ mib: Int) { lockedBytes = mib << 20 }
        func release() {}
    }

    let start = ContinuousClock.now
    func at(_ seconds: Int) -> ContinuousClock.Instant { start + .seconds(seconds) }
    func ids(_ pins: [FakePin]) -> [ObjectIdentifier] { pins.map(ObjectIdentifier.init) }

    @Test func functionsRestoredLongestAgoAreLetGoFirst() {
        var held = HeldPages<FakePin>(budgetBytes: 1000 << 20)
        let (a, b, c) = (FakePin(300), FakePin(300), FakePin(300))
        for (index, (name, pin)) in [("a", a), ("b", b), ("c", c)].enumerated() {
            let kept = held.keep(pin, for: name, snapshotVersion: "1", at: at(index))
            #expect(kept.outcome == .kept(evicting: []))
            #expect(kept.release.isEmpty)
        }
        // "a" was restored again since: "b" is now the one used longest ago.
        held.used("a", at: at(3))
        let (outcome, release) = held.keep(FakePin(300), for: "d", snapshotVersion: "1", at: at(4))
        #expect(outcome == .kept(evicting: ["b"]))
        #expect(ids(release) == ids([b]))
        #expect(Set(held.functions.keys) == ["a", "c", "d"])
        #expect(held.lockedBytes == 900 << 20)
    }

    @Test func aBigPinEvictsAsManyAsItNeeds() {
        var held = HeldPages<FakePin>(budgetBytes: 1000 << 20)
        for (index, name) in ["a", "b", "c"].enumerated() {
            _ = held.keep(FakePin(300), for: name, snapshotVersion: "1", at: at(index))
        }
        let big = held.keep(FakePin(700), for: "big", snapshotVersion: "1", at: at(9))
        #expect(big.outcome == .kept(evicting: ["a", "b"]))
        #expect(big.release.count == 2)
        #expect(held.lockedBytes == 1000 << 20)
    }

    @Test func aPinTooBigAloneIsRefusedOncePerVersion() {
        var held = HeldPages<FakePin>(budgetBytes: 500 << 20)
        _ = held.keep(FakePin(200), for: "small", snapshotVersion: "1", at: at(0))
        let big = FakePin(600)
        let (outcome, release) = held.keep(big, for: "big", snapshotVersion: "1", at: at(1))
        #expect(outcome == .overBudget)
        #expect(ids(release) == ids([big]), "refused and released; the others stay")
        #expect(Set(held.functions.keys) == ["small"])
        #expect(held.refuses("big", snapshotVersion: "1"))
        #expect(!held.refuses("big", snapshotVersion: "2"), "a new bake is tried again")
        #expect(!held.refuses("small", snapshotVersion: "1"))
    }

    @Test func aNewPinOfAFunctionReplacesItsOld() {
        var held = HeldPages<FakePin>(budgetBytes: 1000 << 20)
        let old = FakePin(400)
        _ = held.keep(old, for: "a", snapshotVersion: "1", at: at(0))
        let (outcome, release) = held.keep(FakePin(500), for: "a", snapshotVersion: "2", at: at(1))
        #expect(outcome == .kept(evicting: []), "the old pin is not counted against the new one")
        #expect(ids(release) == ids([old]))
        #expect(held.functions["a"]?.snapshotVersion == "2")
        #expect(held.lockedBytes == 500 << 20)
    }

    @Test func theProgramsCountButAreNeverEvicted() {
        var held = HeldPages<FakePin>(budgetBytes: 100 << 20)
        let first = held.keep(programs: FakePin(15))
        let second = held.keep(programs: FakePin(15))
        #expect(first)
        #expect(!second, "held once")
        #expect(held.keep(FakePin(80), for: "a", snapshotVersion: "1", at: at(0)).outcome == .kept(evicting: []))
        let tooBig = held.keep(FakePin(90), for: "b", snapshotVersion: "1", at: at(1))
        #expect(tooBig.outcome == .overBudget, "90 + the programs' 15 exceed 100")
        let fits = held.keep(FakePin(85), for: "b", snapshotVersion: "2", at: at(2))
        #expect(fits.outcome == .kept(evicting: ["a"]))
        #expect(held.programs != nil)
    }

    @Test func pinsOfRemovedOrRebakedSnapshotsGo() {
        var held = HeldPages<FakePin>(budgetBytes: 1000 << 20)
        for (index, name) in ["kept", "removed", "rebaked"].enumerated() {
            _ = held.keep(FakePin(100), for: name, snapshotVersion: "1", at: at(index))
        }
        let current: [String: String] = ["kept": "1", "rebaked": "2"]
        let (stale, release) = held.keepOnly { current[$0] }
        #expect(stale == ["rebaked", "removed"])
        #expect(release.count == 2)
        #expect(Set(held.functions.keys) == ["kept"])
        let again = held.keepOnly { current[$0] }
        #expect(again.functions.isEmpty, "nothing more to let go")
    }

    @Test func nothingIsKeptAfterTheEnd() {
        var held = HeldPages<FakePin>(budgetBytes: 1000 << 20)
        _ = held.keep(FakePin(100), for: "a", snapshotVersion: "1", at: at(0))
        _ = held.keep(programs: FakePin(10))
        let all = held.releaseAll()
        #expect(all.count == 2)
        let late = FakePin(100)
        let (outcome, release) = held.keep(late, for: "a", snapshotVersion: "1", at: at(5))
        #expect(outcome == .ended)
        #expect(ids(release) == ids([late]))
        let programs = held.keep(programs: FakePin(10))
        #expect(!programs)
        #expect(held.lockedBytes == 0)
    }

    /// `/metrics` shows what the provider holds, read at each scrape: a function whose pin was
    /// let go drops to 0, and the programs and the budget have series of their own.
    @Test func metricsShowWhatIsHeldAtEachScrape() async throws {
        let provider = FakeProvider()
        provider.state.withLock { $0.heldPages = HeldPageUsage(functions: ["hello": 300 << 20], programs: 14 << 20, budget: 6 << 30) }
        try await withFakeGateway(provider: provider) { gateway, provider, _ in
            // A request makes hello's pool and its metrics.
            let response = await gateway.handle(
                GatewayRequest(head: HTTPRequest(method: .get, scheme: nil, authority: "x", path: "/hello/"), body: nil))
            #expect(response.head.status == .ok)
            var text = String(decoding: gateway.metricsExposition(), as: UTF8.self)
            #expect(metricValue(text, #"kiln_gateway_held_page_bytes{function="hello"}"#) == Double(300 << 20))
            #expect(metricValue(text, "kiln_gateway_held_program_bytes") == Double(14 << 20))
            #expect(metricValue(text, "kiln_gateway_held_page_budget_bytes") == Double(6 << 30))
            provider.state.withLock { $0.heldPages?.functions = [:] }
            text = String(decoding: gateway.metricsExposition(), as: UTF8.self)
            #expect(metricValue(text, #"kiln_gateway_held_page_bytes{function="hello"}"#) == 0, "let go: 0, not the last value")
        }
    }
}
