import Foundation
import KilnSystem
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A typed client for the runc command line.
///
/// Every call logs runc's own messages as JSON to a file, so a failure can quote runc's error
/// lines instead of a bare exit status; CRIU's logs land in the work directory given to
/// checkpoint and restore.
public struct Runc: ContainerRuntime {
    /// The runc binary.
    public var binary: String
    /// runc's state directory (`--root`), kept apart from any other runc user's.
    public var stateRoot: String
    /// The CRIU binary runc must use (`--criu`).
    public var criuPath: String
    /// Where runc's JSON logs go.
    public var logDirectory: String
    /// The `kiln-shim` binary that supervises each container.
    public var shimPath: String
    public var logger: Logger
    /// Keeps runc's answer to `--version` between commands (nil: ask it every time).
    public var probes: ExecutableProbeCache?

    public init(binary: String, stateRoot: String, criuPath: String, logDirectory: String, shimPath: String, logger: Logger) {
        self.binary = binary
        self.shimPath = shimPath
        self.stateRoot = stateRoot
        self.criuPath = criuPath
        self.logDirectory = logDirectory
        self.logger = logger
    }

    /// Finds runc on PATH (or `$KILN_RUNC`).
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let explicit = environment["KILN_RUNC"], !explicit.isEmpty { return explicit }
        guard let path = ExecutableSearch.find("runc", in: (environment["PATH"] ?? "") + ":/usr/sbin:/usr/bin:/usr/local/sbin") else {
            throw KilnError(.runtimeMissing, "runc is not installed", hint: "run 'make setup' as root (it installs Debian's runc)")
        }
        return path
    }

    /// Finds `kiln-shim`: `$KILN_SHIM`, else beside the running executable (where SwiftPM
    /// builds it, for `kiln` and for the test runner alike), else on PATH.
    public static func locateShim(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let explicit = environment["KILN_SHIM"], !explicit.isEmpty { return explicit }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        var directory = (executable as NSString).deletingLastPathComponent
        // The test runner is .build/debug/kilnPackageTests.xctest; the shim sits beside it.
        if directory.hasSuffix(".xctest") { directory = (directory as NSString).deletingLastPathComponent }
        if FileManager.default.isExecutableFile(atPath: "\(directory)/kiln-shim") { return "\(directory)/kiln-shim" }
        if let found = ExecutableSearch.find("kiln-shim", in: environment["PATH"] ?? "") { return found }
        throw KilnError(
            .runtimeMissing, "kiln-shim was not found beside \(executable) nor on PATH",
            hint: "build with 'swift build' (it builds kiln-shim beside kiln), or set KILN_SHIM")
    }

    /// How long `runc run`, `restore` and `checkpoint` may take before kiln gives up on them.
    public var operationTimeout: Duration = .seconds(60)

    /// The status `runSupervised` reports for a runc it killed for taking too long.
    private enum TimedOut { static let status = TerminationStatus.exited(-2) }

    private func logFile(for id: String, _ verb: String) -> String { "\(logDirectory)/runc-\(verb)-\(id).log" }

    private func globalArguments(log: String) -> [String] {
        ["--root", stateRoot, "--log", log, "--log-format", "json", "--criu", criuPath]
    }

    /// Runs runc under a `kiln-shim` that owns the container's stdio and reaps it, and waits
    /// for runc itself to exit (the container goes on).
    ///
    /// A runc that does not report within `timeout` is killed with everything its shim started
    /// (one process group): a CRIU killed half-way through a restore leaves runc waiting forever
    /// for tasks that will never be resumed.
    private func runSupervised(
        _ verb: String, id: String, arguments: [String], logPath: String, mergeMemory: Bool, timeout: Duration
    ) async throws -> Int32 {
        let log = logFile(for: id, verb)
        try? FileManager.default.removeItem(atPath: log)
        let argv = (mergeMemory ? ["--merge"] : []) + [logPath, binary] + globalArguments(log: log) + arguments
        logger.debug("kiln-shim \(argv.joined(separator: " "))")
        let shim = self.shimPath
        let (shimPid, status) = try await onDedicatedThread { () throws -> (Int32, TerminationStatus) in
            let statusPipe = try ClosingPipe.make()
            let pid: Int32
            do {
                pid = try Subprocess.spawn(shim, argv, stdin: .null, stdout: .null, stderr: .null, extraDescriptors: [(statusPipe.write, 3)])
            } catch {
                statusPipe.closeBoth()
                throw error
            }
            close(statusPipe.write)
            defer { close(statusPipe.read) }
            let deadline = ContinuousClock.now + timeout
            var text = ""
            var byte: UInt8 = 0
            while true {
                var ready = pollfd(fd: statusPipe.read, events: Int16(POLLIN), revents: 0)
                let left = max(0, Int32(ContinuousClock.now.duration(to: deadline).milliseconds))
                let polled = poll(&ready, 1, left)
                if polled < 0, errno == EINTR { continue }
                guard polled > 0 else {
                    // The shim leads its own process group: runc, CRIU and the shim go together.
                    kill(-pid, SIGKILL)
                    return (pid, TimedOut.status)
                }
                guard read(statusPipe.read, &byte, 1) == 1, byte != UInt8(ascii: "\n") else { break }
                text.append(Character(UnicodeScalar(byte)))
            }
            return (pid, Int32(text).map(TerminationStatus.init(waitStatus:)) ?? .exited(-1))
        }
        if status == TimedOut.status {
            Thread.detachNewThread { ChildReaper.reap(shimPid, timeout: .seconds(60)) }
            throw KilnError(
                .runtimeFailed, "runc \(verb) did not finish within \(Int(timeout.milliseconds / 1000)) s and was killed",
                details: FailureLog.runcErrorMessages(inFile: log), logPath: log)
        }
        guard status.isSuccess else {
            // The shim exits once the container's processes are gone too (the caller's tear-down
            // kills any that runc left): reap it then, without holding up the error.
            Thread.detachNewThread { ChildReaper.reap(shimPid, timeout: .seconds(60)) }
            throw KilnError(.runtimeFailed, "runc \(verb) \(status)", details: FailureLog.runcErrorMessages(inFile: log), logPath: log)
        }
        try? FileManager.default.removeItem(atPath: log)
        return shimPid
    }

    private func runCaptured(_ verb: String, id: String, arguments: [String], input: String? = nil) async throws -> CommandOutput {
        let log = logFile(for: id, verb)
        try? FileManager.default.removeItem(atPath: log)
        let argv = globalArguments(log: log) + arguments
        logger.debug("runc \(argv.joined(separator: " "))")
        let output = try await Subprocess.run(binary, argv, input: input)
        guard output.status.isSuccess else {
            var details = FailureLog.runcErrorMessages(inFile: log)
            if details.isEmpty { details = output.stderr.split(separator: "\n").suffix(8).map(String.init) }
            throw KilnError(.runtimeFailed, "runc \(verb) \(output.status)", details: details, logPath: log)
        }
        try? FileManager.default.removeItem(atPath: log)
        return output
    }

    private func readPid(_ path: String) throws -> Int32 {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw KilnError(.runtimeFailed, "runc did not write the container's pid to \(path)") }
        return pid
    }

    public func start(_ instance: SandboxContainer, logPath: String) async throws -> ContainerProcess {
        let pidFile = "\(instance.bundlePath)/init.pid"
        let shimPid = try await runSupervised(
            "run", id: instance.id,
            arguments: ["run", "--detach", "--no-new-keyring", "--bundle", instance.bundlePath, "--pid-file", pidFile, instance.id],
            logPath: logPath, mergeMemory: false, timeout: operationTimeout)
        return ContainerProcess(pid: try readPid(pidFile), shimPid: shimPid)
    }

    public func checkpoint(id: String, dumpDirectory: String, workDirectory: String) async throws {
        do {
            _ = try await runCaptured(
                "checkpoint", id: id,
                arguments: ["checkpoint", "--image-path", dumpDirectory, "--work-path", workDirectory, id])
        } catch var error as KilnError {
            let criuLog = "\(workDirectory)/dump.log"
            if FileManager.default.fileExists(atPath: criuLog) {
                error.code = .checkpointFailed
                error.message = "CRIU could not checkpoint the service (\(error.message)); from its log:"
                error.hint =
                    "the lines above say what CRIU could not dump; a service must not hold connections to peers outside its sandbox (or to itself) when it is checkpointed"
                error.details = FailureLog.criuErrorLines(inFile: criuLog) + error.details
                error.logPath = criuLog
            }
            throw error
        }
    }

    public func restore(
        _ instance: SandboxContainer, dumpDirectory: String, workDirectory: String, logPath: String, mergeMemory: Bool
    ) async throws -> ContainerProcess {
        let pidFile = "\(instance.bundlePath)/init.pid"
        let shimPid: Int32
        do {
            shimPid = try await runSupervised(
                "restore", id: instance.id,
                arguments: [
                    "restore", "--detach", "--bundle", instance.bundlePath,
                    "--image-path", dumpDirectory, "--work-path", workDirectory, "--pid-file", pidFile, instance.id,
                ],
                logPath: logPath, mergeMemory: mergeMemory, timeout: operationTimeout)
        } catch var error as KilnError {
            let criuLog = "\(workDirectory)/restore.log"
            error.code = .restoreFailed
            if FileManager.default.fileExists(atPath: criuLog) {
                error.message = "CRIU could not restore the snapshot (\(error.message)); from its log:"
                error.hint =
                    error.hint
                    ?? "a restore needs the same files the service had open at the checkpoint (its app directory, /usr) unchanged; re-bake after changing them"
                error.details = FailureLog.criuErrorLines(inFile: criuLog) + error.details
                error.logPath = criuLog
            }
            throw error
        }
        return ContainerProcess(pid: try readPid(pidFile), shimPid: shimPid)
    }

    public func exec(id: String, _ command: [String], input: String? = nil) async throws -> CommandOutput {
        try await runCaptured("exec", id: id, arguments: ["exec", id] + command, input: input)
    }

    public func delete(id: String) async throws {
        let log = logFile(for: id, "delete")
        let output = try await Subprocess.run(binary, globalArguments(log: log) + ["delete", "--force", id])
        try? FileManager.default.removeItem(atPath: log)
        // "does not exist" is success: the goal is that the container is gone.
        if !output.status.isSuccess, !output.stderr.contains("does not exist"),
            (try? await list().contains(where: { $0.id == id })) ?? true
        {
            throw KilnError(.runtimeFailed, "runc delete \(id) \(output.status)", details: [output.stderr])
        }
    }

    public func list() async throws -> [ContainerState] {
        guard FileManager.default.fileExists(atPath: stateRoot) else { return [] }
        let output = try await listing()
        let text = output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty, text != "null" else { return [] }
        return try JSONDecoder().decode([ContainerState].self, from: Data(text.utf8))
    }

    /// `runc list`, asked again (up to three times) when a container went away while runc read
    /// it: runc reads the state directory, then each container's state, and one deleted in
    /// between (another copy being stopped) fails the whole listing with "no such file or
    /// directory" (seen in `kiln bench standby`: a gateway's stop of one copy reported failed
    /// because its check listed the containers as another copy's delete finished).
    private func listing() async throws -> CommandOutput {
        var attempt = 1
        while true {
            do {
                return try await runCaptured("list", id: "all", arguments: ["list", "--format", "json"])
            } catch let error as KilnError where attempt < 3 && error.details.contains(where: { $0.contains("no such file or directory") }) {
                attempt += 1
            }
        }
    }

    public func versionDescription() -> String { "runc \(version())" }

    /// runc, the CRIU it runs and kiln-shim: every restore executes each of them.
    public var programs: [String] { [binary, criuPath, shimPath].filter { $0.hasPrefix("/") } }

    /// runc's version line, e.g. "1.1.5+ds1".
    public func version() -> String {
        let output = try? (probes?.output(of: binary, ["--version"]) ?? Subprocess.run(binary, ["--version"]))
        let first = output?.stdout.split(separator: "\n").first ?? "unknown"
        return first.replacingOccurrences(of: "runc version ", with: "")
    }
}
