import Foundation

/// Plain-text pieces of the benchmarks' reports: aligned tables, durations and sizes. The command line
/// prints its own tables with the same functions.
public enum ReportText {
    /// Left-aligned columns, two spaces apart.
    public static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// Milliseconds: one decimal below 10 ms, none above.
    public static func ms(_ value: Double) -> String {
        value >= 10 ? String(format: "%.0f ms", value) : String(format: "%.1f ms", value)
    }

    /// A byte count in B, KiB, MiB or GiB.
    public static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }
}
