import ArgumentParser
import KilnEngine

/// `kiln stop`: stops instances (or all of them) and removes their containers, cgroups, network
/// namespaces and directories.
struct Stop: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop instances and remove everything they had.")

    @Argument(help: "Instance ids (or unique prefixes).")
    var instances: [String] = []

    @Flag(help: "Stop every instance.")
    var all = false

    @OptionGroup var common: CommonOptions

    func validate() throws {
        if instances.isEmpty && !all { throw ValidationError("name the instances to stop, or pass --all") }
    }

    func run() async throws {
        let kiln = try common.openKiln(toDo: "stop instances")
        let records = all ? kiln.instanceRecords() : try instances.map { try kiln.instance($0) }
        for record in records { try await kiln.stop(record) }
        if common.json {
            Output.printJSON(["stopped": records.map(\.id)])
        } else {
            for record in records { print("stopped \(record.id)") }
        }
    }
}
