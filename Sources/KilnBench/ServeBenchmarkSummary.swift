import Foundation

extension ServeBenchmarkReport {
    /// The report as text: the first-request table, each round's rates, the medians with the
    /// overheads and CPU per request, and whether each placement met the overhead target.
    public var summary: String {
        var lines: [String] = []
        func row(_ label: String, _ p: SampleSummary) -> [String] {
            [label, String(p.count), ReportText.ms(p.min), ReportText.ms(p.p50), ReportText.ms(p.p99), ReportText.ms(p.max)]
        }
        func percent(_ value: Double?) -> String { value.map { String(format: "%.1f%%", $0 * 100) } ?? "-" }
        func cpu(_ value: Double?) -> String { value.map { String(format: "%.3f ms", $0) } ?? "-" }
        func cores(_ list: [Int]) -> String { list.map(String.init).joined(separator: ",") }
        func rate(_ run: ServeBenchmarkReport.Run?) -> String {
            guard let run else { return "-" }
            return String(format: "%.0f", run.requestsPerSecond) + (run.errors > 0 ? " (\(run.errors) errors)" : "")
        }
        lines.append("")
        lines.append("First request to '\(snapshot)' at zero instances (GET \(firstRequestPath)), each trial from zero:")
        lines.append(
            ReportText.table(
                ["WHAT", "TRIALS", "MIN", "P50", "P99", "MAX"],
                [
                    row("bare restore (restoreOne to first 2xx)", bareRestore),
                    row("first request through the gateway", firstRequest),
                ]))
        lines.append(String(format: "first request p50 / bare restore p50 = %.2fx (target <= 3x)", firstRequestOverRestore))
        lines.append("")
        lines.append("Steady state, one instance, \(client) per run, after \(Int(warmupSeconds)) s of warm-up; reference proxy: \(reference).")
        lines.append("Requests per second, straight into the instance and through each proxy:")
        var rows: [[String]] = []
        for path in paths {
            for (placementIndex, placement) in path.placements.enumerated() {
                for (index, round) in placement.rounds.enumerated() {
                    rows.append([
                        placementIndex == 0 && index == 0 ? path.path : "", index == 0 ? placement.placement.rawValue : "", String(index + 1),
                        rate(round.direct), rate(round.gateway), rate(round.nginx),
                    ])
                }
            }
        }
        lines.append(ReportText.table(["PATH", "PLACEMENT", "ROUND", "DIRECT", "KILN", "NGINX"], rows))
        lines.append("Median of rounds (overhead: 1 - proxy/direct requests per second in the same round; CPU: per request):")
        lines.append(
            ReportText.table(
                ["PATH", "PLACEMENT", "INSTANCE CORES", "KILN OVERHEAD", "NGINX OVERHEAD", "KILN CPU", "NGINX CPU", "SERVICE CPU"],
                paths.flatMap { path in
                    path.placements.map { result in
                        [
                            path.path, result.placement.rawValue, cores(result.instanceCores), percent(result.gatewayOverhead),
                            percent(result.nginxOverhead),
                            cpu(result.gatewayCpuMsPerRequest), cpu(result.nginxCpuMsPerRequest), cpu(result.instanceCpuMsPerRequest),
                        ]
                    }
                }))
        for placement in CPUPlacement.allCases {
            let results = paths.flatMap { path in path.placements.filter { $0.placement == placement }.map { (path.path, $0) } }
            guard !results.isEmpty else { continue }
            lines.append("\(placement.rawValue): \(placement.summary)")
            for (path, result) in results {
                lines.append(
                    "  target: gateway overhead <= 15% of throughput on \(path): \(result.gatewayOverhead <= 0.15 ? "met" : "not met") "
                        + "(kiln \(percent(result.gatewayOverhead)), nginx \(percent(result.nginxOverhead)))")
            }
        }
        lines.append(notes)
        return lines.joined(separator: "\n")
    }
}
