import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

/// Shrinks a JVM before its checkpoint, so the dump writes (and every restore reads) less memory.
///
/// kiln does not care what the JVM runs: it finds any `java` process in the container and talks
/// to it through the JDK's own `jcmd`, executed inside the container so it can attach. It:
///   1. lowers the heap's free-ratio bounds (both are `manageable` flags) and runs a full GC
///      (`GC.run`), so only live objects remain and the collector may hand free heap back;
///   2. waits for HotSpot's chunk-pool cleaner (it runs every 5 s) to free the arenas the JIT
///      compilers used during warmup, and at least until the service has been ready
///      ``Kiln/minimumTimeReady`` (its periodic tasks' first runs then happen before the dump);
///   3. returns free malloc memory to the OS (`System.trim_native_heap`, JDK 17.0.9+/21+) and
///      puts the free-ratio bounds back, so the restored service grows its heap as before.
/// Measured on the Spring sample (JDK 17, host JVM): RSS 158 MiB -> 128 MiB; without the wait the
/// trim found 20 MiB less to return.
struct JVMCompactor {
    var runtime: any ContainerRuntime
    var logger: Logger
    /// How long to let the chunk-pool cleaner run between the GC and the trim.
    var arenaCleanupWait: Duration = Self.chunkPoolCleanupWait

    /// HotSpot's chunk-pool cleaner hands the arenas' pooled chunks (the JIT compilers' scratch
    /// memory) back to malloc every 5 s: waiting this long after the compilers' last work, a
    /// trim finds them free. Also the wait of a ``StandbyMode/ready`` copy before its trim.
    package static let chunkPoolCleanupWait = Duration.milliseconds(5500)

    struct Result {
        var didRun: Bool
        var note: String
    }

    /// HotSpot's defaults, used when the JVM's own values cannot be read.
    static let defaultFreeRatios = (min: 40, max: 70)

    /// The two jcmd scripts, before and after the wait; `original` are the bounds to put back.
    static func scripts(original: (min: Int, max: Int), trimNativeHeap: Bool) -> (collect: String, trim: String) {
        let collect = ["GC.heap_info", "VM.set_flag MinHeapFreeRatio 0", "VM.set_flag MaxHeapFreeRatio 10", "GC.run", "GC.heap_info"]
        var trim = trimNativeHeap ? ["System.trim_native_heap"] : []
        trim += ["VM.set_flag MaxHeapFreeRatio \(original.max)", "VM.set_flag MinHeapFreeRatio \(original.min)"]
        return (collect.joined(separator: "\n") + "\n", trim.joined(separator: "\n") + "\n")
    }

    /// Reads `MinHeapFreeRatio` and `MaxHeapFreeRatio` out of `jcmd PID VM.flags -all` output.
    static func freeRatios(inFlags text: String) -> (min: Int, max: Int)? {
        func value(_ name: String) -> Int? {
            guard let line = text.split(separator: "\n").first(where: { $0.contains(" \(name) ") }),
                let equals = line.firstIndex(of: "=")
            else { return nil }
            return line[line.index(after: equals)...].split(separator: " ").first.flatMap { Int($0) }
        }
        guard let min = value("MinHeapFreeRatio"), let max = value("MaxHeapFreeRatio") else { return nil }
        return (min, max)
    }

    /// Compacts every JVM of the sandbox. The wait between the GC and the trim lasts at least
    /// ``arenaCleanupWait`` and, when `notBefore` is given, until then (see
    /// ``Kiln/minimumTimeReady``).
    func compact(containerID: String, cgroupPath: String, notBefore: ContinuousClock.Instant? = nil) async -> Result {
        let javaProcesses = ProcessInspector.pids(inCgroup: cgroupPath).compactMap { pid -> (Int32, String)? in
            guard let exe = ProcessInspector.executable(of: pid), (exe as NSString).lastPathComponent == "java" else { return nil }
            return (pid, exe)
        }
        guard !javaProcesses.isEmpty else { return Result(didRun: false, note: "no JVM in the sandbox; nothing to compact") }
        var notes: [String] = []
        var compacted = false
        for (pid, exe) in javaProcesses {
            let jcmd = ((exe as NSString).deletingLastPathComponent as NSString).appendingPathComponent("jcmd")
            // Looked up through the process's own root: a service from an image has a JDK the host does not.
            guard FileManager.default.isExecutableFile(atPath: "/proc/\(pid)/root\(jcmd)"), let inner = ProcessInspector.namespacePid(of: pid) else {
                notes.append("no jcmd beside \(exe) (a JRE without tools?): skipped")
                continue
            }
            let before = MemoryUsage.of(pids: [pid]).rssBytes
            do {
                let flags = try await runtime.exec(id: containerID, [jcmd, String(inner), "VM.flags", "-all"], input: nil)
                let original = Self.freeRatios(inFlags: flags.stdout) ?? Self.defaultFreeRatios
                let help = try await runtime.exec(id: containerID, [jcmd, String(inner), "help"], input: nil)
                let scripts = Self.scripts(original: original, trimNativeHeap: help.stdout.contains("System.trim_native_heap"))
                let collected = try await runtime.exec(id: containerID, [jcmd, String(inner), "-f", "/dev/stdin"], input: scripts.collect)
                logger.debug("jcmd GC of pid \(inner): \(collected.stdout)")
                let waitUntil = max(ContinuousClock.now + arenaCleanupWait, notBefore ?? .now)
                try await Task.sleep(until: waitUntil, clock: .continuous)
                let trimmed = try await runtime.exec(id: containerID, [jcmd, String(inner), "-f", "/dev/stdin"], input: scripts.trim)
                logger.debug("jcmd trim of pid \(inner): \(trimmed.stdout)")
                let after = MemoryUsage.of(pids: [pid]).rssBytes
                notes.append("full GC, arena clean-up and malloc trim in pid \(inner): RSS \(before >> 20) -> \(after >> 20) MiB")
                compacted = true
            } catch {
                logger.warning("compacting the JVM before checkpoint failed: \(error)")
                notes.append("compaction failed (\(error)); checkpointing as is")
            }
        }
        return Result(didRun: compacted, note: notes.joined(separator: "; "))
    }
}
