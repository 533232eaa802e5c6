import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `kiln`: the root command. Its subcommands live one per file, in a folder per noun (Snapshot,
/// Instance, Host, Keys, Gateway, Bench); every failure that reaches it is reported here, once,
/// as text or (with `--json`) as the JSON error document (ErrorReport.swift).
public struct KilnCommand: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Snapshot-start runtime for JVM web services: bake a warmed-up service into a CRIU snapshot, restore copies in milliseconds.",
        discussion: """
            Snapshots live in $KILN_STORE (default /var/lib/kiln), run-time state in $KILN_STATE (default /run/kiln).
            Every command takes --json and then prints one JSON document.
            """,
        subcommands: [
            DoctorCommand.self, Bake.self, Run.self, Thaw.self, PS.self, Request.self, Stop.self, List.self, Remove.self, GC.self, Bench.self,
            Serve.self,
            Keygen.self, Export.self, Import.self, Push.self, Pull.self,
        ])

    /// Parses the process's arguments, runs the command and exits with its status: what `kiln`'s
    /// main does. (Not ArgumentParser's `main()`: it would let an error that is not a ``KilnError``
    /// escape `--json`; and top-level code would pick its synchronous one, which refuses async
    /// commands.)
    public static func runFromCommandLine() async -> Never {
        Glibc.exit(await execute(Array(CommandLine.arguments.dropFirst())))
    }

    /// Parses `arguments`, runs the command they name and returns the exit status: 0, or the
    /// status of the failure after reporting it (``ErrorReport``): 64 for arguments the parser
    /// refuses, 2 for other usage errors, 3 for a host that is not ready, 1 for anything else.
    package static func execute(_ arguments: [String]) async -> Int32 {
        let command: ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            return ErrorReport.report(error, json: ErrorReport.wantsJSON(arguments), parsing: true, parser: self)
        }
        do {
            if var asynchronous = command as? AsyncParsableCommand {
                if command is HandlesStopSignals {
                    try await asynchronous.run()
                } else {
                    let running = RunningCommand(command: asynchronous)
                    try await StopSignals.cancelling(what: commandPath(arguments), removesFinished: command is OwnsWhatItStarts) {
                        try await running.run()
                    }
                }
            } else {
                var synchronous = command
                try synchronous.run()
            }
            return 0
        } catch {
            // A command other than kiln's own is ArgumentParser's (`--help`, `help COMMAND`): what
            // it throws is the parser's, as when parsing.
            guard let own = command as? ReportingCommand else {
                return ErrorReport.report(error, json: ErrorReport.wantsJSON(arguments), parsing: true, parser: self)
            }
            return ErrorReport.report(error, json: own.common.json, parsing: false, parser: self)
        }
    }
}

extension KilnCommand {
    /// The command `arguments` name, as typed ("kiln bench startup"), for messages.
    static func commandPath(_ arguments: [String]) -> String {
        subcommand(named: arguments).path
    }

    /// The command the leading words of `words` name (the longest run of subcommand names), and
    /// its path as typed; `KilnCommand` itself, "kiln", when the first word names none.
    static func subcommand(named words: [String]) -> (command: any ParsableCommand.Type, path: String) {
        var command: any ParsableCommand.Type = self
        var path = ["kiln"]
        for word in words {
            guard let next = command.configuration.subcommands.first(where: { $0.configuration.commandName == word }) else { break }
            command = next
            path.append(word)
        }
        return (command, path.joined(separator: " "))
    }
}

/// A command that stops on SIGINT and SIGTERM in its own way (`kiln serve`: it drains), rather
/// than through ``StopSignals``.
protocol HandlesStopSignals {}

/// A command whose instances, gateway and snapshot variants are all its own (a benchmark's, made
/// for the measurement): stopped by a signal, it removes them, finished ones too, where another
/// command's finished instances (`kiln run --count N`'s first copies) are the user's and stay.
protocol OwnsWhatItStarts {}

/// A command handed to the task that runs it. Unchecked: the command is used by that one task
/// only, once it has been handed over.
private struct RunningCommand: @unchecked Sendable {
    var command: AsyncParsableCommand

    func run() async throws {
        var command = command
        try await command.run()
    }
}

/// A command with the shared options (`--json`, `-v`), so a failure is reported as it asked.
protocol ReportingCommand {
    var common: CommonOptions { get }
}
