import ArgumentParser
import KilnBench
import KilnEngine
import KilnSystem

extension Bench {
    /// `kiln bench soak`: the reliability soak: restore/request/stop cycles, then gateway load while
    /// instances are killed at random; fails on failed requests or leaked resources.
    struct Soak: AsyncParsableCommand, ReportingCommand, OwnsWhatItStarts {
        static let configuration = CommandConfiguration(
            commandName: "soak",
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
                requestPath: path
            ) { line in
                if !json { Output.progress(line) }
            }
            if json {
                Output.printJSON(report)
            } else {
                print(report.summary)
            }
            if !report.passed {
                throw KilnError(.runtimeFailed, "the soak found failures or leaks (see above)")
            }
        }
    }
}
