import ArgumentParser
import KilnEngine
import KilnSystem

/// `kiln thaw`: hands out one standby copy of a snapshot (made by `kiln run --standby N`): thaws
/// it, gives it its identity (hostname, instance id, the agent's afterRestore: DNS, random
/// reseed, clock; a `--standby-mode ready` copy had them at its restore) and waits for its
/// first response.
struct Thaw: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "thaw",
        abstract: "Thaw one standby copy of a snapshot (from 'kiln run --standby N') and report its time to first response.",
        discussion: """
            The oldest standby copy nobody else is thawing is taken. It gets its identity only now (a copy \
            restored with --standby-mode ready got it at its restore and only resumes), so two thawed copies \
            never share a hostname, instance id or random state. It is then an ordinary running instance \
            ('kiln ps', 'kiln stop').
            """)

    @Argument(help: "Snapshot name.")
    var name: String

    @Option(help: "Seconds the thawed copy may take to answer its readiness path.")
    var readyTimeout: Double = 30

    @OptionGroup var common: CommonOptions

    func run() async throws {
        guard InputValidation.isSeconds(readyTimeout) else {
            throw KilnError(.invalidArgument, "--ready-timeout \(readyTimeout) is out of range", hint: "pass seconds, e.g. --ready-timeout 30")
        }
        let kiln = try common.openKiln(toDo: "thaw a standby copy")
        // The copy is in memory already (verified when it was restored): no image file is read.
        let manifest = try kiln.store.load(name)
        guard let standby = kiln.claimStandby(of: name) else {
            throw KilnError(
                .instanceNotFound, "no standby copy of '\(name)' is left to thaw", hint: "'kiln run \(name) --standby N' restores N of them")
        }
        let record = try await kiln.thaw(standby, manifest: manifest, readinessTimeout: .milliseconds(Int(readyTimeout * 1000)))
        if common.json {
            Output.printJSON(record)
        } else {
            print(
                Output.table(
                    ["INSTANCE", "PID", "ADDRESS", "PORT", "THAW TO FIRST RESPONSE"],
                    [[record.id, String(record.pid), record.address ?? "-", String(record.port), record.thawMs.map(Output.ms) ?? "-"]]))
        }
    }
}
