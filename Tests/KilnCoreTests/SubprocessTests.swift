import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite("subprocesses")
struct SubprocessTests {
    @Test func inputReachesTheChildAndBothStreamsAreCollected() async throws {
        let output = try await Subprocess.run("/bin/sh", ["-c", "cat; echo oops >&2; exit 3"], input: "line 1\nline 2\n")
        #expect(output.stdout == "line 1\nline 2\n")
        #expect(output.stderr == "oops\n")
        #expect(output.status == .exited(3))
    }

    @Test func largeOutputDoesNotDeadlock() async throws {
        let output = try await Subprocess.run("/bin/sh", ["-c", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2"])
        #expect(output.stdout.utf8.count == 300_000)
        #expect(output.stderr.utf8.count == 200_000)
    }

    @Test func signalsAreReported() async throws {
        let output = try await Subprocess.run("/bin/sh", ["-c", "kill -9 $$"])
        #expect(output.status == .signaled(9))
    }

    /// A descriptor opened without close-on-exec (as SwiftNIO accepts connections) must not
    /// reach a child: a long-lived one (kiln-shim) would keep a gateway client's socket open.
    @Test func descriptorsBeyondTheStandardStreamsDoNotReachTheChild() async throws {
        let leaky = open("/dev/null", O_RDONLY)
        #expect(leaky > 2)
        defer { close(leaky) }
        let output = try await Subprocess.run("/bin/sh", ["-c", "test -e /proc/self/fd/\(leaky) && echo inherited || echo closed"])
        #expect(output.stdout == "closed\n")
    }

    /// While a command waits for SIGINT and SIGTERM it ignores them (KilnCLI's `StopSignals`),
    /// and an ignored signal stays ignored across exec: a child must still get both at their
    /// defaults, or a service kiln started would not stop on SIGTERM.
    @Test func aChildGetsSIGINTAndSIGTERMAtTheirDefaultsWhateverKilnIgnores() async throws {
        let previous = (signal(SIGINT, SIG_IGN), signal(SIGTERM, SIG_IGN))
        defer {
            signal(SIGINT, previous.0)
            signal(SIGTERM, previous.1)
        }
        let output = try await Subprocess.run("/bin/cat", ["/proc/self/status"])
        let line = try #require(output.stdout.split(separator: "\n").first { $0.hasPrefix("SigIgn:") })
        let ignored = try #require(UInt64(line.dropFirst("SigIgn:".count).trimmingCharacters(in: .whitespaces), radix: 16))
        #expect(ignored & (1 << UInt64(SIGINT - 1)) == 0, "SIGINT ignored in the child: \(line)")
        #expect(ignored & (1 << UInt64(SIGTERM - 1)) == 0, "SIGTERM ignored in the child: \(line)")
    }

    /// A time limit stops the child's whole process group: SIGTERM first, SIGKILL two seconds
    /// later for what ignores it (the plugin timeout of ``CNIPluginCall``).
    @Test func aTimeLimitStopsTheChildAndWhatItStarted() async throws {
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-subprocess-\(getpid())").path
        defer { unlink(pidFile) }
        let start = ContinuousClock.now
        let stubborn = try await Subprocess.run(
            "/bin/sh", ["-c", "trap '' TERM; sleep 60 & echo $! > \(pidFile); wait"], timeLimit: .milliseconds(300))
        let took = start.duration(to: .now)
        #expect(stubborn.timedOut)
        #expect(stubborn.status == .signaled(SIGKILL))
        #expect(took >= .seconds(2) && took < .seconds(10), "took \(took)")
        let sleeper = try #require(pid_t(String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        // Killed with its group; reaped by init once orphaned, so wait briefly for that.
        var gone = false
        for _ in 0..<100 where !gone {
            gone = kill(sleeper, 0) != 0 || (try? String(contentsOfFile: "/proc/\(sleeper)/stat", encoding: .utf8))?.contains(") Z ") == true
            if !gone { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(gone, "the child's own child \(sleeper) outlived the limit")

        // Output closed early does not end the limit's watch: the child still runs until stopped.
        let quiet = try await Subprocess.run("/bin/sh", ["-c", "exec >/dev/null 2>&1; sleep 60"], timeLimit: .milliseconds(300))
        #expect(quiet.timedOut)
        #expect(quiet.status == .signaled(SIGTERM))

        let quick = try await Subprocess.run("/bin/sh", ["-c", "echo done"], timeLimit: .seconds(30))
        #expect(!quick.timedOut)
        #expect(quick.status == .exited(0))
        #expect(quick.stdout == "done\n")
    }

    @Test func missingExecutableIsNamed() async {
        let error = await #expect(throws: KilnError.self) { _ = try await Subprocess.run("/nonexistent/tool", []) }
        #expect(error?.code == .commandNotFound)
    }
}

@Suite("hex digits")
struct HexDigitsTests {
    /// What `String(format:)` printed where kiln now writes hex digits itself (`%02x` per byte,
    /// `%08x` of a UInt32, `%016llx` of a UInt64): ids and chain names stay as they were.
    @Test func bytesAndIntegersAreWrittenAsZeroPaddedLowercaseHex() {
        #expect([UInt8]([0x00, 0x0f, 0xa0, 0xff]).hexDigits == "000fa0ff")
        #expect([UInt8]().hexDigits == "")
        #expect(UInt32(0xabc).hexDigits == "00000abc")
        #expect(UInt32.max.hexDigits == "ffffffff")
        #expect(UInt64(0x1234_5678_9abc_def0).hexDigits == "123456789abcdef0")
        #expect(UInt64(1).hexDigits == "0000000000000001")
    }
}

@Suite("poll timeouts")
struct PollTimeoutTests {
    /// What a deadline's remainder gives `poll(2)`: rounded up, so a poll never ends before the
    /// deadline it waits for, and held to Int32 (a year's readiness timeout would trap otherwise).
    @Test func durationsBecomeWholeMillisecondsRoundedUpAndHeldToInt32() {
        #expect(Duration.microseconds(1).pollMilliseconds == 1)
        #expect(Duration.milliseconds(5).pollMilliseconds == 6)
        #expect(Duration.seconds(2).pollMilliseconds == 2001)
        #expect(Duration.seconds(365 * 86_400).pollMilliseconds == Int32.max)
        #expect(Duration.seconds(Int64.max).pollMilliseconds == Int32.max)
    }
}

@Suite("host mounts")
struct HostMountsTests {
    @Test func mountinfoEscapesAreDecoded() {
        #expect(HostMounts.decode("/tmp/with\\040space") == "/tmp/with space")
        #expect(HostMounts.decode("/plain/path") == "/plain/path")
        #expect(HostMounts.decode("/back\\134slash") == "/back\\slash")
        #expect(HostMounts.decode("/trailing\\04") == "/trailing\\04", "a cut-off escape stays as it is")
    }

    /// A tmpfs mounted (nested, and at a path with a space) below a directory is listed, and
    /// unmountAll takes both away, deepest first, touching nothing outside that directory.
    @Test(.enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
    func mountsBelowADirectoryAreListedAndUnmountedDeepestFirst() throws {
        // Not under /tmp, which other tests sweep for their own leftovers.
        let root = "/run/kiln-unit-mounts-\(UUID().uuidString)"
        let outer = "\(root)/with space"
        let inner = "\(outer)/inner"
        try FileManager.default.createDirectory(atPath: outer, withIntermediateDirectories: true)
        defer {
            _ = umount2(inner, Int32(MNT_DETACH))
            _ = umount2(outer, Int32(MNT_DETACH))
            try? FileManager.default.removeItem(atPath: root)
        }
        #expect(mount("tmpfs", outer, "tmpfs", 0, "size=1m") == 0)
        try FileManager.default.createDirectory(atPath: inner, withIntermediateDirectories: true)
        #expect(mount("tmpfs", inner, "tmpfs", 0, "size=1m") == 0)
        let points = HostMounts.mountPoints()
        #expect(points.contains(outer) && points.contains(inner), "the escaped path is decoded: \(points.filter { $0.hasPrefix(root) })")

        let unmounted = HostMounts.unmountAll(under: [root])
        #expect(unmounted == [inner, outer])
        #expect(!HostMounts.mountPoints().contains { $0.hasPrefix(root) })
        #expect(HostMounts.mountPoints().contains("/"), "nothing outside the directory is touched")
    }
}
