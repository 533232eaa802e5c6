import Foundation

/// How much CPU a JVM's JIT compiler threads have used, read from outside the JVM: the sum of
/// `/proc/PID/task/TID/schedstat`'s time on CPU (nanoseconds) over the threads HotSpot names
/// `C1 CompilerThreadN`/`C2 CompilerThreadN` (truncated to 15 characters in `comm`) and OpenJ9
/// names `JIT Compilation Thread-N`. Needs no agent and no attach, so it works for any JVM in a
/// sandbox, and costs a few `/proc` reads.
public enum CompilerActivity {
    /// Total CPU time of the compiler threads of `pids` (ns), or nil when none of them has one (no
    /// JVM, or a JVM without a JIT).
    public static func cpuNanoseconds(ofProcesses pids: [Int32]) -> UInt64? {
        var total: UInt64 = 0
        var found = false
        for (pid, tid) in compilerThreads(ofProcesses: pids) {
            // A thread that ended between the listing and this read simply counts no more.
            guard let stat = ProcFile.text("/proc/\(pid)/task/\(tid)/schedstat"),
                let first = stat.split(separator: " ").first, let nanoseconds = UInt64(first)
            else { continue }
            total += nanoseconds
            found = true
        }
        return found ? total : nil
    }

    /// The compiler threads of `pids`: each one's process and thread id.
    public static func compilerThreads(ofProcesses pids: [Int32]) -> [(pid: Int32, tid: Int32)] {
        var threads: [(pid: Int32, tid: Int32)] = []
        for pid in pids {
            guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { continue }
            for task in tasks {
                // A thread name is at most 16 bytes: no 64 KiB buffer to clear for each of ~40 threads.
                guard let tid = Int32(task), let comm = ProcFile.text("/proc/\(pid)/task/\(task)/comm", chunk: 64), isCompilerThread(comm) else {
                    continue
                }
                threads.append((pid, tid))
            }
        }
        return threads
    }

    /// Whether a thread's `comm` names a JIT compiler thread (HotSpot's C1/C2, OpenJ9's).
    static func isCompilerThread(_ comm: String) -> Bool {
        comm.hasPrefix("C1 CompilerThre") || comm.hasPrefix("C2 CompilerThre") || comm.hasPrefix("JIT Compilation")
    }
}

/// Decides when a JVM's JIT compilers have settled while its warm-up goes on: fed the
/// compilers' total CPU time at instants the caller chooses (the clock is a parameter), it says
/// to go on, or that the compilers used at most ``quietShare`` of one CPU over a window of at
/// least ``window`` (settled), or that ``limit`` has passed since it began (given up).
public struct CompilerSettling: Sendable {
    /// What the caller does next.
    public enum Verdict: Equatable, Sendable {
        case goOn
        case settled
        case gaveUp
    }

    /// How long the compilers must stay (nearly) idle.
    public var window: Duration
    /// The share of one CPU the compilers may use in that window and still count as idle: a
    /// JVM compiles now and then forever (a method reaching a threshold late, a deoptimization),
    /// so exactly zero would rarely come.
    public var quietShare: Double
    /// The longest the warm-up goes on, from the first sample.
    public var limit: Duration

    private var began: ContinuousClock.Instant?
    private var windowStart: (at: ContinuousClock.Instant, cpu: UInt64)?

    public init(window: Duration = .seconds(1), quietShare: Double = 0.01, limit: Duration) {
        self.window = window
        self.quietShare = quietShare
        self.limit = limit
    }

    /// Takes a sample of the compilers' total CPU time (ns) at `now`.
    public mutating func sample(cpuNanoseconds cpu: UInt64, at now: ContinuousClock.Instant) -> Verdict {
        let began = self.began ?? now
        self.began = began
        guard let start = windowStart else {
            windowStart = (now, cpu)
            return began.duration(to: now) >= limit ? .gaveUp : .goOn
        }
        let elapsed = start.at.duration(to: now)
        if elapsed >= window {
            // A falling total (a compiler thread ended) tells nothing: counted as busy.
            if cpu >= start.cpu, Double(cpu - start.cpu) / 1e6 <= quietShare * elapsed.milliseconds { return .settled }
            // Busy in this window: the next one starts now.
            windowStart = (now, cpu)
        }
        return began.duration(to: now) >= limit ? .gaveUp : .goOn
    }
}
