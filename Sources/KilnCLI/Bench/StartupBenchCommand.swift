import ArgumentParser
import KilnBench
import KilnEngine

extension Bench {
    /// `kiln bench startup`: cold start against restore of one snapshot's service, interleaved, each
    /// timed to its first response.
    struct Startup: AsyncParsableCommand, ReportingCommand, OwnsWhatItStarts {
        static let configuration = CommandConfiguration(
            commandName: "startup",
            abstract: "Cold start vs restore of a snapshot's service, interleaved, timed to first response.")

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "Cold starts and restores to run (each).")
        var runs: Int = 5

        @Option(
            name: .customLong("versus"),
            help: ArgumentHelp(
                "Also restore snapshot OTHER in the same run, interleaved (e.g. the same service baked --no-agent), and print the difference of the medians.",
                valueName: "OTHER"))
        var versus: String?

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            let kiln = try common.openKiln(toDo: "measure start-up", keys: keys)
            let (manifest, verifyMs) = try kiln.loadVerified(name)
            let json = common.json
            let other = try versus.map { try kiln.loadVerified($0).0 }
            let result = try await kiln.compareStartup(manifest, runs: runs, versus: other) { line in
                if !json { Output.progress(line) }
            }
            if common.json {
                Output.printJSON(result)
                return
            }
            func row(_ label: String, _ summary: SampleSummary) -> [String] {
                [label, String(summary.count), Output.ms(summary.min), Output.ms(summary.median), Output.ms(summary.p90), Output.ms(summary.max)]
            }
            print("")
            print(
                "Start-up of '\(manifest.name)' (\(manifest.sandbox.command.joined(separator: " "))), time to first HTTP 200 of \(manifest.readiness.path):"
            )
            var rows = [row("cold start (JVM in the kiln sandbox)", result.cold)]
            if let network = result.network, let loopback = result.restoreLoopback {
                rows.append(row("kiln restore, --network \(network) (prepared namespace)", result.restore))
                rows.append(row("kiln restore, --network none", loopback))
            } else {
                rows.append(row("kiln restore (runc + CRIU)", result.restore))
            }
            if let other, let summary = result.restoreVersus {
                rows.append(row("kiln restore of '\(other.name)'\(other.sandbox.agent == nil ? " (no agent)" : "")", summary))
            }
            if let summary = result.afterRestore {
                rows.append(row("  of which the agent's afterRestore", summary))
            }
            print(Output.table(["METHOD", "RUNS", "MIN", "MEDIAN", "P90", "MAX"], rows))
            // Where the restores spent their time: what a difference between the two is made of.
            var phaseRows: [[String]] = []
            for (label, phases) in [(manifest.name, result.restorePhases), (other?.name ?? "", result.restoreVersusPhases)] {
                guard let phases, !phases.isEmpty else { continue }
                func median(_ value: (RestorePhases) -> Double?) -> String {
                    let values = phases.compactMap(value)
                    return values.isEmpty ? "-" : Output.ms(SampleSummary(values).median)
                }
                phaseRows.append([
                    label, median(\.prepareMs), median(\.runtimeMs), median(\.criuRestoreMs), median(\.identityMs), median(\.afterRestoreMs),
                    median(\.firstResponseMs),
                ])
            }
            if !phaseRows.isEmpty {
                print("")
                print("Phases of those restores (medians):")
                print(Output.table(["SNAPSHOT", "PREPARE", "RUNC + CRIU", "OF WHICH CRIU", "IDENTITY", "AFTERRESTORE", "FIRST RESPONSE"], phaseRows))
            }
            if let difference = result.versusDifferenceMs, let other = result.versus {
                print(String(format: "difference (median '%@' - median '%@'): %+.1f ms", manifest.name, other, difference))
            }
            if let cost = result.networkCostMs, let network = result.network {
                print(String(format: "network cost (median --network %@ - median --network none): %+.1f ms", network, cost))
            }
            print(
                String(format: "speed-up (median cold / median restore): %.1fx", result.speedup)
                    + (result.speedupInterval.map { " (\($0.levelPercent) interval \($0.range), resampling the runs)" } ?? ""))
            print("snapshot: \(Output.bytes(manifest.sizeBytes)), verified in \(Output.ms(verifyMs)) before the restores; \(result.notes)")
        }
    }
}
