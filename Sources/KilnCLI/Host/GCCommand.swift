import ArgumentParser
import KilnEngine

/// `kiln gc`: removes what a crashed or killed kiln left behind: containers, cgroups, network
/// namespaces and directories of instances that are gone, and bakes that are no longer running.
struct GC: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove what a crashed or killed kiln left behind (running instances, and bakes and restores in progress, are kept).")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let kiln = try common.openKiln(toDo: "collect garbage")
        let report = try await kiln.collectGarbage()
        if common.json {
            Output.printJSON(report)
        } else if report.isEmpty {
            print("nothing to clean")
        } else {
            for (kind, items) in [
                ("instance", report.instances), ("container", report.containers), ("network namespace", report.networkNamespaces),
                ("directory", report.directories), ("cgroup", report.cgroups),
            ] {
                for item in items { print("removed \(kind) \(item)") }
            }
            for item in report.network {
                print("network: \(item)")
            }
        }
    }
}
