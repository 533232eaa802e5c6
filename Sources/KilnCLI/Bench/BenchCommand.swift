import ArgumentParser

/// `kiln bench`: the benchmarks, one subcommand each (Bench/*.swift); their logic lives in KilnBench.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure kiln against the alternatives.", subcommands: [Startup.self, Memory.self, ServeBenchmark.self, Soak.self, Standby.self])
}
