/// Summary statistics of a set of samples (milliseconds, usually): the one percentile type of
/// every benchmark.
///
/// Percentiles are nearest-rank (the smallest sample with at least that share of samples at or
/// below it); `median` is the mean of the middle two of an even count, as the startup comparison
/// has always reported it. Both are encoded, so reports keep their keys.
public struct SampleSummary: Codable, Sendable, Equatable {
    public var count: Int
    public var min: Double
    public var median: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var max: Double

    public init(_ samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        min = sorted.first ?? 0
        max = sorted.last ?? 0
        p50 = Self.nearestRank(0.5, of: sorted)
        p90 = Self.nearestRank(0.9, of: sorted)
        p99 = Self.nearestRank(0.99, of: sorted)
        if sorted.isEmpty {
            median = 0
        } else {
            let middle = sorted.count / 2
            median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        }
    }

    private enum CodingKeys: String, CodingKey { case count, min, median, p50, p90, p99, max }

    /// Reads reports written before the summaries were one type: the startup comparison's had
    /// `median` and no p50/p99, the gateway's and the soak's `p50` and `p99` and no median.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        count = try container.decode(Int.self, forKey: .count)
        min = try container.decode(Double.self, forKey: .min)
        max = try container.decode(Double.self, forKey: .max)
        p90 = try container.decode(Double.self, forKey: .p90)
        let p50 = try container.decodeIfPresent(Double.self, forKey: .p50)
        let median = try container.decodeIfPresent(Double.self, forKey: .median)
        guard let either = p50 ?? median else {
            throw DecodingError.keyNotFound(CodingKeys.p50, .init(codingPath: container.codingPath, debugDescription: "neither p50 nor median"))
        }
        self.p50 = p50 ?? either
        self.median = median ?? either
        p99 = try container.decodeIfPresent(Double.self, forKey: .p99) ?? max
    }

    /// The nearest-rank `quantile` (0...1) of samples sorted ascending; 0 for none.
    public static func nearestRank(_ quantile: Double, of sorted: [Double]) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((quantile * Double(sorted.count)).rounded(.up)) - 1
        return sorted[Swift.min(sorted.count - 1, Swift.max(0, rank))]
    }
}
