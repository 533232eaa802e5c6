import ArgumentParser
import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure kiln against the alternatives.", subcommands: [Startup.self, Memory.self, ServeBenchmark.self, Soak.self])

    struct Startup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cold start vs restore of a snapshot's service, interleaved, timed to first response.")

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "Cold starts and restores to run (each).")
        var runs: Int = 5

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            try await reporting(common) {
                let kiln = try common.openKiln(toDo: "measure start-up", keys: keys)
                let (manifest, verifyMs) = try kiln.loadVerified(name)
                let json = common.json
                let result = try await kiln.compareStartup(manifest, runs: runs) { line in
                    if !json { Output.progress(line) }
                }
                if common.json {
                    Output.printJSON(result)
                    return
                }
                func row(_ label: String, _ summary: SampleSummary) -> [String] {
                    [label, String(summary.count), Output.ms(summary.min), Output.ms(summary.median), Output.ms(summary.p90), Output.ms(summary.max)]
                }
                print("")
                print("Start-up of '\(manifest.name)' (\(manifest.sandbox.command.joined(separator: " "))), time to first HTTP 200 of \(manifest.readiness.path):")
                print(Output.table(["METHOD", "RUNS", "MIN", "MEDIAN", "P90", "MAX"], [
                    row("cold start (JVM in the kiln sandbox)", result.cold),
                    row("kiln restore (runc + CRIU)", result.restore),
                ]))
                print(String(format: "speed-up (median cold / median restore): %.1fx", result.speedup))
                print("snapshot: \(Output.bytes(manifest.sizeBytes)), verified in \(Output.ms(verifyMs)) before the restores; \(result.notes)")
            }
        }
    }
}

extension Bench {
    struct Memory: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Memory of N restored copies (with KSM) against one cold-started instance, and snapshot size with and without compaction.")

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "Copies to restore side by side.")
        var copies: Int = 8

        @Option(help: "Restores per snapshot variant for the restore-time comparison.")
        var restoreRuns: Int = 3

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            try await reporting(common) {
                let kiln = try common.openKiln(toDo: "measure memory", keys: keys)
                let (manifest, _) = try kiln.loadVerified(name)
                let json = common.json
                let report = try await kiln.benchmarkMemory(manifest, copies: copies, restoreRuns: restoreRuns) { line in
                    if !json { Output.progress(line) }
                }
                if json {
                    Output.printJSON(report)
                    return
                }
                let mib = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
                print("")
                print("Memory of '\(report.snapshot)': \(report.copies) restored copies sharing pages (KSM \(report.ksmTuning)) vs cold starts")
                print(Output.table(["WHAT", "PSS", "RSS"], [
                    ["1 cold-started instance (warmed up)", mib(report.coldInstance.pssBytes), mib(report.coldInstance.rssBytes)],
                    ["\(report.copies) cold-started instances (estimate: \(report.copies) x 1)", mib(report.coldInstance.pssBytes * Int64(report.copies)), mib(report.coldInstance.rssBytes * Int64(report.copies))],
                    ["\(report.copies) restored copies, right after restore", mib(report.restoredAtStart.pssBytes), mib(report.restoredAtStart.rssBytes)],
                    ["\(report.copies) restored copies, merged (after \(Int(report.convergenceSeconds)) s)", mib(report.restoredSettled.pssBytes), mib(report.restoredSettled.rssBytes)],
                ]))
                print(String(format: "total PSS of %d copies = %.2fx one cold instance (target <= 2x), %.0f%% of %d cold instances; ksmd CPU %.1f s",
                             report.copies, report.pssOverOneCold, report.pssOverAllCold * 100, report.copies, report.ksmdCPUSeconds))
                print("")
                print(Output.table(["SNAPSHOT", "COMPACTED", "COMPRESSED", "SIZE", "CHECKPOINT", "RESTORE MEDIAN", "RESTORES"], report.variants.map {
                    [$0.name, $0.compacted ? "yes" : "no", $0.compressed ? "zstd" : "no", mib($0.sizeBytes), Output.ms($0.checkpointMs), Output.ms($0.restore.median),
                     $0.restoreMs.map { String(format: "%.0f", $0) }.joined(separator: " ")]
                }))
                if let plain = report.variants.first(where: { !$0.compacted }) {
                    for variant in report.variants where variant.compacted {
                        print(String(format: "%@ = %.0f%% of the plain dump (target <= 50%%)", variant.name, 100 * Double(variant.sizeBytes) / Double(plain.sizeBytes)))
                    }
                    print("(the first restore of a compressed snapshot decompresses it into tmpfs; later ones read that copy)")
                }
            }
        }
    }

    struct Soak: AsyncParsableCommand {
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
            try await reporting(common) {
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
}
