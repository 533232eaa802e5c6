import Foundation

/// Memory of one instance (all processes in its cgroup), from /proc/PID/smaps_rollup.
public struct MemoryUsage: Codable, Sendable, Equatable {
    /// Resident set size.
    public var rssBytes: Int64
    /// Proportional set size: shared pages split between the processes sharing them.
    public var pssBytes: Int64
    /// Resident pages shared with another process (page cache of the same files, merged pages).
    public var sharedBytes: Int64
    /// Of those, pages KSM merged (from /proc/PID/ksm_merging_pages).
    public var mergedBytes: Int64 = 0

    public static let zero = MemoryUsage(rssBytes: 0, pssBytes: 0, sharedBytes: 0)

    /// Sums the smaps_rollup of each pid.
    public static func of(pids: [Int32]) -> MemoryUsage {
        var total = MemoryUsage.zero
        for pid in pids {
            guard let text = ProcFile.text("/proc/\(pid)/smaps_rollup") else { continue }
            var usage = parse(smapsRollup: text)
            usage.mergedBytes = PageMerging.mergedBytes(pid: pid)
            total = total + usage
        }
        return total
    }

    /// Reads `Rss:`, `Pss:` and the `Shared_*` lines (in kB) of an smaps_rollup text.
    public static func parse(smapsRollup text: String) -> MemoryUsage {
        var usage = MemoryUsage.zero
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, let kilobytes = Int64(fields[1]) else { continue }
            switch fields[0] {
            case "Rss:": usage.rssBytes = kilobytes * 1024
            case "Pss:": usage.pssBytes = kilobytes * 1024
            case "Shared_Clean:", "Shared_Dirty:": usage.sharedBytes += kilobytes * 1024
            default: break
            }
        }
        return usage
    }

    public static func + (lhs: MemoryUsage, rhs: MemoryUsage) -> MemoryUsage {
        MemoryUsage(
            rssBytes: lhs.rssBytes + rhs.rssBytes, pssBytes: lhs.pssBytes + rhs.pssBytes, sharedBytes: lhs.sharedBytes + rhs.sharedBytes,
            mergedBytes: lhs.mergedBytes + rhs.mergedBytes)
    }
}
