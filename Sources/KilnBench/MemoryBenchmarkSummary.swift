import Foundation

extension MemoryBenchmarkReport {
    /// The report as text: PSS and RSS of the copies against cold starts (with the target), and
    /// each snapshot variant's size, checkpoint and restore times.
    public var summary: String {
        var lines: [String] = []
        let mib = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        lines.append("")
        if let one = mappedOneCopy, let all = mappedCopies, let ratio = mappedCopiesOverOne {
            lines.append("Memory of '\(snapshot)' without KSM (copies share the pages mapped from the snapshot), right after the last restore:")
            lines.append(
                ReportText.table(
                    ["WHAT", "PSS", "RSS"],
                    [
                        ["1 restored copy", mib(one.pssBytes), mib(one.rssBytes)],
                        ["\(copies) restored copies", mib(all.pssBytes), mib(all.rssBytes)],
                    ]))
            lines.append(String(format: "total PSS of %d copies = %.2fx one copy's (target <= 2x)", copies, ratio))
            lines.append("")
        }
        lines.append("Memory of '\(snapshot)': \(copies) restored copies sharing pages (KSM \(ksmTuning)) vs cold starts")
        lines.append(
            ReportText.table(
                ["WHAT", "PSS", "RSS"],
                [
                    ["1 cold-started instance (warmed up)", mib(coldInstance.pssBytes), mib(coldInstance.rssBytes)],
                    [
                        "\(copies) cold-started instances (estimate: \(copies) x 1)", mib(coldInstance.pssBytes * Int64(copies)),
                        mib(coldInstance.rssBytes * Int64(copies)),
                    ],
                    ["\(copies) restored copies, right after restore", mib(restoredAtStart.pssBytes), mib(restoredAtStart.rssBytes)],
                    [
                        "\(copies) restored copies, merged (after \(Int(convergenceSeconds)) s)", mib(restoredSettled.pssBytes),
                        mib(restoredSettled.rssBytes),
                    ],
                ]))
        lines.append(
            String(
                format: "total PSS of %d copies = %.2fx one cold instance (target <= 2x), %.0f%% of %d cold instances; ksmd CPU %.1f s",
                copies, pssOverOneCold, pssOverAllCold * 100, copies, ksmdCPUSeconds))
        lines.append("")
        lines.append(
            ReportText.table(
                ["SNAPSHOT", "COMPACTED", "COMPRESSED", "SIZE", "CHECKPOINT", "RESTORE MEDIAN", "RESTORES"],
                variants.map {
                    [
                        $0.name, $0.compacted ? "yes" : "no", $0.compressed ? "zstd" : "no", mib($0.sizeBytes), ReportText.ms($0.checkpointMs),
                        ReportText.ms($0.restore.median),
                        $0.restoreMs.map { String(format: "%.0f", $0) }.joined(separator: " "),
                    ]
                }))
        if let plain = variants.first(where: { !$0.compacted }) {
            for variant in variants where variant.compacted {
                lines.append(
                    String(
                        format: "%@ = %.0f%% of the plain dump (target <= 50%%)", variant.name,
                        100 * Double(variant.sizeBytes) / Double(plain.sizeBytes)))
            }
            lines.append("(the first restore of a compressed snapshot decompresses it into tmpfs; later ones read that copy)")
        }
        return lines.joined(separator: "\n")
    }
}
