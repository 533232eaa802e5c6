import Testing

@testable import KilnBench

/// How a benchmark says whether one run decides a ratio's target.
@Suite struct RatioIntervalTests {
    /// Samples spread evenly around `center` by up to `spread` either way, in a fixed order.
    static func samples(_ count: Int, around center: Double, spread: Double) -> [Double] {
        (0..<count).map { center + spread * (2 * Double(($0 * 7) % count) / Double(max(count - 1, 1)) - 1) }
    }

    @Test func samplesThatDoNotVaryGiveTheRatioItself() throws {
        let interval = try #require(RatioInterval(numerator: [6, 6, 6], denominator: [2, 2, 2]))
        #expect(interval.lower == 3 && interval.upper == 3)
        #expect(interval.range == "3.00-3.00x")
        #expect(interval.levelPercent == "95%")
    }

    @Test func theSameSamplesAlwaysGiveTheSameIntervalAroundTheMeasuredRatio() throws {
        let atZero = Self.samples(10, around: 5, spread: 1.5)
        let warm = Self.samples(30, around: 2.5, spread: 1.2)
        let first = try #require(RatioInterval(numerator: atZero, denominator: warm))
        let second = try #require(RatioInterval(numerator: atZero, denominator: warm))
        #expect(first == second)
        let measured = SampleSummary(atZero).p50 / SampleSummary(warm).p50
        #expect(first.lower < measured && measured < first.upper, "\(first) around \(measured)")
        #expect(first.lower < first.upper)
    }

    @Test func aRatioNearItsTargetIsUndecidedAndClearOnesAreDecided() throws {
        let warm = Self.samples(30, around: 2.5, spread: 1.2)
        let near = try #require(RatioInterval(numerator: Self.samples(10, around: 5, spread: 1.5), denominator: warm))
        #expect(near.verdict(atMost: 2) == .undecided, "\(near)")
        let below = try #require(
            RatioInterval(numerator: Self.samples(10, around: 3, spread: 0.2), denominator: Self.samples(30, around: 2.5, spread: 0.2)))
        #expect(below.verdict(atMost: 2) == .met, "\(below)")
        let above = try #require(
            RatioInterval(numerator: Self.samples(10, around: 9, spread: 0.5), denominator: Self.samples(30, around: 2.5, spread: 0.2)))
        #expect(above.verdict(atMost: 2) == .missed, "\(above)")
        #expect(above.verdict(atLeast: 3) == .met)
        #expect(below.verdict(atLeast: 3) == .missed)
        #expect(RatioInterval.Verdict.undecided.words == "this run does not decide it")
    }

    @Test func moreRunsOfTheSameSpreadNarrowTheInterval() throws {
        let few = try #require(
            RatioInterval(numerator: Self.samples(8, around: 3400, spread: 400), denominator: Self.samples(8, around: 55, spread: 8)))
        let many = try #require(
            RatioInterval(numerator: Self.samples(80, around: 3400, spread: 400), denominator: Self.samples(80, around: 55, spread: 8)))
        #expect(many.upper - many.lower < few.upper - few.lower, "\(few) vs \(many)")
        #expect(many.range.hasSuffix("x") && !many.range.contains(".00-"), "one decimal from 10x up: \(many.range)")
    }

    @Test func noSamplesOrANonPositiveDenominatorGiveNoInterval() {
        #expect(RatioInterval(numerator: [], denominator: [1]) == nil)
        #expect(RatioInterval(numerator: [1], denominator: []) == nil)
        #expect(RatioInterval(numerator: [1], denominator: [0]) == nil)
    }
}
