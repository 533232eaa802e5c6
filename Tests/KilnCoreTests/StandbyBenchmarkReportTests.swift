import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnSystem

/// How `kiln bench standby` reports a request at zero against warm requests.
@Suite struct StandbyBenchmarkReportTests {
    static func report(atZero: [Double], warm: [Double], idleWarm: [Double]?) -> StandbyBenchmarkReport {
        let atZeroSummary = SampleSummary(atZero)
        let warmSummary = SampleSummary(warm)
        let idleSummary = idleWarm.map { SampleSummary($0) }
        let memory = MemoryUsage(rssBytes: 200 << 20, pssBytes: 180 << 20, sharedBytes: 0)
        return StandbyBenchmarkReport(
            snapshot: "boot", standbyMode: .ready, thawMs: [2.4], thaw: SampleSummary([2.4]), copiedAheadPages: [0], restoreMs: [80],
            restore: SampleSummary([80]), restoreOverThaw: 33, frozenAfter: SampleSummary([45]), gatewayAtZeroMs: atZero,
            gatewayAtZero: atZeroSummary, gatewayWarmMs: warm, gatewayWarm: warmSummary, atZeroOverWarm: atZeroSummary.p50 / warmSummary.p50,
            gatewayIdleWarmMs: idleWarm, gatewayIdleWarm: idleSummary, atZeroOverIdleWarm: idleSummary.map { atZeroSummary.p50 / $0.p50 },
            atZeroServedBy: ["standby"], coldInstance: memory, copies: 8,
            standbyCopies: [MemoryUsage(rssBytes: 40 << 20, pssBytes: 18 << 20, sharedBytes: 0)], standbyPssOverCold: 0.1,
            loadAverage: "0.5 0.5 0.5")
    }

    @Test func bothRatiosArePrintedTheTargetAgainstBackToBackRequests() {
        let text = Self.report(atZero: [6, 6, 6], warm: [2, 2, 2], idleWarm: [4, 4, 4]).summary
        #expect(text.contains("at zero / warm: 3.00x (target <= 2); at zero / warm after the same idle: 1.50x"), "\(text)")
        #expect(text.contains("request to the warm instance idle:   p50 4.0 ms (after 500 ms without a request"), "\(text)")
    }

    /// Warm requests spread widely on a shared machine: the report shows how widely.
    @Test func theSpreadOfTheRequestsAtZeroAndOfTheWarmOnesIsShown() {
        let text = Self.report(atZero: [4, 5, 9], warm: [1, 2, 8], idleWarm: nil).summary
        #expect(text.contains("first request at zero with 1 standby: p50 5.0 ms (min 4.0 ms, p90 "), "\(text)")
        #expect(text.contains("request to the warm instance:        p50 2.0 ms (min 1.0 ms, p90 "), "\(text)")
        #expect(text.contains("n=3; compiled, right after another)"), "\(text)")
    }

    /// One run's ratio near 2 does not decide the target; the report says whether it does.
    @Test func theReportSaysWhetherTheRunDecidesTheTarget() {
        var report = Self.report(atZero: [6, 6, 6], warm: [2, 2, 2], idleWarm: [4, 4, 4])
        report.atZeroOverWarmInterval = RatioInterval(numerator: report.gatewayAtZeroMs, denominator: report.gatewayWarmMs)
        report.atZeroOverIdleWarmInterval = RatioInterval(numerator: report.gatewayAtZeroMs, denominator: report.gatewayIdleWarmMs ?? [])
        #expect(
            report.summary.contains(
                "resampling the runs (95% intervals): at zero / warm 3.00-3.00x, missed in this run; after the same idle 1.50-1.50x"),
            "\(report.summary)")
        let near = Self.report(atZero: [3.5, 4, 4.5, 5, 6, 4.2, 5.5], warm: [1.5, 2, 2.5, 3, 2.2, 1.8, 2.7, 2.4], idleWarm: nil)
        var decided = near
        decided.atZeroOverWarmInterval = RatioInterval(numerator: near.gatewayAtZeroMs, denominator: near.gatewayWarmMs)
        #expect(decided.summary.contains(", this run does not decide it\n"), "\(decided.summary)")
        #expect(!near.summary.contains("resampling"), "a report without intervals (older) prints none")
    }

    @Test func aReportFromBeforeTheIdleBaselineStillDecodesAndSaysNothingOfIt() throws {
        var fields = try #require(
            JSONSerialization.jsonObject(with: JSONEncoder().encode(Self.report(atZero: [6], warm: [2], idleWarm: [4]))) as? [String: Any])
        for key in ["gatewayIdleWarmMs", "gatewayIdleWarm", "atZeroOverIdleWarm"] { fields[key] = nil }
        let old = try JSONDecoder().decode(StandbyBenchmarkReport.self, from: JSONSerialization.data(withJSONObject: fields))
        #expect(old.atZeroOverIdleWarm == nil)
        #expect(!old.summary.contains("idle"), "\(old.summary)")
        #expect(old.summary.contains("at zero / warm: 3.00x (target <= 2)\n"))
    }

    /// A ready copy's seconds before its freeze are mostly the trim's wait: the line says so.
    @Test func theTrimWaitIsNamedInTheTimeBeforeTheFreeze() {
        var report = Self.report(atZero: [6], warm: [2], idleWarm: nil)
        #expect(report.summary.contains("ran 45.00 ms (p50) between runc restore and its freeze\n"), "\(report.summary)")
        report.trimWaitMs = 5500
        #expect(
            report.summary.contains(
                "ran 45.00 ms (p50) between runc restore and its freeze (its afterRestore, warm-up requests and compilers settling, then 5500 ms for HotSpot's chunk-pool cleaner before the native-heap trim)\n"
            ), "\(report.summary)")
    }
}
