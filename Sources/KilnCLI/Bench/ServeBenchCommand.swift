import ArgumentParser
import KilnBench
import KilnEngine

extension Bench {
    /// `kiln bench serve`: the gateway's cost: first request at zero instances against a bare
    /// restore, and throughput through kiln (and nginx) against straight into the instance.
    struct ServeBenchmark: AsyncParsableCommand, ReportingCommand, OwnsWhatItStarts {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "The gateway's cost: first request at zero instances vs a bare restore, and throughput through it vs direct.")

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "First-request-at-zero trials (each from zero instances), interleaved with bare restores.")
        var trials = 20

        @Option(name: .customLong("path"), help: "Path of the throughput runs, as the service sees it (repeatable; default /greet).")
        var paths: [String] = []

        @Option(help: "Concurrent keep-alive connections of the load generator (wrk).")
        var connections = 8

        @Option(help: "Seconds per throughput run.")
        var seconds = 5

        @Option(help: "Throughput rounds per path (each: the same load direct, through kiln and through nginx, the order rotating).")
        var rounds = 6

        @Flag(help: "Do not measure nginx as a reference proxy beside kiln.")
        var noReference = false

        @Option(
            name: .customLong("placement"),
            help: """
                Where the runs place the processes (repeatable; default both): isolated (the instance on half the cores, \
                the proxies and wrk on the others, as a function deployed with CPUs of its own) or shared (everything on every core).
                """)
        var placements: [CPUPlacement] = []

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            let kiln = try common.openKiln(toDo: "measure the gateway", keys: keys)
            let (manifest, _) = try kiln.loadVerified(name)
            let json = common.json
            let report = try await kiln.benchmarkGateway(
                manifest, trials: trials, loadPaths: paths.isEmpty ? ["/greet"] : paths, connections: connections, seconds: seconds,
                rounds: rounds, withReference: !noReference, placements: placements.isEmpty ? CPUPlacement.allCases : placements
            ) { line in
                if !json { Output.progress(line) }
            }
            if json {
                Output.printJSON(report)
                return
            }
            print(report.summary)
        }
    }
}

extension CPUPlacement: ExpressibleByArgument {}
