import ArgumentParser
import KilnBench
import KilnEngine

extension Bench {
    /// `kiln bench standby`: standby copies against restores, through the gateway, and in memory.
    struct Standby: AsyncParsableCommand, ReportingCommand, OwnsWhatItStarts {
        static let configuration = CommandConfiguration(
            commandName: "standby",
            abstract:
                "Standby copies: thaw vs restore to first response, a first request through kiln serve at zero with one standby vs a warm instance, and the memory of N frozen copies vs one cold-started instance."
        )

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "Thaws, restores and first requests at zero to measure (each).")
        var runs: Int = 10

        @Option(help: "Standby copies whose memory is measured side by side.")
        var copies: Int = 8

        @Option(help: "Path requested through the gateway (default: the snapshot's readiness path).")
        var path: String?

        @Flag(help: "Skip the measurement through kiln serve.")
        var noGateway = false

        @Option(help: ArgumentHelp(StandbyMode.help, valueName: "mode"))
        var standbyMode: StandbyMode = .thaw

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            let kiln = try common.openKiln(toDo: "measure standby copies", keys: keys)
            let (manifest, _) = try kiln.loadVerified(name)
            let json = common.json
            let report = try await kiln.benchmarkStandby(manifest, runs: runs, copies: copies, path: path, gateway: !noGateway, mode: standbyMode) {
                line in
                if !json { Output.progress(line) }
            }
            if json {
                Output.printJSON(report)
            } else {
                print(report.summary)
            }
        }
    }
}
