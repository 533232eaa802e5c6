import CKilnShims
import Foundation
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Where `kiln bench serve` runs the service against what loads it.
///
/// A proxy's cost shows up in throughput only where it takes CPU the service would have used.
/// With every process on every core (`shared`) the gateway's (and wrk's) CPU comes out of the
/// service's, so the ratio measures the proxy's CPU per request against the service's on this
/// machine. A function deployed with a CPU allotment of its own (`isolated`: the instance on one
/// half of the cores, the gateway, nginx and wrk on the other) measures what a user of the
/// gateway would see: whether putting it in front takes throughput from the function.
public enum CPUPlacement: String, Codable, Sendable, CaseIterable {
    case isolated
    case shared

    /// What it means, for reports.
    public var summary: String {
        switch self {
        case .isolated: "the instance on cores of its own; the proxy and wrk on the others"
        case .shared: "the instance, the proxy and wrk on every core"
        }
    }
}

/// The cores of a placement: the instance's, and those of everything else (the gateway, nginx,
/// wrk); the same set under ``CPUPlacement/shared``.
struct CPUSplit: Sendable, Equatable {
    var instance: [Int]
    var front: [Int]

    /// The upper half of `cores` (at least one) for the instance, the rest for the front; nil for
    /// fewer than two cores (nothing to split). No core is on both sides: on a shared one the two
    /// would take turns, and the split would measure contention again.
    static func isolating(_ cores: [Int]) -> CPUSplit? {
        guard cores.count >= 2 else { return nil }
        let frontCount = (cores.count + 1) / 2
        return CPUSplit(instance: Array(cores[frontCount...]), front: Array(cores[..<frontCount]))
    }

    static func sharing(_ cores: [Int]) -> CPUSplit { CPUSplit(instance: cores, front: cores) }
}

/// Thread CPU affinity (`sched_setaffinity`), of every thread of a process.
enum CPUAffinity {
    /// Bytes of a mask: 1,024 cores, as glibc's `cpu_set_t`.
    private static let maskBytes = 128

    /// The cores this thread may run on now.
    static func current() -> [Int] {
        var mask = [UInt8](repeating: 0, count: maskBytes)
        guard kiln_get_thread_cpus(0, &mask, mask.count) == 0 else { return Array(0..<ProcessInfo.processInfo.activeProcessorCount) }
        return (0..<(maskBytes * 8)).filter { mask[$0 / 8] & (1 << ($0 % 8)) != 0 }
    }

    /// Moves every thread of `pid` (this process when 0) to `cores`. Threads made later inherit
    /// the affinity of the thread that makes them, and so do child processes: wrk, nsenter and
    /// nginx started by a pinned kiln run where kiln does.
    static func pin(_ pid: pid_t, to cores: [Int]) throws {
        var mask = [UInt8](repeating: 0, count: maskBytes)
        for core in cores where (0..<(maskBytes * 8)).contains(core) { mask[core / 8] |= UInt8(1 << (core % 8)) }
        let process = pid == 0 ? "self" : String(pid)
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process)/task"))?.compactMap { pid_t($0) } ?? []
        guard !threads.isEmpty else {
            throw KilnError(.runtimeFailed, "cannot place process \(process) on cores \(cores): it has no threads to list in /proc")
        }
        for thread in threads where kiln_set_thread_cpus(thread, mask, mask.count) != 0 {
            // A thread that exited meanwhile is no failure.
            guard errno == ESRCH else {
                throw KilnError(
                    .runtimeFailed, "cannot place thread \(thread) of process \(process) on cores \(cores): \(String(cString: strerror(errno)))")
            }
        }
    }
}
