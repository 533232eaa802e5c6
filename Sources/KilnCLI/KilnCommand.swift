import ArgumentParser
import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging


public struct KilnCommand: AsyncParsableCommand {
    public init() {}

    /// Parses the process's arguments, runs the command and exits: what `kiln`'s main does.
    /// (Called from an async function so that ArgumentParser's async entry point is the one
    /// chosen; top-level code would pick the synchronous one, which refuses async commands.)
    public static func runFromCommandLine() async {
        await main()
    }

    public static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Snapshot-start runtime for JVM web services: bake a warmed-up service into a CRIU snapshot, restore copies in milliseconds.",
        discussion: """
            Snapshots live in $KILN_STORE (default /var/lib/kiln), run-time state in $KILN_STATE (default /run/kiln).
            Every command takes --json and then prints one JSON document.
            """,
        subcommands: [
            Doctor.self, Bake.self, Run.self, PS.self, Request.self, Stop.self, List.self, Remove.self, GC.self, Bench.self, Serve.self,
            Keygen.self, Export.self, Import.self, Push.self, Pull.self,
        ])
}

/// Options every command shares.
struct CommonOptions: ParsableArguments {
    @Flag(help: "Print one JSON document on stdout instead of text.")
    var json = false

    @Flag(name: .shortAndLong, help: "Log what kiln does (runc and CRIU invocations) to stderr.")
    var verbose = false

    func makeLogger() -> Logger {
        var logger = Logger(label: "kiln") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = verbose ? .debug : .warning
        return logger
    }

    func openKiln(toDo action: String) throws -> Kiln {
        try Kiln.open(logger: makeLogger(), toDo: action)
    }
}

/// `--key` and `--ignore-host-check` of the commands that restore.
struct KeyOptions: ParsableArguments {
    @Option(
        name: .customLong("key"),
        help: ArgumentHelp(
            "Key file of an encrypted snapshot (repeatable; the snapshot's manifest names the key it needs). NAME=KEYFILE: for snapshot NAME only.",
            valueName: "[NAME=]KEYFILE"))
    var keyFiles: [String] = []

    @Option(
        name: .customLong("ignore-host-check"),
        help: ArgumentHelp(
            "Restore even though this host differs from the snapshot's bake host in FACT (repeatable or comma-separated: \(HostFact.allCases.map(\.rawValue).joined(separator: ", "))).",
            valueName: "FACT"))
    var ignoreHostCheck: [String] = []

    func keyring() throws -> SnapshotKeyring { try SnapshotKeyring(arguments: keyFiles) }
}

extension CommonOptions {
    /// Opens kiln with the keys of `--key` (read first: a bad key file is a usage error).
    func openKiln(toDo action: String, keys: KeyOptions) throws -> Kiln {
        let keyring = try keys.keyring()
        let ignored = try HostFact.parse(keys.ignoreHostCheck)
        var kiln = try openKiln(toDo: action)
        kiln.keys = keyring
        kiln.hostCheck.ignored = ignored
        return kiln
    }
}

/// Runs a command body, printing a KilnError the way a user (or, with --json, a script) can use.
func reporting(_ common: CommonOptions, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as KilnError {
        if common.json {
            Output.printJSON(ErrorDocument(error: .init(error)))
        } else {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        }
        throw ExitCode(error.exitCode)
    }
}

struct ErrorDocument: Encodable {
    struct Body: Encodable {
        var code: String
        var message: String
        var action: String
        var hint: String?
        var details: [String]
        var logPath: String?

        init(_ error: KilnError) {
            code = error.code.rawValue
            message = error.message
            action = error.action
            hint = error.hint
            details = error.details
            logPath = error.logPath
        }
    }
    var error: Body
}

extension KilnError {
    /// 2 for usage errors, 3 for a host that is not ready, 1 for everything else.
    var exitCode: Int32 {
        switch code {
        case .invalidArgument, .snapshotNotFound, .instanceNotFound, .snapshotExists, .commandNotFound, .keyRequired, .keyMismatch, .imageNotFound: 2
        case .notRoot, .missingCapability, .criuMissing, .criuTooOld, .runtimeMissing, .toolMissing: 3
        default: 1
        }
    }
}
