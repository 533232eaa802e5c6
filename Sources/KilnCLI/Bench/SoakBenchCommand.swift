import ArgumentParser
import Foundation
import KilnBench
import KilnEngine
import KilnSystem

extension Bench {
    /// `kiln bench soak`: the reliability soak: restore/request/stop cycles, then gateway load while
    /// instances are killed at random; fails on failed requests or leaked resources.
    struct Soak: AsyncParsableCommand, ReportingCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reliability soak: restore/stop cycles, then gateway load with instances killed at random; failures and leaks.")

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "Restore/request/stop cycles.")
        var cycles: Int = 1000

        @Option(help: "Seconds of load through the gateway while instances are killed.")
        var loadSeconds: Double = 600

        @Option(help: "Seconds between two kills (SIGKILL of a random instance).")
        var killEvery: Double = 5

        @Option(help: "Concurrent keep-alive connections of the load.")
        var connections: Int = 8

        @Option(help: "Path each cycle and the load request.")
        var path: String = "/greet"

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func validate() throws {
            // Before `Duration` sees it: it traps on infinity and NaN.
            guard (0.1...3600).contains(killEvery) else { throw ValidationError("--kill-every takes 0.1 to 3600 seconds, not \(killEvery)") }
        }

        func run() async throws {
            let kiln = try common.openKiln(toDo: "soak-test", keys: keys)
            let (manifest, _) = try kiln.loadVerified(name)
            let json = common.json
            let report = try await kiln.soak(
                manifest, cycles: cycles, loadSeconds: loadSeconds, connections: connections, killInterval: .milliseconds(killEvery * 1000),
                requestPath: path) { line in
                if !json { Output.progress(line) }
            }
            if json {
                Output.printJSON(report)
            } else {
                let c = report.cycles
                print(String(format: "cycles: %d restore/request/stop, %d failed, %.0f s; first response p50 %.0f ms, p99 %.0f ms, max %.0f ms",
                             c.count, c.failures, c.seconds, c.firstResponse.p50, c.firstResponse.p99, c.firstResponse.max))
                for error in c.errors { print("  \(error)") }
                let l = report.load
                print(String(format: "load: %.0f s, %d connections, %d requests, %d ok; %d kills, %d restores; failed: %d in flight to a killed instance, %d other (target 0); %d cold-start fallbacks",
                             l.seconds, l.connections, l.requests, l.ok, l.kills, l.launches, l.failedInFlightToKilled, l.failedOther, l.coldStartFallbacks))
                for error in l.otherErrors { print("  \(error)") }
                func row(_ label: String, _ r: HostResources) -> [String] {
                    [label, String(r.processes), String(r.containers), String(r.networkNamespacePins), String(r.cgroups), String(r.mounts),
                     String(r.instanceDirectories), String(r.zombies), String(r.openFileDescriptors), Output.bytes(r.residentBytes)]
                }
                print(Output.table(["WHEN", "PROCS", "CONTAINERS", "NETNS", "CGROUPS", "MOUNTS", "INSTANCE DIRS", "ZOMBIES", "FDS", "KILN RSS"], [
                    row("start", report.atStart), row("after cycles", report.afterCycles), row("end", report.atEnd),
                ]))
                print(report.leaks.isEmpty ? "leaks: none" : "leaks: \(report.leaks.joined(separator: "; "))")
            }
            if report.cycles.failures > 0 || report.load.failedOther > 0 || !report.leaks.isEmpty {
                throw KilnError(.runtimeFailed, "the soak found failures or leaks (see above)")
            }
        }
    }
}
