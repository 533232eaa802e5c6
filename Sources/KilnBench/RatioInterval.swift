/// How far one run's ratio of two medians can be trusted: a percentile bootstrap interval.
///
/// A benchmark's verdict is a ratio of two medians measured side by side (a request at zero
/// against a warm one, a cold start against a restore). On a shared 2-core machine either median
/// moves by a fair share from run to run, so a ratio of 2.03 against a target of at most 2 says
/// little by itself. The interval resamples each side's runs with replacement, independently,
/// takes the ratio of the two resampled medians each time, and keeps the middle `level` of
/// those ratios: when the whole interval lies on one side of a target, the run decides it; when
/// it straddles the target, the run does not, and more runs (or a quieter machine) would.
///
/// The resampling is seeded, so the same samples always give the same interval (reports can be
/// compared and printed again).
public struct RatioInterval: Codable, Sendable, Equatable {
    public var lower: Double
    public var upper: Double
    /// The share of resampled ratios inside the interval (0.95).
    public var level: Double
    public var resamples: Int

    /// What the interval says of a target: the run shows it met, shows it missed, or cannot tell.
    public enum Verdict: Sendable {
        case met, missed, undecided

        /// What a report says after the interval.
        public var words: String {
            switch self {
            case .met: "met in this run"
            case .missed: "missed in this run"
            case .undecided: "this run does not decide it"
            }
        }
    }

    /// The interval of `center(numerator) / center(denominator)`; nil when either side has no
    /// sample or a resampled denominator is not positive.
    public init?(
        numerator: [Double], denominator: [Double], center: ([Double]) -> Double = { SampleSummary($0).p50 }, level: Double = 0.95,
        resamples: Int = 2000, seed: UInt64 = 0x6B69_6C6E
    ) {
        guard !numerator.isEmpty, !denominator.isEmpty, resamples > 0, level > 0, level < 1 else { return nil }
        var generator = SplitMix64(seed: seed)
        func resample(_ samples: [Double]) -> [Double] {
            samples.indices.map { _ in samples[Int(generator.next() % UInt64(samples.count))] }
        }
        var ratios: [Double] = []
        ratios.reserveCapacity(resamples)
        for _ in 0..<resamples {
            let top = center(resample(numerator))
            let bottom = center(resample(denominator))
            guard bottom > 0 else { return nil }
            ratios.append(top / bottom)
        }
        ratios.sort()
        let tail = (1 - level) / 2
        lower = SampleSummary.nearestRank(tail, of: ratios)
        upper = SampleSummary.nearestRank(1 - tail, of: ratios)
        self.level = level
        self.resamples = resamples
    }

    /// Against a target of at most `limit`.
    public func verdict(atMost limit: Double) -> Verdict {
        upper <= limit ? .met : lower > limit ? .missed : .undecided
    }

    /// Against a target of at least `limit`.
    public func verdict(atLeast limit: Double) -> Verdict {
        lower >= limit ? .met : upper < limit ? .missed : .undecided
    }

    /// "1.62-2.51x" (one decimal from 10x up), the way the reports print a ratio.
    public var range: String {
        upper >= 10 ? String(format: "%.1f-%.1fx", lower, upper) : String(format: "%.2f-%.2fx", lower, upper)
    }

    /// "95%".
    public var levelPercent: String { "\(Int((level * 100).rounded()))%" }
}

/// Steele, Lea and Flood's SplitMix64 (2014): small, seedable and good enough to resample with
/// (and, in the tests, to seed the fuzzers). Swift's own generator cannot be seeded.
package struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    package init(seed: UInt64) { state = seed }

    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
