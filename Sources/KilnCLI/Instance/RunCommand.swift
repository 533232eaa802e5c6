import ArgumentParser
import KilnEngine

/// `kiln run`: verifies a snapshot, restores copies of it side by side and reports each one's
/// restore time and time to first response; the copies keep running after it exits.
struct Run: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(abstract: "Restore copies of a snapshot side by side and report each one's time to first response.")

    @Argument(help: "Snapshot name.")
    var name: String

    @Option(help: "Number of copies to restore.")
    var count: Int = 1

    @Flag(inversion: .prefixedNo, help: "Share identical memory pages between copies through KSM (default: as the snapshot was baked).")
    var shareMemory: Bool?

    @OptionGroup var keys: KeyOptions

    @OptionGroup var common: CommonOptions

    struct Report: Encodable {
        var snapshot: String
        var verifyMs: Double
        var instances: [InstanceRecord]
    }

    func run() async throws {
        let kiln = try common.openKiln(toDo: "restore a snapshot", keys: keys)
        let (manifest, verifyMs) = try kiln.loadVerified(name)
        if !common.json { Output.progress("verified \(manifest.files.count) image files (\(Output.bytes(manifest.sizeBytes))) in \(Output.ms(verifyMs))") }
        let records = try await kiln.restore(manifest, count: count, shareMemory: shareMemory)
        if common.json {
            Output.printJSON(Report(snapshot: name, verifyMs: verifyMs, instances: records))
        } else {
            print(Output.table(["INSTANCE", "PID", "RESTORE", "FIRST RESPONSE"], records.map { [$0.id, String($0.pid), Output.ms($0.restoreMs), Output.ms($0.firstResponseMs)] }))
        }
    }
}
