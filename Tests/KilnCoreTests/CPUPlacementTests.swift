import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("CPU placement of bench serve")
struct CPUPlacementTests {
    @Test func isolatingGivesTheInstanceTheUpperHalfAndSharesNoCore() {
        #expect(CPUSplit.isolating([0]) == nil)
        #expect(CPUSplit.isolating([]) == nil)
        #expect(CPUSplit.isolating([0, 1]) == CPUSplit(instance: [1], front: [0]))
        #expect(CPUSplit.isolating([0, 1, 2]) == CPUSplit(instance: [2], front: [0, 1]))
        #expect(CPUSplit.isolating([2, 3, 6, 7]) == CPUSplit(instance: [6, 7], front: [2, 3]))
        #expect(CPUSplit.sharing([0, 1]) == CPUSplit(instance: [0, 1], front: [0, 1]))
    }

    /// A real process, pinned and read back from the kernel, and a child it makes afterwards
    /// (as wrk and nginx are made by a pinned kiln).
    @Test func pinningMovesAProcessAndTheChildrenItMakesLater() async throws {
        let cores = CPUAffinity.current()
        try #require(!cores.isEmpty)
        let target = [cores.last!]
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-cpus-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let pid = try Subprocess.spawn("/bin/sh", ["-c", "sleep 1; grep Cpus_allowed_list /proc/self/status > \(file)"])
        try CPUAffinity.pin(pid, to: target)
        #expect(Self.allowedCores(of: pid) == "\(target[0])")
        #expect(Subprocess.wait(pid) == .exited(0))
        let child = try String(contentsOfFile: file, encoding: .utf8)
        #expect(child.split(separator: "\t").last?.trimmingCharacters(in: .whitespacesAndNewlines) == "\(target[0])")

        #expect(throws: KilnError.self) { try CPUAffinity.pin(999_999_999, to: target) }
    }

    /// `Cpus_allowed_list` of /proc/PID/status, e.g. `1` or `0-1`.
    static func allowedCores(of pid: pid_t) -> String? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }?
            .split(separator: "\t").last.map(String.init)
    }
}
