import ArgumentParser
import Foundation
import KilnEngine
import KilnGateway
import KilnSystem
import Testing

@testable import KilnCLI

#if canImport(Glibc)
import Glibc
#endif

/// The commands parsed and run in-process: option defaults, what the parser refuses and with
/// which exit status, and how every kind of failure becomes the error document.
@Suite("commands in-process")
struct CommandParsingTests {
    func parse<Command: ParsableCommand>(_ arguments: [String], as type: Command.Type = Command.self) throws -> Command {
        let command = try KilnCommand.parseAsRoot(arguments)
        return try #require(command as? Command, "\(arguments) parsed as \(Swift.type(of: command))")
    }

    /// Without a `commandName`, ArgumentParser derives it with `String(describing:)` of the type,
    /// a dynamic cast that scans every protocol conformance of every loaded library the first
    /// time: ~4 ms of every `kiln` start (a quarter of `kiln --help`'s time, perf) for names it
    /// could have been told.
    @Test func everyCommandNamesItself() {
        func visit(_ command: any ParsableCommand.Type, path: String) {
            let configuration = command.configuration
            #expect(configuration.commandName != nil, "\(path) \(command) has no commandName")
            for child in configuration.subcommands {
                visit(child, path: "\(path) \(configuration.commandName ?? "?")")
            }
        }
        visit(KilnCommand.self, path: "")
    }

    /// What a stop signal's message calls the command: its path as typed, not its arguments.
    @Test func aCommandIsNamedByItsPath() {
        #expect(KilnCommand.commandPath(["bench", "startup", "hello", "--runs", "3"]) == "kiln bench startup")
        #expect(KilnCommand.commandPath(["run", "hello", "--count", "2"]) == "kiln run")
        #expect(KilnCommand.commandPath(["-v", "run", "hello"]) == "kiln")
    }

    /// A stopped benchmark says its own instances are gone; another command that its finished
    /// instances stay. The benchmarks, and only they, own what they start.
    @Test func theInterruptedHintSaysWhatIsLeft() {
        #expect(StopSignals.hint(removesFinished: true).contains("stopped and removed"))
        #expect(!StopSignals.hint(removesFinished: true).contains("keep running"))
        #expect(StopSignals.hint(removesFinished: false).contains("keep running"))
        func visit(_ command: any ParsableCommand.Type, path: String) -> [String] {
            let here = "\(path) \(command.configuration.commandName ?? "?")"
            let own = command is any OwnsWhatItStarts.Type ? [here] : []
            return own + command.configuration.subcommands.flatMap { visit($0, path: here) }
        }
        #expect(
            visit(KilnCommand.self, path: "").sorted()
                == ["kiln bench memory", "kiln bench serve", "kiln bench soak", "kiln bench standby", "kiln bench startup"].map { " \($0)" })
    }

    /// Every command but `kiln serve` (which drains on SIGTERM and SIGINT itself) stops through
    /// `StopSignals`: a signal cancels it and what it started is removed.
    @Test func onlyServeHandlesItsOwnStopSignals() {
        func visit(_ command: any ParsableCommand.Type) -> [String] {
            let configuration = command.configuration
            let own = command is any HandlesStopSignals.Type ? [configuration.commandName ?? "?"] : []
            return own + configuration.subcommands.flatMap(visit)
        }
        #expect(visit(KilnCommand.self) == ["serve"])
    }

    @Test func bakeDefaults() throws {
        let bake: Bake = try parse(["bake", "hello", "--port", "8080", "--", "java", "-jar", "app.jar"])
        #expect(bake.name == "hello")
        #expect(bake.port == 8080)
        #expect(bake.ready == "/")
        #expect(bake.readyTimeout == 60)
        #expect(bake.memory == "1024")
        #expect(bake.warmup.isEmpty && bake.environment.isEmpty)
        #expect(!bake.noCompact && !bake.replace && bake.shareMemory == .mapped && !bake.noShareMemory && !bake.compress)
        #expect(bake.encrypt == nil && bake.onRestore == nil && bake.image == nil && bake.rootfs == nil && bake.app == nil)
        #expect(bake.command == ["java", "-jar", "app.jar"])
        #expect(!bake.common.json && !bake.common.verbose)
        #expect(bake.warmupSettle == 90)

        // With --image the port may come from the image: no default is filled in.
        let image: Bake = try parse(["bake", "hello", "--image", "oci:/images/hello", "--ready-timeout", "90", "--json"])
        #expect(image.port == nil)
        #expect(image.readyTimeout == 90)
        #expect(image.common.json)
    }

    @Test func networkOptions() throws {
        let bake: Bake = try parse(["bake", "hello", "--port", "8080", "--", "java"])
        #expect(bake.networkOption.network == "kiln", "bake defaults to kiln's network")
        let loopback: Bake = try parse(["bake", "hello", "--port", "8080", "--network", "none", "--", "java"])
        #expect(loopback.networkOption.network == "none")
        let run: Run = try parse(["run", "hello"])
        #expect(run.networkOption.network == nil, "run restores on the snapshot's network")
        let runNone: Run = try parse(["run", "hello", "--network", "none"])
        #expect(runNone.networkOption.network == "none")
        let serve: Serve = try parse(["serve", "--network", "lab"])
        #expect(serve.networkOption.network == "lab")
    }

    @Test func serveDefaults() throws {
        let serve: Serve = try parse(["serve"])
        #expect(serve.listen == "127.0.0.1:8080")
        #expect(serve.admin == "127.0.0.1:8081")
        #expect(serve.concurrency == 8 && serve.maxInstances == 4 && serve.minInstances == 0)
        #expect(serve.keepAlive == 60 && serve.queueLimit == 256 && serve.queueTimeout == 30 && serve.requestTimeout == 60)
        #expect(serve.warm.isEmpty && serve.threads == nil && !serve.noColdStartFallback)

        let configuration = try serve.makeConfiguration()
        #expect(configuration.listen == ListenAddress(host: "127.0.0.1", port: 8080))
        #expect(configuration.admin == ListenAddress(host: "127.0.0.1", port: 8081))
        #expect(configuration.defaultPolicy.maxInstances == 4)
        #expect(configuration.defaultPolicy.concurrency == 8)
        #expect(configuration.requestTimeout == .seconds(60))
        #expect(configuration.standbyMode == .thaw)
        #expect(configuration.pageHoldBudgetBytes == nil, "the provider's default: a quarter of the host's memory")
    }

    /// `--hold-pages` reaches the gateway in bytes; a negative or absurd budget is refused with
    /// the option's name and an example.
    @Test func holdPagesIsABudgetInMiB() throws {
        let serve: Serve = try parse(["serve", "--hold-pages", "512"])
        #expect(try serve.makeConfiguration().pageHoldBudgetBytes == 512 << 20)
        let none: Serve = try parse(["serve", "--hold-pages", "0"])
        #expect(try none.makeConfiguration().pageHoldBudgetBytes == 0)
        for bad in ["-1", "\(Int.max)"] {
            let serve: Serve = try parse(["serve", "--hold-pages=\(bad)"])
            #expect {
                try serve.makeConfiguration()
            } throws: { error in
                "\(error)".contains("--hold-pages must be 0 to") && "\(error)".contains("--hold-pages 0 to hold nothing")
            }
        }
    }

    /// `--standby-mode` reaches the gateway's configuration and the CLI's restore; a value it does
    /// not know is refused by the parser, before anything starts.
    @Test func standbyModeIsParsedAndCheckedEverywhereItIsTaken() throws {
        let serve: Serve = try parse(["serve", "--standby", "hello=2", "--standby-mode", "ready"])
        #expect(try serve.makeConfiguration().standbyMode == .ready)
        let run: Run = try parse(["run", "hello", "--standby", "2", "--standby-mode", "ready"])
        #expect(run.standbyMode == .ready && run.standby == 2)
        let bench: Bench.Standby = try parse(["bench", "standby", "hello"])
        #expect(bench.standbyMode == .thaw)
        for command in [["serve"], ["run", "hello", "--standby", "1"], ["bench", "standby", "hello"]] {
            #expect(throws: (any Error).self) { try KilnCommand.parseAsRoot(command + ["--standby-mode", "warm"]) }
        }
    }

    @Test func benchDefaults() throws {
        let serve: Bench.ServeBenchmark = try parse(["bench", "serve", "hello"])
        #expect(serve.trials == 20 && serve.connections == 8 && serve.seconds == 5 && serve.rounds == 6)
        #expect(serve.paths.isEmpty && serve.placements.isEmpty && !serve.noReference)
        let placed: Bench.ServeBenchmark = try parse(["bench", "serve", "hello", "--placement", "isolated", "--path", "/a", "--path", "/b"])
        #expect(placed.placements == [.isolated])
        #expect(placed.paths == ["/a", "/b"])

        let soak: Bench.Soak = try parse(["bench", "soak", "hello"])
        #expect(soak.cycles == 1000 && soak.loadSeconds == 600 && soak.killEvery == 5 && soak.connections == 8 && soak.path == "/greet")
        let startup: Bench.Startup = try parse(["bench", "startup", "hello"])
        #expect(startup.runs == 5 && startup.versus == nil)
        let versus: Bench.Startup = try parse(["bench", "startup", "hello", "--versus", "hello-noagent", "--runs", "9"])
        #expect(versus.versus == "hello-noagent" && versus.runs == 9)
        let memory: Bench.Memory = try parse(["bench", "memory", "hello"])
        #expect(memory.copies == 8 && memory.restoreRuns == 3)
    }

    @Test func instanceCommandDefaults() throws {
        let run: Run = try parse(["run", "hello"])
        #expect(run.count == 1 && run.shareMemory == nil && run.keys.keyFiles.isEmpty)
        let ksm: Run = try parse(["run", "hello", "--share-memory", "ksm", "--count", "3"])
        #expect(ksm.shareMemory == .ksm && ksm.count == 3)
        let legacy: Run = try parse(["run", "hello", "--no-share-memory"])
        #expect(legacy.noShareMemory && legacy.shareMemory == nil)
        #expect(throws: (any Error).self) { try parse(["run", "hello", "--share-memory", "all"]) as Run }
        let request: Request = try parse(["request", "hello-1a2b3c", "/greet"])
        #expect(request.method == "GET" && request.data == nil)
        let stop: Stop = try parse(["stop", "--all"])
        #expect(stop.all && stop.instances.isEmpty)
        let remove: Remove = try parse(["rm", "hello"])
        #expect(!remove.force)
    }

    /// What the parser refuses exits 64 (EX_USAGE), as ArgumentParser's own main did.
    @Test func parserRefusalsExit64() async {
        #expect(await KilnCommand.execute(["stop", "--json"]) == 64)
        #expect(await KilnCommand.execute(["bench", "serve", "hello", "--placement", "nowhere"]) == 64)
        #expect(await KilnCommand.execute(["no-such-command"]) == 64)
        #expect(await KilnCommand.execute(["ls", "--no-such-flag", "--json"]) == 64)
        // --help is not a failure.
        #expect(await KilnCommand.execute(["ls", "--help"]) == 0)
    }

    /// keygen needs no root and no tools: run it for real, in-process.
    @Test func keygenRunsInProcess() async throws {
        let directory = "/tmp/kiln-cli-keygen-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/key"
        #expect(await KilnCommand.execute(["keygen", path, "--json"]) == 0)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(text.count == 64 && text.allSatisfy(\.isHexDigit))
        // Never overwritten: a usage error (2), and the key is unchanged.
        #expect(await KilnCommand.execute(["keygen", path]) == 2)
        #expect(try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == text)
        // A directory that does not exist: the errno reaches the user as a system-call error (1).
        #expect(await KilnCommand.execute(["keygen", "\(directory)/missing/key", "--json"]) == 1)
    }

    @Test func exitCodesFollowTheErrorCode() {
        #expect(KilnError(.invalidArgument, "x").exitCode == 2)
        #expect(KilnError(.snapshotNotFound, "x").exitCode == 2)
        #expect(KilnError(.instanceNotFound, "x").exitCode == 2)
        #expect(KilnError(.notRoot, "x").exitCode == 3)
        #expect(KilnError(.criuMissing, "x").exitCode == 3)
        #expect(KilnError(.runtimeMissing, "x").exitCode == 3)
        #expect(KilnError(.restoreFailed, "x").exitCode == 1)
        #expect(KilnError(.systemCall, "x").exitCode == 1)
        #expect(KilnError(.internalError, "x").exitCode == 1)
        // A command that has already reported (doctor, request) keeps its status.
        #expect(ErrorReport.report(ExitCode(3), json: true, parsing: false, parser: KilnCommand.self) == 3)
    }

    @Test func foundationAndPOSIXErrorsBecomeSystemCallErrors() throws {
        var thrown: (any Error)?
        do {
            try FileManager.default.createDirectory(atPath: "/dev/null/kiln", withIntermediateDirectories: true)
        } catch {
            thrown = error
        }
        let cocoa = try #require(thrown)
        #expect(!(cocoa is KilnError))
        let fromCocoa = ErrorReport.kilnError(for: cocoa)
        #expect(fromCocoa.code == .systemCall)
        #expect(fromCocoa.message.contains("/dev/null/kiln"))
        #expect(fromCocoa.message.contains("errno \(ENOTDIR)"), "\(fromCocoa.message)")
        #expect(fromCocoa.cause is CocoaError)
        #expect(ErrorDocument(fromCocoa).error.cause?.contains("NSCocoaErrorDomain") == true)

        let posix = ErrorReport.kilnError(for: POSIXError(.EACCES))
        #expect(posix.code == .systemCall)
        #expect(posix.message.contains("errno \(EACCES)"))
    }

    @Test func otherErrorsBecomeInternalErrors() throws {
        var thrown: (any Error)?
        do {
            _ = try JSONDecoder().decode([String: Int].self, from: Data("{ not json".utf8))
        } catch {
            thrown = error
        }
        let decoding = ErrorReport.kilnError(for: try #require(thrown))
        #expect(decoding.code == .internalError)
        #expect(decoding.code.rawValue == "internal")
        #expect(decoding.hint != nil)
        #expect(decoding.exitCode == 1)
        #expect(decoding.cause is DecodingError)
        #expect(ErrorDocument(KilnError(.invalidArgument, "x")).error.cause == nil)

        let original = KilnError(.snapshotInUse, "in use", action: "removing", hint: "stop it")
        let same = ErrorReport.kilnError(for: original)
        #expect(same.code == .snapshotInUse && same.message == "in use" && same.action == "removing" && same.hint == "stop it")
    }

    @Test func errorDocumentShape() throws {
        let document = ErrorDocument(KilnError(.snapshotNotFound, "no snapshot named 'x'", hint: "kiln ls", details: ["a", "b"]))
        let data = try JSONEncoder().encode(document)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let error = try #require(object["error"] as? [String: Any])
        #expect(error["code"] as? String == "snapshot-not-found")
        #expect(error["message"] as? String == "no snapshot named 'x'")
        #expect(error["hint"] as? String == "kiln ls")
        #expect(error["details"] as? [String] == ["a", "b"])
        #expect(error["action"] as? String == "")
        #expect(error["logPath"] == nil)
    }

    @Test func jsonFlagIsFoundBeforeTheTerminator() {
        #expect(ErrorReport.wantsJSON(["ls", "--json"]))
        #expect(!ErrorReport.wantsJSON(["bake", "x", "--", "service", "--json"]))
        #expect(!ErrorReport.wantsJSON(["ls"]))
    }
}
