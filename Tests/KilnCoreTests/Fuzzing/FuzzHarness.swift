import Foundation
import KilnBench
import Testing

/// A small deterministic fuzzer for kiln's parsers: seeded inputs (corpus mutations and
/// generated ones) run through a check that throws ``InvariantViolation`` when the parser's
/// contract breaks. A crash is a failure too: it ends the test process, so the run's seed is
/// printed first and `KILN_FUZZ_TRACE=1` prints every input's seed before it runs.
///
/// Environment:
/// - `KILN_FUZZ_LONG=1` (`make fuzz`): each target's own number of inputs, ~180,000 in all, ~20 s
///   for the whole suite in a debug build. Without it (`make test`) a 25th of that: the corpus
///   and a few thousand generated inputs, about a second.
/// - `KILN_FUZZ_ITERATIONS=N`: exactly N inputs per target.
/// - `KILN_FUZZ_SEED=0x...`: the first input's seed (default: derived from the target's name, so
///   CI runs are reproducible). A failure names its input's seed; with `KILN_FUZZ_ITERATIONS=1`
///   that seed replays exactly that input.
/// - `KILN_FUZZ_TRACE=1`: print each input's seed before checking it (to find a crashing one).
struct Fuzzer {
    /// How much shorter the default (`make test`) run is than `make fuzz`.
    static let quickDivisor = 25

    var target: String
    var iterations: Int
    var seed: UInt64
    var trace: Bool

    init(_ target: String, iterations defaultIterations: Int, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.target = target
        let quick = max(1, defaultIterations / Self.quickDivisor)
        iterations = environment["KILN_FUZZ_ITERATIONS"].flatMap { Int($0) } ?? (environment["KILN_FUZZ_LONG"] == "1" ? defaultIterations : quick)
        seed = environment["KILN_FUZZ_SEED"].flatMap(Self.parseSeed) ?? Self.fnv1a(target)
        trace = environment["KILN_FUZZ_TRACE"] == "1"
    }

    /// Runs `check` on each of `seeds` as it is (the corpus: regressions stay fixed), then on
    /// `iterations` generated inputs; records a failure (seed, input, how to replay) for each
    /// broken invariant, up to `maxFailures`.
    ///
    /// It yields every few inputs: the tests share Swift Concurrency's few threads with the other
    /// unit tests, whose timeouts a long loop that never suspended would starve.
    func run<Input>(
        seeds: [Input] = [], maxFailures: Int = 3, generate: (inout FuzzRandom) -> Input, describe: (Input) -> String,
        sourceLocation: SourceLocation = #_sourceLocation, check: (Input) async throws -> Void
    ) async {
        for (index, seed) in seeds.enumerated() {
            do {
                try await check(seed)
            } catch {
                Issue.record(
                    "fuzz target '\(target)' broke on corpus seed \(index): \(error)\n  input: \(Self.excerpt(describe(seed)))",
                    sourceLocation: sourceLocation)
            }
        }
        var failures = 0
        for (iteration, inputSeed) in inputSeeds() {
            if iteration % 32 == 0 { await Task.yield() }
            var random = FuzzRandom(seed: inputSeed)
            let input = generate(&random)
            do {
                try await check(input)
            } catch {
                failures += 1
                record(error, iteration: iteration, seed: inputSeed, input: describe(input), at: sourceLocation)
                if failures >= maxFailures { return }
            }
        }
    }

    /// The seed of each input: the run's seed first (so a failing input's seed, given as the
    /// run's seed, replays it first), then a SplitMix64 stream from it. Printed as they go when
    /// tracing, since a crash leaves no other trace of the input that caused it.
    private func inputSeeds() -> some Sequence<(Int, UInt64)> {
        print("fuzz \(target): \(iterations) inputs from seed \(Self.hex(seed))")
        var stream = SplitMix64(seed: seed)
        return (0..<iterations).lazy.map { [trace, target] iteration in
            let inputSeed = iteration == 0 ? seed : stream.next()
            if trace { print("fuzz \(target): input \(iteration), seed \(Self.hex(inputSeed))") }
            return (iteration, inputSeed)
        }
    }

    private func record(_ error: any Error, iteration: Int, seed: UInt64, input: String, at sourceLocation: SourceLocation) {
        Issue.record(
            """
            fuzz target '\(target)' broke at input \(iteration), seed \(Self.hex(seed)): \(error)
              input: \(Self.excerpt(input))
              replay: KILN_FUZZ_SEED=\(Self.hex(seed)) KILN_FUZZ_ITERATIONS=1 swift test --filter Fuzz
            """, sourceLocation: sourceLocation)
    }

    static func hex(_ seed: UInt64) -> String { "0x" + String(seed, radix: 16) }

    static func parseSeed(_ text: String) -> UInt64? {
        text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
    }

    /// FNV-1a: a stable default seed per target (Swift's `hashValue` changes every run).
    static func fnv1a(_ text: String) -> UInt64 {
        text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }

    /// An input as a Swift string literal would show it (escapes visible), cut to a readable size.
    static func excerpt(_ text: String, limit: Int = 600) -> String {
        let escaped = text.unicodeScalars.map { $0.escaped(asASCII: false) }.joined()
        return escaped.count <= limit ? "\"\(escaped)\"" : "\"\(escaped.prefix(limit))\"... (\(text.utf8.count) bytes)"
    }
}

/// A broken contract, named: what the parser did and what it should have done.
struct InvariantViolation: Error, CustomStringConvertible {
    var description: String
}

/// Throws an ``InvariantViolation`` saying `message` unless `condition` holds.
func invariant(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw InvariantViolation(description: message()) }
}

/// xoshiro256** (Blackman, Vigna 2018): fast, small, and the same sequence on every platform
/// for a seed, unlike `SystemRandomNumberGenerator`.
struct FuzzRandom: RandomNumberGenerator {
    private var s0, s1, s2, s3: UInt64

    init(seed: UInt64) {
        var mix = SplitMix64(seed: seed)
        (s0, s1, s2, s3) = (mix.next(), mix.next(), mix.next(), mix.next())
    }

    mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// 0..<bound (bound > 0).
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// True once in `denominator` draws, on average.
    mutating func oneIn(_ denominator: Int) -> Bool { below(denominator) == 0 }

    mutating func pick<T>(_ choices: [T]) -> T { choices[below(choices.count)] }
}
