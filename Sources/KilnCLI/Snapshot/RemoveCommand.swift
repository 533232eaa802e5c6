import ArgumentParser
import KilnEngine
import KilnSystem

/// `kiln rm`: removes a snapshot (refused while copies of it run, unless --force stops them first).
/// Needs neither CRIU nor runc, unless it has instances to stop.
struct Remove: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a snapshot.")

    @Argument(help: "Snapshot name.")
    var name: String

    @Flag(help: "Also stop the instances restored from it.")
    var force = false

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let kiln = try common.openStore(toDo: "remove snapshot '\(name)'")
        let running = kiln.instanceRecords().filter { $0.snapshot == name }
        if !running.isEmpty {
            guard force else {
                throw KilnError(
                    .snapshotInUse, "snapshot '\(name)' has \(running.count) running instance(s): \(running.map(\.id).joined(separator: ", "))",
                    hint: "stop them first ('kiln stop ...') or pass --force")
            }
            try await kiln.stop(running, toDo: "stop the instances of snapshot '\(name)'")
        }
        try kiln.removeSnapshot(name)
        if common.json { Output.printJSON(["removed": name]) } else { print("removed \(name)") }
    }
}
