import ArgumentParser
import Foundation
import KilnBench
import KilnEngine

extension Bench {
    /// `kiln bench memory`: the memory of N restored copies sharing pages against cold-started
    /// instances, and the snapshot's size and restore time with and without compaction.
    struct Memory: AsyncParsableCommand, ReportingCommand {
        static let configuration = CommandConfiguration(
            abstract: "Memory of N restored copies (with KSM) against one cold-started instance, and snapshot size with and without compaction.")

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
            let mib = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
            print("")
            print("Memory of '\(report.snapshot)': \(report.copies) restored copies sharing pages (KSM \(report.ksmTuning)) vs cold starts")
            print(Output.table(["WHAT", "PSS", "RSS"], [
                ["1 cold-started instance (warmed up)", mib(report.coldInstance.pssBytes), mib(report.coldInstance.rssBytes)],
                ["\(report.copies) cold-started instances (estimate: \(report.copies) x 1)", mib(report.coldInstance.pssBytes * Int64(report.copies)), mib(report.coldInstance.rssBytes * Int64(report.copies))],
                ["\(report.copies) restored copies, right after restore", mib(report.restoredAtStart.pssBytes), mib(report.restoredAtStart.rssBytes)],
                ["\(report.copies) restored copies, merged (after \(Int(report.convergenceSeconds)) s)", mib(report.restoredSettled.pssBytes), mib(report.restoredSettled.rssBytes)],
            ]))
            print(String(format: "total PSS of %d copies = %.2fx one cold instance (target <= 2x), %.0f%% of %d cold instances; ksmd CPU %.1f s",
                         report.copies, report.pssOverOneCold, report.pssOverAllCold * 100, report.copies, report.ksmdCPUSeconds))
            print("")
            print(Output.table(["SNAPSHOT", "COMPACTED", "COMPRESSED", "SIZE", "CHECKPOINT", "RESTORE MEDIAN", "RESTORES"], report.variants.map {
                [$0.name, $0.compacted ? "yes" : "no", $0.compressed ? "zstd" : "no", mib($0.sizeBytes), Output.ms($0.checkpointMs), Output.ms($0.restore.median),
                 $0.restoreMs.map { String(format: "%.0f", $0) }.joined(separator: " ")]
            }))
            if let plain = report.variants.first(where: { !$0.compacted }) {
                for variant in report.variants where variant.compacted {
                    print(String(format: "%@ = %.0f%% of the plain dump (target <= 50%%)", variant.name, 100 * Double(variant.sizeBytes) / Double(plain.sizeBytes)))
                }
                print("(the first restore of a compressed snapshot decompresses it into tmpfs; later ones read that copy)")
            }
        }
    }
}
