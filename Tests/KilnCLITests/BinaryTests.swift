import Foundation
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The `kiln` executable built beside the test runner.
let kilnBinary: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    var directory = (exe as NSString).deletingLastPathComponent
    if directory.hasSuffix(".xctest") { directory = (directory as NSString).deletingLastPathComponent }
    return "\(directory)/kiln"
}()

/// A private store, state directory and cgroup parent for one test, and the `kiln` binary run
/// against them: as it is, or with CRIU, runc and kiln-shim gone.
struct CLIHost {
    let base = "/tmp/kiln-cli-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let cgroupParent = "/kiln-cli-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"

    var store: String { "\(base)/store" }
    var state: String { "\(base)/state" }

    var environment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["KILN_STORE"] = store
        environment["KILN_STATE"] = state
        environment["KILN_CGROUP_PARENT"] = cgroupParent
        return environment
    }

    /// The tools kiln looks for, each where this machine has it; hidden by ``runWithoutTools(_:)``.
    static let tools = [
        "/usr/local/sbin/criu", "/usr/sbin/criu", "/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc",
        (kilnBinary as NSString).deletingLastPathComponent + "/kiln-shim",
    ]

    func kiln(_ arguments: [String], environment: [String: String]? = nil) throws -> CommandOutput {
        try Subprocess.run(kilnBinary, arguments, environment: environment ?? self.environment)
    }

    /// Runs `command` in a mount namespace of its own where CRIU, runc and kiln-shim are
    /// /dev/null (not executable, so not found), with a PATH of /usr/bin:/bin and none of
    /// `KILN_CRIU`, `KILN_RUNC`, `KILN_SHIM`: as on a host that has none of them.
    func runWithoutTools(_ command: [String]) throws -> CommandOutput {
        var environment = self.environment
        environment["PATH"] = "/usr/bin:/bin"
        for name in ["KILN_CRIU", "KILN_RUNC", "KILN_SHIM"] { environment[name] = nil }
        let hide =
            #"for tool in "$@"; do [ "$tool" = -- ] && break; [ -e "$tool" ] && { mount --bind /dev/null "$tool" || exit 97; }; done; "#
            + #"while [ "$1" != -- ]; do shift; done; shift; exec "$@""#
        return try Subprocess.run(
            "/usr/bin/unshare", ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", hide, "sh"] + Self.tools + ["--"] + command,
            environment: environment)
    }

    func kilnWithoutTools(_ arguments: [String]) throws -> CommandOutput {
        try runWithoutTools([kilnBinary] + arguments)
    }

    /// Bakes `name`: Python's `http.server` serving one small file from an app directory, a
    /// service that takes a second to bake and restores with any CRIU.
    func bakeStaticSite(_ name: String) throws {
        let app = "\(base)/app"
        try FileManager.default.createDirectory(atPath: app, withIntermediateDirectories: true)
        try "kiln-cli-test\n".write(toFile: "\(app)/index.html", atomically: true, encoding: .utf8)
        let bake = try kiln([
            "bake", name, "--port", "8080", "--ready", "/", "--ready-timeout", "30", "--no-compact", "--app", app, "--json",
            "--", "/usr/bin/python3", "-m", "http.server", "8080",
        ])
        try #require(bake.status == .exited(0), "bake failed: \(bake.stderr)\(bake.stdout)")
    }

    /// Stops what is left, removes the directories, the image cache and the cgroup parent.
    func cleanUp() {
        if let records = try? kiln(["stop", "--all"]), records.status != .exited(0) {
            Issue.record("kiln stop --all failed while cleaning up: \(records.stderr)")
        }
        _ = try? kiln(["gc"])
        try? FileManager.default.removeItem(atPath: base)
        try? FileManager.default.removeItem(atPath: "/dev/shm/kiln-images" + state.replacingOccurrences(of: "/", with: "_"))
        try? FileManager.default.removeItem(atPath: "/dev/shm/kiln-verified" + state.replacingOccurrences(of: "/", with: "_"))
        for controller in [
            "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "net_cls", "net_prio", "perf_event",
            "hugetlb", "rdma", "misc", "systemd", "unified",
        ] {
            rmdir("/sys/fs/cgroup/\(controller)\(cgroupParent)")
        }
    }
}

/// Decodes one command's stdout as a JSON object.
func jsonObject(_ output: CommandOutput) throws -> [String: Any] {
    let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8))
    return try #require(object as? [String: Any], "not a JSON object: \(output.stdout)")
}

/// The `error` body of a JSON error document.
func errorBody(_ output: CommandOutput) throws -> [String: Any] {
    try #require(try jsonObject(output)["error"] as? [String: Any], "not an error document: \(output.stdout)")
}

/// kiln refuses to run without root, so these need it (as the integration tests do).
@Suite("the kiln binary", .serialized, .enabled(if: geteuid() == 0, "kiln runs as root only"))
struct BinaryTests {
    @Test func kilnErrorIsAJSONDocumentOrOneTextError() throws {
        let host = CLIHost()
        defer { host.cleanUp() }
        let json = try host.kiln(["rm", "nope", "--json"])
        #expect(json.status == .exited(2))
        let error = try errorBody(json)
        #expect(error["code"] as? String == "snapshot-not-found")
        #expect((error["message"] as? String)?.contains("nope") == true)
        #expect(error["hint"] is String)
        #expect(json.stderr.isEmpty, "under --json only the document is printed: \(json.stderr)")

        let text = try host.kiln(["rm", "nope"])
        #expect(text.status == .exited(2))
        #expect(text.stdout.isEmpty)
        #expect(text.stderr.hasPrefix("error: no snapshot named 'nope'"), "\(text.stderr)")
        #expect(text.stderr.contains("hint: "))
    }

    @Test func aWarmupSettleOutOfRangeIsRefusedBeforeAnythingStarts() throws {
        let host = CLIHost()
        defer { host.cleanUp() }
        for value in ["-1", "nan", "1e12"] {
            let output = try host.kiln(["bake", "settle", "--port", "8080", "--warmup-settle=\(value)", "--json", "--", "/bin/true"])
            #expect(output.status == .exited(2), "\(value): \(output.stderr)")
            let error = try errorBody(output)
            #expect(error["code"] as? String == "invalid-argument")
            #expect((error["message"] as? String)?.contains("--warmup-settle") == true, "\(value): \(error)")
        }
    }

    /// An error that starts as a Foundation error (CocoaError around ENOTDIR): today's kiln let
    /// it escape --json; now it is a system-call document with the errno, exit 1.
    @Test func foundationErrorIsAJSONDocument() throws {
        let host = CLIHost()
        defer { host.cleanUp() }
        var environment = host.environment
        environment["KILN_STATE"] = "/dev/null/state"
        let json = try host.kiln(["gc", "--json"], environment: environment)
        #expect(json.status == .exited(1))
        let error = try errorBody(json)
        #expect(error["code"] as? String == "system-call")
        let message = error["message"] as? String ?? ""
        #expect(message.contains("/dev/null/state") && message.contains("Not a directory"), "\(message)")
        #expect((error["cause"] as? String)?.contains("NSPOSIXErrorDomain") == true, "\(error)")

        let text = try host.kiln(["gc"], environment: environment)
        #expect(text.status == .exited(1))
        #expect(text.stderr.hasPrefix("error: ") && text.stderr.contains("Not a directory"), "\(text.stderr)")
    }

    @Test func parserErrorsAreDocumentsToo() throws {
        let host = CLIHost()
        defer { host.cleanUp() }
        let json = try host.kiln(["stop", "--json"])
        #expect(json.status == .exited(64))
        let error = try errorBody(json)
        #expect(error["code"] as? String == "invalid-argument")
        #expect((error["message"] as? String)?.contains("name the instances to stop") == true)

        let text = try host.kiln(["stop"])
        #expect(text.status == .exited(64))
        #expect(text.stderr.contains("name the instances to stop"))
        #expect(text.stderr.contains("Usage: kiln stop"))

        let unknown = try host.kiln(["bench", "serve", "hello", "--placement", "nowhere", "--json"])
        #expect(unknown.status == .exited(64))
        #expect((try errorBody(unknown)["message"] as? String)?.contains("isolated") == true)

        let help = try host.kiln(["ls", "--help"])
        #expect(help.status == .exited(0))
        #expect(help.stdout.contains("USAGE: kiln ls"))
    }

    /// kiln-shim runs on every restore, cold start and bake, between kiln and runc. SwiftPM links
    /// even a C executable with Swift's runtime (its start-up object, libswiftCore and, with
    /// `--static-swift-stdlib`, libstdc++): 8.7 MB that took 1.9 ms from the shim's exec to
    /// runc's where a plain C program takes 0.6. Package.swift links it as a static executable
    /// without Swift's start-up files; this holds it there.
    @Test func theShimIsAStaticCExecutableWithoutSwiftsRuntime() throws {
        let shim = (kilnBinary as NSString).deletingLastPathComponent + "/kiln-shim"
        let elf = try #require(FileManager.default.contents(atPath: shim), "no kiln-shim beside \(kilnBinary)")
        let bytes = [UInt8](elf)
        try #require(bytes.count > 64 && bytes[0..<4] == [0x7f, 0x45, 0x4c, 0x46] && bytes[4] == 2, "kiln-shim is not a 64-bit ELF file")
        func integer(at offset: Int, size: Int) -> Int {
            (0..<size).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) }
        }
        let headers = integer(at: 32, size: 8)
        let headerSize = integer(at: 54, size: 2)
        let headerCount = integer(at: 56, size: 2)
        let types = (0..<headerCount).map { integer(at: headers + $0 * headerSize, size: 4) }
        let interpreter = 3  // PT_INTERP: the dynamic loader the kernel starts first
        #expect(!types.isEmpty && !types.contains(interpreter), "kiln-shim is linked dynamically (program headers \(types))")
        #expect(elf.range(of: Data("swift_retain".utf8)) == nil, "kiln-shim carries Swift's runtime")
    }

    /// Ctrl-C (SIGINT) or SIGTERM during a bake stops it the way a failure would: an
    /// `interrupted` error, exit status 130, and nothing of the bake left (its container and
    /// service, cgroups, network namespace, scratch directory), without `kiln gc`.
    @Test(arguments: [SIGINT, SIGTERM])
    func aSignalStopsABakeAndLeavesNothingBehind(_ number: Int32) async throws {
        let host = CLIHost()
        defer { host.cleanUp() }
        try FileManager.default.createDirectory(atPath: host.base, withIntermediateDirectories: true)
        let output = "\(host.base)/bake.json"
        let file = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try #require(file >= 0)
        // A service that never answers: the bake waits for its readiness until the signal.
        let marker = "kiln-interrupt-\(getpid())-\(number)"
        let pid = try Subprocess.spawn(
            kilnBinary,
            [
                "bake", "silent", "--port", "8080", "--ready", "/", "--ready-timeout", "120", "--no-compact", "--json", "--", "/bin/sh", "-c",
                "while :; do sleep 1; done", marker,
            ],
            environment: host.environment, stdout: .descriptor(file), stderr: .null)
        close(file)
        var exited: TerminationStatus?
        defer { if exited == nil { kill(pid, SIGKILL) } }

        // Its service runs in the bake's cgroup: the bake is under way.
        let started = await eventually(timeout: .seconds(60)) { !serviceProcesses(marker).isEmpty }
        try #require(started, "the bake's service never started")
        kill(pid, number)
        exited = try await onDedicatedThread { Subprocess.wait(pid) }
        #expect(exited == .exited(130), "kiln bake ended with \(String(describing: exited))")
        let document = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output))) as? [String: Any]
        let error = try #require(document?["error"] as? [String: Any], "not an error document: \(String(describing: document))")
        #expect(error["code"] as? String == "interrupted", "\(error)")

        #expect(serviceProcesses(marker).isEmpty, "the bake's service still runs")
        try expectNothingLeft(on: host)
    }

    /// A benchmark stopped by Ctrl-C stops what it made for itself: `kiln bench serve`
    /// interrupted while its in-process gateway keeps an instance up (the warm-up under load)
    /// ends with `interrupted` and leaves no instance, container, cgroup or namespace, without
    /// `kiln gc`. (Cancelled, the gateway used to return without stopping its instances.)
    @Test func aSignalStopsABenchmarkAndLeavesNothingBehind() async throws {
        let host = CLIHost()
        defer { host.cleanUp() }
        try host.bakeStaticSite("benchhttp")

        let output = "\(host.base)/bench.out"
        let file = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try #require(file >= 0)
        let pid = try Subprocess.spawn(
            kilnBinary,
            [
                "bench", "serve", "benchhttp", "--trials", "1", "--path", "/", "--seconds", "30", "--rounds", "1", "--no-reference", "--placement",
                "shared",
            ],
            environment: host.environment, stdout: .descriptor(file), stderr: .descriptor(file))
        close(file)
        var exited: TerminationStatus?
        defer { if exited == nil { kill(pid, SIGKILL) } }

        let printed = { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        let warming = await eventually(timeout: .seconds(120)) { printed().contains("warming up") }
        try #require(warming, "the benchmark never reached its warm-up: \(printed())")
        let instances = { (try? FileManager.default.contentsOfDirectory(atPath: "\(host.state)/instances")) ?? [] }
        #expect(!instances().isEmpty, "no instance under load")
        kill(pid, SIGINT)
        exited = try await onDedicatedThread { Subprocess.wait(pid) }
        #expect(exited == .exited(130), "kiln bench serve ended with \(String(describing: exited)): \(printed())")
        #expect(printed().contains("stopped by SIGINT"), "\(printed())")
        #expect(printed().contains("was stopped and removed"), "\(printed())")
        #expect(instances().isEmpty, "instances left: \(instances())")
        try expectNothingLeft(on: host)
    }

    /// No cgroup under the test's parent, nothing in the state's bakes, netns and runc
    /// directories, and nothing for `kiln gc` to find.
    private func expectNothingLeft(on host: CLIHost) throws {
        let parent = "/sys/fs/cgroup/memory\(host.cgroupParent)"
        let cgroups = ((try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []).filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: "\(parent)/\($0)", isDirectory: &isDirectory) && isDirectory.boolValue
        }
        #expect(cgroups.isEmpty, "cgroups left: \(cgroups)")
        for directory in ["bakes", "netns", "runc"] {
            let left = (try? FileManager.default.contentsOfDirectory(atPath: "\(host.state)/\(directory)"))?.filter { !$0.hasPrefix(".") } ?? []
            #expect(left.isEmpty, "\(directory) left: \(left)")
        }
        let garbage = try jsonObject(try host.kiln(["gc", "--json"]))
        #expect(
            ["instances", "containers", "networkNamespaces", "directories", "cgroups", "network"].allSatisfy {
                (garbage[$0] as? [Any])?.isEmpty ?? true
            }, "kiln gc found leftovers: \(garbage)")
    }

    /// A real snapshot and a real restored instance, then `ls`, `ps`, `request` and `rm` on a
    /// host where CRIU, runc and kiln-shim cannot be found; `run` there fails as it must.
    @Test func storeCommandsWorkWithoutCRIUAndRunc() throws {
        let host = CLIHost()
        defer { host.cleanUp() }
        // The hiding works: none of the tools is executable in there.
        for tool in CLIHost.tools where FileManager.default.isExecutableFile(atPath: tool) {
            let check = try host.runWithoutTools(["/bin/sh", "-c", "test -x \(tool)"])
            #expect(check.status == .exited(1), "\(tool) is still executable without tools: \(check)")
        }

        try host.bakeStaticSite("clihttp")
        let run = try host.kiln(["run", "clihttp", "--json"])
        try #require(run.status == .exited(0), "run failed: \(run.stderr)\(run.stdout)")
        let instances = try #require(try jsonObject(run)["instances"] as? [[String: Any]])
        let id = try #require(instances.first?["id"] as? String)

        let list = try host.kilnWithoutTools(["ls", "--json"])
        #expect(list.status == .exited(0), "\(list.stderr)")
        let snapshots = try jsonObject(list)["snapshots"] as? [[String: Any]] ?? []
        #expect(snapshots.map { $0["name"] as? String } == ["clihttp"])
        let listText = try host.kilnWithoutTools(["ls"])
        #expect(listText.status == .exited(0) && listText.stdout.contains("clihttp"))

        // ps without runc: the state comes from /proc (with runc it is runc's: the same here).
        for (label, ps) in [("without tools", try host.kilnWithoutTools(["ps", "--json"])), ("with runc", try host.kiln(["ps", "--json"]))] {
            #expect(ps.status == .exited(0), "\(label): \(ps.stderr)")
            let rows = try jsonObject(ps)["instances"] as? [[String: Any]] ?? []
            #expect(rows.map { $0["id"] as? String } == [id], "\(label)")
            #expect(rows.first?["state"] as? String == "running", "\(label): \(rows)")
            #expect(((rows.first?["memory"] as? [String: Any])?["rssBytes"] as? Int ?? 0) > 0, "\(label): \(rows)")
        }

        let request = try host.kilnWithoutTools(["request", String(id.prefix(id.count - 2)), "/", "--json"])
        #expect(request.status == .exited(0), "\(request.stderr)")
        let reply = try jsonObject(request)
        #expect(reply["status"] as? Int == 200)
        #expect((reply["body"] as? String)?.contains("kiln-cli-test") == true)
        let missing = try host.kilnWithoutTools(["request", id, "/nope.html", "--json"])
        #expect(missing.status == .exited(1))
        #expect(try jsonObject(missing)["status"] as? Int == 404)

        // rm refuses a snapshot in use (a KilnError document); --force would need runc to stop.
        let inUse = try host.kilnWithoutTools(["rm", "clihttp", "--json"])
        #expect(inUse.status == .exited(1))
        #expect(try errorBody(inUse)["code"] as? String == "snapshot-in-use")
        let forced = try host.kilnWithoutTools(["rm", "clihttp", "--force", "--json"])
        #expect(forced.status == .exited(3))
        #expect(["criu-missing", "runtime-missing"].contains(try errorBody(forced)["code"] as? String ?? ""), "\(forced.stdout)")
        // The commands that do need the tools say so.
        let restore = try host.kilnWithoutTools(["run", "clihttp", "--json"])
        #expect(restore.status == .exited(3))
        #expect(try errorBody(restore)["code"] as? String == "criu-missing")

        let stop = try host.kiln(["stop", id, "--json"])
        #expect(stop.status == .exited(0), "\(stop.stderr)")
        let none = try host.kilnWithoutTools(["ps", "--json"])
        #expect((try jsonObject(none)["instances"] as? [Any])?.isEmpty == true)
        let removed = try host.kilnWithoutTools(["rm", "clihttp", "--json"])
        #expect(removed.status == .exited(0), "\(removed.stderr)")
        #expect(try jsonObject(removed)["removed"] as? String == "clihttp")
        let empty = try host.kilnWithoutTools(["ls", "--json"])
        #expect((try jsonObject(empty)["snapshots"] as? [Any])?.isEmpty == true)
        #expect(!FileManager.default.fileExists(atPath: "\(host.store)/snapshots/clihttp"))
    }
}

/// The pids of the shells named `marker` (their `$0`): a test's service.
private func serviceProcesses(_ marker: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { pid in
        guard let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return false }
        let arguments = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return arguments.first == "/bin/sh" && arguments.last == marker
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
private func eventually(timeout: Duration, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return condition()
}
