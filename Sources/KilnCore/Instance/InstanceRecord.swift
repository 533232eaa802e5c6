import Foundation

/// A running copy restored from a snapshot, as kiln records it in `<state>/instances/<id>/`.
public struct InstanceRecord: Codable, Sendable, Equatable {
    public var id: String
    public var snapshot: String
    /// Host pid of the container's init.
    public var pid: Int32
    /// Host pid of its `kiln-shim`.
    public var shimPid: Int32
    public var port: Int
    public var createdAt: Date
    public var networkNamespacePath: String
    public var cgroupPath: String
    /// The service's output.
    public var logPath: String
    /// From the start of the restore to the end of `runc restore`.
    public var restoreMs: Double
    /// From the start of the restore to the first successful readiness response.
    public var firstResponseMs: Double

    public var endpoint: ServiceEndpoint { ServiceEndpoint(networkNamespacePath: networkNamespacePath, port: port) }
}

/// Memory of one instance (all processes in its cgroup), from /proc/PID/smaps_rollup.
public struct MemoryUsage: Codable, Sendable, Equatable {
    /// Resident set size.
    public var rssBytes: Int64
    /// Proportional set size: shared pages split between the processes sharing them.
    public var pssBytes: Int64
    /// Resident pages shared with another process (page cache of the same files, merged pages).
    public var sharedBytes: Int64

    public static let zero = MemoryUsage(rssBytes: 0, pssBytes: 0, sharedBytes: 0)

    /// Sums the smaps_rollup of each pid.
    public static func of(pids: [Int32]) -> MemoryUsage {
        var total = MemoryUsage.zero
        for pid in pids {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { continue }
            total = total + parse(smapsRollup: text)
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
        MemoryUsage(rssBytes: lhs.rssBytes + rhs.rssBytes, pssBytes: lhs.pssBytes + rhs.pssBytes, sharedBytes: lhs.sharedBytes + rhs.sharedBytes)
    }
}

/// One row of `kiln ps`.
public struct InstanceStatus: Codable, Sendable {
    public var id: String
    public var snapshot: String
    public var pid: Int32
    /// "running", or what the runtime says ("stopped", "gone" when it no longer knows it).
    public var state: String
    public var createdAt: Date
    public var ageSeconds: Double
    public var memory: MemoryUsage
    public var restoreMs: Double
    public var firstResponseMs: Double
}
