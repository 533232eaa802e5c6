import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Facts about host processes read from /proc.
public enum ProcessInspector {
    /// The fields of `/proc/PID/stat` after the command (which may hold spaces and parentheses):
    /// `[0]` is the state (field 3 of stat), `[1]` the parent pid, `[19]` the start time; nil once
    /// the process is gone.
    public static func statFields(of pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")"),
            let start = stat.index(close, offsetBy: 2, limitedBy: stat.endIndex)
        else { return nil }
        return stat[start...].split(separator: " ")
    }

    /// Whether `pid` exists and is neither a zombie nor on its way to being one.
    ///
    /// A JVM killed with SIGKILL takes a while to become a zombie (every thread must exit), and
    /// its sockets close during that time: a gateway that sees a connection reset and asks here
    /// must hear "dead", not "alive but unreachable". The kernel marks an exiting task with
    /// PF_EXITING (0x4) in its flags (field 9 of stat) before it closes any file.
    public static func isAlive(_ pid: Int32) -> Bool {
        guard let fields = statFields(of: pid), let state = fields.first else { return false }
        if state == "Z" || state == "X" { return false }
        if fields.count > 6, let flags = UInt(fields[6]), flags & 0x4 != 0 { return false }
        return true
    }

    /// CPU time (user + system, every thread) `pid` has used, in seconds; nil once it is gone.
    /// `/proc/PID/stat` counts in clock ticks (10 ms here).
    public static func cpuSeconds(of pid: Int32) -> Double? {
        guard let fields = statFields(of: pid) else { return nil }
        // After the command: state is field 3 of stat, utime 14 and stime 15 (1-based).
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CPU time (user + system, every thread) this process has used so far
    /// (`CLOCK_PROCESS_CPUTIME_ID`: nanosecond resolution, unlike `/proc/self/stat`).
    public static func ownCPUTime() -> Duration {
        var now = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
        return .seconds(now.tv_sec) + .nanoseconds(now.tv_nsec)
    }

    /// TCP ports in LISTEN state in the network namespace of `pid`.
    public static func listeningPorts(of pid: Int32) -> [Int] {
        var ports = Set<Int>()
        for table in ["tcp", "tcp6"] {
            guard let text = ProcFile.text("/proc/\(pid)/net/\(table)") else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 3, fields[3] == "0A", let port = fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }) else {
                    continue
                }
                ports.insert(port)
            }
        }
        return ports.sorted()
    }

    /// TCP sockets in the network namespace of `pid` that CRIU would refuse to dump without
    /// `--tcp-established`: every state but LISTEN, TIME_WAIT and CLOSE (those belong to no
    /// connection a process still holds).
    public static func openConnections(of pid: Int32) -> Int {
        var count = 0
        for table in ["tcp", "tcp6"] {
            guard let text = ProcFile.text("/proc/\(pid)/net/\(table)") else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                if fields.count > 3, !["0A", "06", "07"].contains(fields[3]) { count += 1 }
            }
        }
        return count
    }

    /// The executable of `pid` (resolved /proc/PID/exe), if readable.
    public static func executable(of pid: Int32) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
    }

    /// `pid` as seen inside its own pid namespace (last field of NSpid).
    public static func namespacePid(of pid: Int32) -> Int32? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("NSpid:") })
        else { return nil }
        return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).last.flatMap { Int32($0) }
    }

    /// How far `pid`'s CLOCK_MONOTONIC is ahead of the host's (ns): its time namespace's offset
    /// (`/proc/PID/timens_offsets`; CRIU gives a restored process the clock it was dumped with).
    /// 0 in the host's time namespace; nil if unreadable.
    public static func monotonicOffsetNanos(of pid: Int32) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/timens_offsets", encoding: .utf8) else { return nil }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("monotonic") }) else { return 0 }
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count == 3, let seconds = Int64(fields[1]), let nanoseconds = Int64(fields[2]) else { return nil }
        return seconds * 1_000_000_000 + nanoseconds
    }

    /// Every pid in the pids-controller cgroup at `cgroupPath` (cgroup v1 or v2).
    public static func pids(inCgroup cgroupPath: String) -> [Int32] {
        let mount = CgroupHierarchy.mountPoint
        for base in ["\(mount)/pids", "\(mount)/memory", mount] {
            if let text = ProcFile.text("\(base)\(cgroupPath)/cgroup.procs") {
                return text.split(separator: "\n").compactMap { Int32($0) }
            }
        }
        return []
    }

    /// The last `count` lines of a log file.
    public static func lastLines(ofFile path: String, count: Int) -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let text = String(decoding: data.suffix(64 * 1024), as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: true).suffix(count).map(String.init)
    }
}
