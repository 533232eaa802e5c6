import ArgumentParser
import Foundation
import KilnSystem

/// How a failure reaches the user: every error a command throws, and every argument the parser
/// refuses, ends up in ``report(_:json:parsing:parser:)``, which prints it once (the JSON error document
/// on stdout under `--json`, `error: ...` on stderr otherwise) and picks the exit status.
enum ErrorReport {
    /// Whether `--json` is among the arguments before `--` (for errors found before the command
    /// is parsed, when its `--json` flag cannot be read).
    static func wantsJSON(_ arguments: [String]) -> Bool {
        arguments.prefix { $0 != "--" }.contains("--json")
    }

    /// Prints `error` as `json` asks and returns the exit status for it. `parsing`: whether it
    /// came from parsing the arguments (then it is ArgumentParser's, whatever it wraps).
    static func report(_ error: any Error, json: Bool, parsing: Bool, parser: KilnCommand.Type) -> Int32 {
        if let code = error as? ExitCode, !parsing {
            // Thrown by a command that has already said what happened (doctor, request).
            return code.rawValue
        }
        if parsing || error is ValidationError || error is CleanExit {
            let status = parser.exitCode(for: error).rawValue
            if status == 0 {
                // --help and the like: what the parser would print.
                print(parser.fullMessage(for: error))
            } else if json {
                let failure = KilnError(
                    .invalidArgument, parser.message(for: error), hint: "'kiln help' lists the commands, 'kiln help COMMAND' their options")
                Output.printJSON(ErrorDocument(failure))
            } else {
                FileHandle.standardError.write(Data("\(parser.fullMessage(for: error))\n".utf8))
            }
            return status
        }
        let failure = kilnError(for: error)
        if json {
            Output.printJSON(ErrorDocument(failure))
        } else {
            FileHandle.standardError.write(Data("error: \(failure)\n".utf8))
        }
        return failure.exitCode
    }

    /// `error` as a ``KilnError``: itself, or for an error from below kiln (Foundation, POSIX,
    /// a decoder) one that keeps it as its cause, with code `system-call` when it carries an
    /// errno and `internal` otherwise.
    static func kilnError(for error: any Error) -> KilnError {
        if let error = error as? KilnError { return error }
        var failure = KilnError.wrapping(error, as: .internalError, describe(error))
        if let errno = failure.errno ?? underlyingErrno(error) {
            failure.code = .systemCall
            failure.message += ": \(errnoDescription(errno))"
        } else {
            failure.hint = "kiln did not expect this failure: run the command again with -v, and report it with that output if it persists"
        }
        return failure
    }

    /// The errno of a Foundation error's underlying POSIX error. (``KilnError/errno`` looks for
    /// it in the bridged NSError's userInfo, where on Linux it is an `Error`, not an `NSError`,
    /// so it misses FileManager's; `CocoaError.underlying` finds it.)
    private static func underlyingErrno(_ error: any Error) -> Int32? {
        guard let underlying = (error as? CocoaError)?.underlying else { return nil }
        if let posix = underlying as? POSIXError { return posix.code.rawValue }
        let ns = underlying as NSError
        return ns.domain == NSPOSIXErrorDomain ? Int32(ns.code) : nil
    }

    /// What failed, in words: Foundation's own text on Linux is "The operation could not be
    /// completed", so a file error says what it could not do to which file instead.
    private static func describe(_ error: any Error) -> String {
        if error is POSIXError { return "a system call failed" }
        guard let cocoa = error as? CocoaError, let path = cocoa.filePath else { return String(describing: error) }
        let code = cocoa.code.rawValue
        return ((256..<512).contains(code) ? "cannot read " : (512..<1024).contains(code) ? "cannot write " : "file operation failed: ") + path
    }
}

/// The JSON error document: `{"error": {"code", "message", "action", "hint", "details", "logPath",
/// "cause"}}`, the same for every failure (`code` is one of ``KilnError/Code``'s raw values;
/// `cause`, when there is one, the error from below kiln it started as).
struct ErrorDocument: Encodable {
    struct Body: Encodable {
        var code: String
        var message: String
        var action: String
        var hint: String?
        var details: [String]
        var logPath: String?
        var cause: String?

        init(_ error: KilnError) {
            code = error.code.rawValue
            message = error.message
            action = error.action
            hint = error.hint
            details = error.details
            logPath = error.logPath
            cause = error.causeChain.dropFirst().first { !($0 is KilnError) }.map { String(describing: $0) }
        }
    }
    var error: Body

    init(_ error: KilnError) { self.error = Body(error) }
}

extension KilnError {
    /// 2 for usage errors, 3 for a host that is not ready, 1 for everything else.
    var exitCode: Int32 {
        switch code {
        case .invalidArgument, .snapshotNotFound, .instanceNotFound, .snapshotExists, .commandNotFound, .keyRequired, .keyMismatch, .imageNotFound: 2
        case .notRoot, .missingCapability, .criuMissing, .criuTooOld, .runtimeMissing, .toolMissing: 3
        // A shell's status for a command stopped by SIGINT (128 + 2), whichever signal it was.
        case .interrupted: 130
        default: 1
        }
    }
}
