import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("parsing what users and tools give kiln")
struct ParsingTests {
    @Test(arguments: [("200:/greet", 200, "/greet"), ("/health", 1, "/health"), ("5:/a:b", 5, "/a:b")])
    func warmupStepsParse(text: String, count: Int, path: String) throws {
        let step = try WarmupStep(parsing: text)
        #expect(step.count == count)
        #expect(step.path == path)
    }

    @Test(arguments: ["0:/greet", "x:/greet", "200:greet", "", "-1:/a"])
    func badWarmupStepsAreRefusedWithTheSyntax(text: String) {
        #expect(throws: KilnError.self) { try WarmupStep(parsing: text) }
        let error = try? #require(throws: KilnError.self) { try WarmupStep(parsing: text) }
        #expect(error?.hint?.contains("COUNT:PATH") == true)
    }

    @Test(arguments: [
        ("1024", Int64(1) << 30), ("512m", 512 << 20), ("2g", 2 << 30), ("1536MiB", 1536 << 20), (" 2 GiB ", 2 << 30), ("6144k", 6 << 20),
    ])
    func memoryLimitsParse(text: String, bytes: Int64) throws {
        #expect(try SandboxSpec.memoryLimit(parsing: text) == bytes)
    }

    @Test(arguments: ["", "0", "5", "-1", "2.5g", "1t", "2 g b", "1759218604441656MB", "17592186044416g", "9223372036854775807", "0x400"])
    func badMemoryLimitsAreRefused(text: String) {
        let error = #expect(throws: KilnError.self) { try SandboxSpec.memoryLimit(parsing: text) }
        #expect(error?.message.contains("'\(text)'") == true)
    }

    @Test func environmentEntriesParse() throws {
        #expect(try SandboxSpec.environment(parsing: ["A=1", "B=", "C=x=y", "A=2"]) == ["A": "2", "B": "", "C": "x=y"])
        for bad in ["=x", "NOEQUALS", "A\u{0}=b"] {
            #expect(throws: KilnError.self) { try SandboxSpec.environment(parsing: ["OK=1", bad]) }
        }
    }

    @Test func warmSettingsParse() throws {
        #expect(try WarmSetting(parsing: "hello=2") == WarmSetting(function: "hello", count: 2))
        #expect(try WarmSetting(parsing: "hello") == WarmSetting(function: "hello", count: 1))
        for bad in ["Hello=2", "=2", "hello=0", "hello=257", "hello=x", "../x=1"] {
            #expect(throws: KilnError.self) { try WarmSetting(parsing: bad) }
        }
    }

    @Test func onlyLoopbackAddressesCountAsLoopback() throws {
        for host in ["127.0.0.1:1", "127.255.0.9:1", "[::1]:1", "localhost:1", ":1"] {
            #expect(try ListenAddress(parsing: host).isLoopback, "\(host)")
        }
        for host in ["127.0.0.1.example.com:1", "127.evil.test:1", "0.0.0.0:1", "[::]:1", "10.0.0.1:1", "127.1:1"] {
            #expect(try !ListenAddress(parsing: host).isLoopback, "\(host)")
        }
        for bad in ["[[x]]:1", "a b:1", "host", "h:65536", "h/x:1"] {
            #expect(throws: KilnError.self) { try ListenAddress(parsing: bad) }
        }
    }

    @Test func waitsThatWouldTrapAreRefused() {
        for seconds in [Double.infinity, .nan, 1e21, -1, 0] {
            #expect(throws: KilnError.self) { try ReadinessCheck(path: "/health", timeoutSeconds: seconds).validate() }
            #expect(throws: KilnError.self) { try ScalingPolicy(queueTimeoutSeconds: seconds).validate() }
            #expect(throws: KilnError.self) {
                try GatewayConfiguration.parsing(listen: ":8080", admin: ":8081", defaultPolicy: ScalingPolicy(), requestTimeoutSeconds: seconds)
            }
        }
        #expect(throws: KilnError.self) { try ScalingPolicy(keepAliveSeconds: 1e21).validate() }
        #expect(throws: KilnError.self) { try ScalingPolicy(concurrency: .max).validate() }
    }

    @Test func criuVersionsParseAndCompare() throws {
        let version = try #require(SemanticVersion(criuVersionOutput: "Version: 4.2.1\nGitID: v4.2.1\n"))
        #expect(version == SemanticVersion(4, 2, 1))
        #expect(version >= CRIU.minimumVersion)
        #expect(try #require(SemanticVersion("3.17.1")) < CRIU.minimumVersion)
        #expect(try #require(SemanticVersion("4.1.1")) < CRIU.minimumVersion)
        #expect(SemanticVersion("1.1.5+ds1") == SemanticVersion(1, 1, 5))
        #expect(SemanticVersion(criuVersionOutput: "criu: command not found") == nil)
    }

    @Test func criuLogErrorLinesAreExtracted() {
        let log = """
            (00.000100) Version: 4.2.1
            (00.001000) Dumping task 1
            (00.001392) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
            (00.002000) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option.
            (00.002100) Error (criu/cr-dump.c:1632): Dump files (pid: 1) failed with -1
            (00.003000) Unlock network
            """
        let lines = FailureLog.criuErrorLines(in: log)
        #expect(lines.count == 2)
        #expect(lines[0].contains("--tcp-established"))
        // No error line: the tail of the log is better than nothing.
        #expect(FailureLog.criuErrorLines(in: "a\nb\nc", limit: 2) == ["b", "c"])
    }

    @Test func runcJSONLogErrorsAreExtracted() {
        let log = """
            {"level":"info","msg":"starting","time":"2026-01-01T00:00:00Z"}
            {"level":"error","msg":"container does not exist","time":"2026-01-01T00:00:00Z"}
            {"level":"error","msg":"criu failed: type NOTIFY errno 0\\nlog file: /run/kiln/bakes/x/work/dump.log","time":"2026-01-01T00:00:00Z"}
            not json at all
            """
        #expect(FailureLog.runcErrorMessages(in: log) == ["container does not exist", "criu failed: type NOTIFY errno 0"])
    }

    @Test func smapsRollupIsSummed() {
        let text = """
            55d0c0a00000-7ffd6e1fe000 ---p 00000000 00:00 0                          [rollup]
            Rss:               39124 kB
            Pss:               31337 kB
            Shared_Clean:       8000 kB
            Shared_Dirty:       2000 kB
            Private_Clean:      1000 kB
            """
        let usage = MemoryUsage.parse(smapsRollup: text)
        #expect(usage.rssBytes == 39124 * 1024)
        #expect(usage.pssBytes == 31337 * 1024)
        #expect(usage.sharedBytes == 10000 * 1024)
        #expect((usage + usage).rssBytes == 2 * 39124 * 1024)
    }

    @Test(arguments: ["hello", "a", "svc-2_b", "9lives"])
    func goodSnapshotNames(name: String) throws {
        try SnapshotStore.validate(name: name)
    }

    @Test(arguments: ["", "Hello", "../etc", "a/b", "-x", String(repeating: "a", count: 41), "sp ace", "é"])
    func badSnapshotNamesAreRefused(name: String) {
        #expect(throws: KilnError.self) { try SnapshotStore.validate(name: name) }
    }

    @Test func wrkReportsItsThroughputLatencyAndErrors() {
        let report = """
            Running 5s test @ http://127.0.0.1:8080/greet
              1 threads and 8 connections
              Thread Stats   Avg      Stdev     Max   +/- Stdev
                Latency   571.33us    1.07ms  20.72ms   96.56%
                Req/Sec    14.05k     1.71k   16.50k    70.00%
              Latency Distribution
                 50%  392.00us
                 75%  521.00us
                 90%  741.00us
                 99%    5.33ms
              70009 requests in 5.00s, 15.76MB read
              Socket errors: connect 0, read 2, write 0, timeout 1
              Non-2xx or 3xx responses: 12
            Requests/sec:  14001.23
            Transfer/sec:      3.15MB
            """
        #expect(Wrk.parse(report) == Wrk.Result(requests: 70009, requestsPerSecond: 14001.23, p50Ms: 0.392, p99Ms: 5.33, errors: 15))
        #expect(Wrk.parse("unable to connect to 127.0.0.1:8080 Connection refused") == nil)
        #expect(Wrk.milliseconds("1.02s") == 1020)
        #expect(Wrk.milliseconds("12") == nil)
    }
}
