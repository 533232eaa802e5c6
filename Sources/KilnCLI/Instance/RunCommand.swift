import ArgumentParser
import KilnEngine
import KilnSystem

/// `kiln run`: verifies a snapshot, restores copies of it side by side and reports each one's
/// restore time and time to first response; the copies keep running after it exits.
struct Run: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Restore copies of a snapshot side by side and report each one's time to first response.")

    @Argument(help: "Snapshot name.")
    var name: String

    @Option(help: "Number of copies to restore.")
    var count: Int = 1

    @Option(help: "How many copies to restore at the same time.")
    var parallel: Int = 4

    @Option(
        help: ArgumentHelp(
            "Restore this many standby copies instead: each is frozen (right after its restore, before it gets its identity, unless --standby-mode ready) and uses no CPU until 'kiln thaw' hands it out.",
            valueName: "n"))
    var standby: Int?

    @Option(help: ArgumentHelp(StandbyMode.help, valueName: "mode"))
    var standbyMode: StandbyMode?

    @Option(help: "\(MemorySharingMode.help.abstract) Default: as the snapshot was baked.")
    var shareMemory: MemorySharingMode?

    /// Before `--share-memory mapped|ksm`, this turned KSM off for the copies.
    @Flag(help: .hidden)
    var noShareMemory = false

    @OptionGroup var networkOption: RestoreNetworkOption

    @OptionGroup var keys: KeyOptions

    @OptionGroup var common: CommonOptions

    struct Report: Encodable {
        var snapshot: String
        var verifyMs: Double
        /// Whether the files were trusted as verified before (unchanged since) rather than hashed.
        var verifyTrusted: Bool
        /// From the first restore's start to the last copy's first response.
        var wallMs: Double
        var instances: [InstanceRecord]
    }

    func run() async throws {
        let kiln = try common.openKiln(toDo: "restore a snapshot", keys: keys)
        guard (1...64).contains(parallel) else {
            throw KilnError(.invalidArgument, "--parallel \(parallel) is out of range", hint: "pass --parallel between 1 and 64")
        }
        let (manifest, verifyMs, trusted) = try kiln.loadVerifiedSaying(name)
        if !common.json {
            Output.progress(
                trusted
                    ? "verified \(manifest.files.count) image files (\(Output.bytes(manifest.sizeBytes))) in \(Output.ms(verifyMs)): unchanged since their last full check"
                    : "verified \(manifest.files.count) image files (\(Output.bytes(manifest.sizeBytes))) in \(Output.ms(verifyMs))")
        }
        if let standby, !(1...256).contains(standby) {
            throw KilnError(.invalidArgument, "cannot keep \(standby) standby copies", hint: "pass --standby between 1 and 256")
        }
        if let standby, count != 1 {
            throw KilnError(.invalidArgument, "--standby \(standby) and --count \(count) ask for two things", hint: "pass one of them")
        }
        if let standbyMode, standby == nil {
            throw KilnError(
                .invalidArgument, "--standby-mode \(standbyMode.rawValue) applies to standby copies only", hint: "add --standby N, or drop it")
        }
        let count = standby ?? count
        let started = ContinuousClock.now
        let merging = noShareMemory ? false : shareMemory?.mergesPages
        let records = try await kiln.restore(
            manifest, count: count, parallel: parallel, shareMemory: merging, network: networkOption.network,
            standby: standby.map { _ in standbyMode ?? .thaw })
        let wallMs = started.duration(to: .now).milliseconds
        if common.json {
            Output.printJSON(Report(snapshot: name, verifyMs: verifyMs, verifyTrusted: trusted, wallMs: wallMs, instances: records))
        } else if standby != nil {
            // What kiln did to each copy's memory before its freeze: a thaw-mode copy had its
            // first writes copied ahead, a ready one gave its JVM's free native memory back.
            let ready = standbyMode == .ready
            print(
                Output.table(
                    ["INSTANCE", "PID", "ADDRESS", "STATE", "RESTORE", "FROZEN AFTER", ready ? "NATIVE HEAP TRIMMED" : "COPIED AHEAD"],
                    records.map {
                        [
                            $0.id, String($0.pid), $0.address ?? "-", "standby", Output.ms($0.restoreMs), $0.frozenAfterMs.map(Output.ms) ?? "-",
                            ready ? $0.nativeHeapTrimmedBytes.map(Output.bytes) ?? "-" : $0.copiedAheadPages.map { "\($0) pages" } ?? "-",
                        ]
                    }))
            Output.progress(
                (standbyMode == .ready
                    ? "\(count) standby copies of '\(name)', restored with their identities and frozen ready to answer"
                    : "\(count) standby copies of '\(name)', frozen before their identities") + "; 'kiln thaw \(name)' hands one out")
        } else {
            print(
                Output.table(
                    ["INSTANCE", "PID", "ADDRESS", "RESTORE", "FIRST RESPONSE"],
                    records.map {
                        [$0.id, String($0.pid), $0.address ?? "-", Output.ms($0.restoreMs), Output.ms($0.firstResponseMs)]
                    }))
            if common.verbose {
                print(
                    Output.table(
                        ["INSTANCE", "PREPARE", "RUNC RESTORE", "(CRIU)", "IDENTITY", "AFTERRESTORE", "FIRST RESPONSE"],
                        records.compactMap { record in
                            record.phases.map { phases in
                                [
                                    record.id, Output.ms(phases.prepareMs), Output.ms(phases.runtimeMs), phases.criuRestoreMs.map(Output.ms) ?? "-",
                                    Output.ms(phases.identityMs), phases.afterRestoreMs.map(Output.ms) ?? "-", Output.ms(phases.firstResponseMs),
                                ]
                            }
                        }))
            }
            if count > 1 {
                Output.progress(
                    "\(count) copies, \(min(parallel, count)) at a time: all answering \(Output.ms(wallMs)) after the first restore began")
            }
        }
    }
}
