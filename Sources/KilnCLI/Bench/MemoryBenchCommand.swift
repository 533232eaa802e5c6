import ArgumentParser
import KilnBench
import KilnEngine

extension Bench {
    /// `kiln bench memory`: the memory of N restored copies sharing pages against cold-started
    /// instances, and the snapshot's size and restore time with and without compaction.
    struct Memory: AsyncParsableCommand, ReportingCommand, OwnsWhatItStarts {
        static let configuration = CommandConfiguration(
            commandName: "memory",
            abstract:
                "Memory of N restored copies sharing only their mapped pages against one copy, then with KSM against one cold-started instance; snapshot size and restore time with and without compaction."
        )

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "Copies to restore side by side.")
        var copies: Int = 8

        @Option(help: "Restores per snapshot variant for the restore-time comparison.")
        var restoreRuns: Int = 3

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            let kiln = try common.openKiln(toDo: "measure memory", keys: keys)
            let (manifest, _) = try kiln.loadVerified(name)
            let json = common.json
            let report = try await kiln.benchmarkMemory(manifest, copies: copies, restoreRuns: restoreRuns) { line in
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
