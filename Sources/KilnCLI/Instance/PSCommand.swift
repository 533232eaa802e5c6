import ArgumentParser
import Foundation
import KilnEngine
import KilnSystem

/// `kiln ps`: the instances kiln has records of, with their state and memory. Needs neither CRIU
/// nor runc (without runc, the state comes from /proc).
struct PS: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List instances: id, snapshot, pid, state, age, memory.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let kiln = try common.openStore(toDo: "list instances")
        let rows = try await kiln.status()
        if common.json {
            let totals = Dictionary(grouping: rows, by: \.snapshot).mapValues { group in group.reduce(MemoryUsage.zero) { $0 + $1.memory } }
            Output.printJSON(["instances": AnyEncodable(rows), "totals": AnyEncodable(totals)])
        } else {
            print(
                Output.table(
                    ["INSTANCE", "SNAPSHOT", "PID", "ADDRESS", "STATE", "AGE", "RSS", "PSS", "SHARED", "MERGED"],
                    rows.map {
                        [
                            $0.id, $0.snapshot, String($0.pid), $0.address ?? "-", $0.state, String(format: "%.0fs", $0.ageSeconds),
                            Output.bytes($0.memory.rssBytes), Output.bytes($0.memory.pssBytes), Output.bytes($0.memory.sharedBytes),
                            $0.sharesMemory ? Output.bytes($0.memory.mergedBytes) : "off",
                        ]
                    }))
            for (snapshot, group) in Dictionary(grouping: rows, by: \.snapshot).sorted(by: { $0.key < $1.key }) where group.count > 1 {
                let total = group.reduce(MemoryUsage.zero) { $0 + $1.memory }
                print("total \(snapshot) (\(group.count) copies): RSS \(Output.bytes(total.rssBytes)), PSS \(Output.bytes(total.pssBytes))")
            }
        }
    }
}
