import ArgumentParser
import Foundation
import KilnEngine

/// `kiln ls`: the snapshots in the store, with their size, port, cold start, key and command. Needs
/// neither CRIU nor runc.
struct List: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List snapshots.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let snapshots = try common.openStore(toDo: "list snapshots").snapshots()
        if common.json {
            Output.printJSON(["snapshots": snapshots])
        } else {
            let formatter = ISO8601DateFormatter()
            print(
                Output.table(
                    ["SNAPSHOT", "CREATED", "SIZE", "PORT", "COLD START", "KEY", "IMAGE", "COMMAND"],
                    snapshots.map {
                        [
                            $0.name, formatter.string(from: $0.createdAt), Output.bytes($0.sizeBytes), String($0.sandbox.port),
                            Output.ms($0.timings.coldStartMs), $0.encryption?.keyID ?? "-",
                            $0.image.map { "\($0.reference)@\($0.manifestDigest.prefix(19))" } ?? "-", $0.sandbox.command.joined(separator: " "),
                        ]
                    }))
        }
    }
}
