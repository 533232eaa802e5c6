import Foundation
import Testing

@testable import KilnEngine
@testable import KilnSystem

/// When a bake's warm-up may stop: the JIT compilers idle (at most 1% of a CPU) for a whole
/// second, or the limit reached. The clock is a parameter, so these run in no time.
@Suite("JIT compiler settling")
struct CompilerSettlingTests {
    let start = ContinuousClock.now

    func at(_ ms: Int) -> ContinuousClock.Instant { start + .milliseconds(ms) }

    /// `ms` of compiler CPU, in nanoseconds.
    func cpu(_ ms: Int) -> UInt64 { UInt64(ms) * 1_000_000 }

    @Test func busyWindowsGoOnAndAnIdleSecondSettles() {
        var settling = CompilerSettling(limit: .seconds(30))
        #expect(settling.sample(cpuNanoseconds: cpu(0), at: at(0)) == .goOn)
        // 400 ms of compiling in the first second: busy, a new window begins at 1 s.
        #expect(settling.sample(cpuNanoseconds: cpu(200), at: at(500)) == .goOn)
        #expect(settling.sample(cpuNanoseconds: cpu(400), at: at(1000)) == .goOn)
        // Idle since 1 s, but the window is not a second long yet.
        #expect(settling.sample(cpuNanoseconds: cpu(404), at: at(1900)) == .goOn)
        // 9 ms in 1.1 s: under 1% of a CPU.
        #expect(settling.sample(cpuNanoseconds: cpu(409), at: at(2100)) == .settled)
    }

    @Test func overOnePercentIsStillBusy() {
        var settling = CompilerSettling(limit: .seconds(30))
        _ = settling.sample(cpuNanoseconds: cpu(0), at: at(0))
        // 11 ms in a second: busy.
        #expect(settling.sample(cpuNanoseconds: cpu(11), at: at(1000)) == .goOn)
        // The next window starts at 1 s with 11 ms: 9 ms in a second is idle.
        #expect(settling.sample(cpuNanoseconds: cpu(20), at: at(2000)) == .settled)
    }

    @Test func aCompilerThatNeverRestsIsGivenUpOnAtTheLimit() {
        var settling = CompilerSettling(limit: .seconds(3))
        var verdicts: [CompilerSettling.Verdict] = []
        for second in 0...4 {
            verdicts.append(settling.sample(cpuNanoseconds: cpu(second * 300), at: at(second * 1000)))
        }
        #expect(verdicts == [.goOn, .goOn, .goOn, .gaveUp, .gaveUp])
    }

    @Test func aFallingTotalCountsAsBusy() {
        // A compiler thread that ended takes its CPU time out of the sum: no idle second can be
        // told from that, so the window starts over.
        var settling = CompilerSettling(limit: .seconds(30))
        _ = settling.sample(cpuNanoseconds: cpu(500), at: at(0))
        #expect(settling.sample(cpuNanoseconds: cpu(100), at: at(1000)) == .goOn)
        #expect(settling.sample(cpuNanoseconds: cpu(101), at: at(2000)) == .settled)
    }

    /// A ready standby copy waits before its freeze with a shorter window and a looser share
    /// (``Kiln/waitForIdleCompilers(inCgroup:)``): 200 ms with at most 4 ms of compiling.
    @Test func aReadyStandbyCopysSettlingTakesAShortWindow() {
        func settling() -> CompilerSettling {
            CompilerSettling(window: Kiln.readyStandbySettleWindow, quietShare: 0.02, limit: Kiln.readyStandbySettleLimit)
        }
        var quiet = settling()
        _ = quiet.sample(cpuNanoseconds: cpu(100), at: at(0))
        #expect(quiet.sample(cpuNanoseconds: cpu(103), at: at(220)) == .settled)
        var busy = settling()
        _ = busy.sample(cpuNanoseconds: cpu(100), at: at(0))
        #expect(busy.sample(cpuNanoseconds: cpu(106), at: at(220)) == .goOn)
        #expect(busy.sample(cpuNanoseconds: cpu(300), at: at(2000)) == .gaveUp)
    }

    @Test func compilerThreadsAreKnownByTheirNames() {
        #expect(CompilerActivity.isCompilerThread("C2 CompilerThre\n"))
        #expect(CompilerActivity.isCompilerThread("C1 CompilerThre"))
        #expect(CompilerActivity.isCompilerThread("JIT Compilation"))
        #expect(!CompilerActivity.isCompilerThread("VM Thread"))
        #expect(!CompilerActivity.isCompilerThread("http-nio-8080-e"))
    }

    @Test func aProcessWithoutAJITHasNoCompilerTime() {
        // The test runner is no JVM; a pid that does not exist has no threads at all.
        #expect(CompilerActivity.cpuNanoseconds(ofProcesses: [getpid()]) == nil)
        #expect(CompilerActivity.cpuNanoseconds(ofProcesses: [Int32.max]) == nil)
        #expect(CompilerActivity.cpuNanoseconds(ofProcesses: []) == nil)
    }

    /// A process named like a C2 compiler thread stands in for a JVM's: its scheduling goes to
    /// SCHED_IDLE and back; a process with no such thread is left alone.
    @Test func compilerThreadsWaitAtIdlePriorityAndComeBack() throws {
        // A process's name is its program's file name, cut to 15 characters: `sleep` run as
        // `C2 CompilerThread0` shows what HotSpot's compiler thread shows. (Another process's
        // `comm` cannot be written.)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-compiler-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createSymbolicLink(atPath: "\(directory)/C2 CompilerThread0", withDestinationPath: "/bin/sleep")
        let compiler = try Subprocess.spawn("\(directory)/C2 CompilerThread0", ["30"])
        let other = try Subprocess.spawn("/bin/sleep", ["30"])
        defer {
            for pid in [compiler, other] {
                kill(pid, SIGKILL)
                _ = Subprocess.wait(pid)
            }
        }
        #expect(CompilerActivity.compilerThreads(ofProcesses: [compiler, other]).map(\.tid) == [compiler])

        #expect(CompilerScheduling.yieldToRequests(ofProcesses: [compiler, other]) == 1)
        #expect(CompilerScheduling.isIdle(compiler))
        #expect(!CompilerScheduling.isIdle(other))
        #expect(CompilerScheduling.restore(ofProcesses: [compiler, other]) == 1)
        #expect(!CompilerScheduling.isIdle(compiler))
        #expect(CompilerScheduling.restore(ofProcesses: [compiler, other]) == 0, "nothing left to put back")
    }
}

/// /proc files say they are empty and come a page at a time: read whole, they are all there.
@Suite("reading /proc files")
struct ProcFileTests {
    @Test func aProcFileLargerThanAPageIsReadWhole() throws {
        // The kernel's symbol table: megabytes, and it does not change while the test runs.
        let text = try #require(ProcFile.text("/proc/kallsyms"))
        let reference = try Subprocess.run("/bin/cat", ["/proc/kallsyms"])
        #expect(reference.status.isSuccess)
        #expect(text.utf8.count > 64 * 1024, "read only \(text.utf8.count) bytes")
        #expect(text == reference.stdout)
        #expect(ProcFile.text("/proc/self/nonexistent") == nil)
    }
}
