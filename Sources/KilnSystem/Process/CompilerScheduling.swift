#if canImport(Glibc)
import Glibc
#endif

/// Keeps a JVM's JIT compiler threads off the CPU its requests need, for a while: their
/// scheduling policy set to `SCHED_IDLE` (a thread that runs only when no ordinary thread wants
/// the CPU, and never preempts one) and back to `SCHED_OTHER`.
///
/// Why: a ready standby copy's first request after its thaw still crosses a few compile
/// thresholds, and on two CPUs the compilations it sets off (C1 and C2 at once) took the CPU
/// from the thread answering it (an ftrace of one: Tomcat's worker preempted by C2, then
/// waiting 0.7 ms behind C1). With the compilers at `SCHED_IDLE` while the copy waited frozen
/// and during that request, a request at zero through `kiln serve` took 4.2 and 5.0 ms against
/// 5.8 and 7.2 ms (medians of two runs of 10 interleaved pairs, Spring sample). The compilers
/// go back to normal once that request is over: a copy whose compilers never got the CPU
/// would stay slow on a busy host.
///
/// Every restored copy's compilers wait the same way from the moment `runc restore` returns until
/// its first response: some bakes leave a method that C2 compiles as soon as a copy runs (in the
/// Spring sample, ~3,000 page faults of fresh compiler arenas and 30 ms of CPU), which took a
/// CPU from the copy's afterRestore: the slowest of eight bakes answered in 73.2 instead of
/// 81.7 ms (docs/restore-path.md).
public enum CompilerScheduling {
    /// Sets every compiler thread of `pids` to `SCHED_IDLE`. Returns how many it set.
    @discardableResult
    public static func yieldToRequests(ofProcesses pids: [Int32]) -> Int {
        var parameters = sched_param(sched_priority: 0)
        return CompilerActivity.compilerThreads(ofProcesses: pids).filter { sched_setscheduler($0.tid, schedIdle, &parameters) == 0 }.count
    }

    /// Puts the compiler threads of `pids` that run at `SCHED_IDLE` back to `SCHED_OTHER` (their
    /// nice value stays as it was). Returns how many it put back.
    @discardableResult
    public static func restore(ofProcesses pids: [Int32]) -> Int {
        var parameters = sched_param(sched_priority: 0)
        return CompilerActivity.compilerThreads(ofProcesses: pids).filter {
            isIdle($0.tid) && sched_setscheduler($0.tid, Int32(SCHED_OTHER), &parameters) == 0
        }.count
    }

    /// Whether thread `tid` runs at `SCHED_IDLE`.
    public static func isIdle(_ tid: Int32) -> Bool { sched_getscheduler(tid) == schedIdle }

    /// Linux's `SCHED_IDLE` (glibc defines it only with `_GNU_SOURCE`).
    static let schedIdle: Int32 = 5
}
