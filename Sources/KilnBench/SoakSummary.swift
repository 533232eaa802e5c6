import Foundation

extension SoakReport {
    /// The report as text: the cycles, the load with its kills and failures, the host's resources
    /// at the start, after the cycles and at the end, and the leaks.
    public var summary: String {
        var lines: [String] = []
        let c = cycles
        lines.append(
            String(
                format: "cycles: %d restore/request/stop, %d failed, %.0f s; first response p50 %.0f ms, p99 %.0f ms, max %.0f ms",
                c.count, c.failures, c.seconds, c.firstResponse.p50, c.firstResponse.p99, c.firstResponse.max))
        for error in c.errors { lines.append("  \(error)") }
        let l = load
        lines.append(
            String(
                format:
                    "load: %.0f s, %d connections, %d requests, %d ok; %d kills, %d restores; failed: %d in flight to a killed instance, %d other (target 0); %d cold-start fallbacks",
                l.seconds, l.connections, l.requests, l.ok, l.kills, l.launches, l.failedInFlightToKilled, l.failedOther, l.coldStartFallbacks))
        for error in l.otherErrors { lines.append("  \(error)") }
        func row(_ label: String, _ r: HostResources) -> [String] {
            [
                label, String(r.processes), String(r.containers), String(r.networkNamespacePins), String(r.cgroups), String(r.mounts),
                String(r.instanceDirectories), String(r.zombies), String(r.openFileDescriptors), ReportText.bytes(r.residentBytes),
            ]
        }
        lines.append(
            ReportText.table(
                ["WHEN", "PROCS", "CONTAINERS", "NETNS", "CGROUPS", "MOUNTS", "INSTANCE DIRS", "ZOMBIES", "FDS", "KILN RSS"],
                [
                    row("start", atStart), row("after cycles", afterCycles), row("end", atEnd),
                ]))
        lines.append(leaks.isEmpty ? "leaks: none" : "leaks: \(leaks.joined(separator: "; "))")
        return lines.joined(separator: "\n")
    }

    /// Whether the soak passed: no failed cycle, no failed request other than those in flight to
    /// a killed instance, no leak.
    public var passed: Bool { cycles.failures == 0 && load.failedOther == 0 && leaks.isEmpty }
}
