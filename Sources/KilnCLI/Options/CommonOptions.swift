import ArgumentParser
import KilnEngine
import KilnSnapshot
import Logging

/// Options every command shares: `--json` and `-v`.
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

    /// Opens kiln for a command that makes, restores or stops containers: root, CRIU, runc and
    /// kiln-shim are checked first.
    func openKiln(toDo action: String) throws -> Kiln {
        try Kiln.open(logger: makeLogger(), toDo: action)
    }

    /// Opens kiln for a command that only reads the store and the instance records, removes a
    /// snapshot or talks to an instance: root is checked, no tool is needed.
    func openStore(toDo action: String) throws -> KilnStoreAccess {
        try Kiln.openStore(logger: makeLogger(), toDo: action)
    }

    /// Opens kiln with the keys of `--key` and the waivers of `--ignore-host-check` (read first: a
    /// bad key file or fact name is a usage error).
    func openKiln(toDo action: String, keys: KeyOptions) throws -> Kiln {
        let keyring = try keys.keyring()
        let ignored = try HostFact.parse(keys.ignoreHostCheck)
        var kiln = try openKiln(toDo: action)
        kiln.keys = keyring
        kiln.hostCheck.ignored = ignored
        return kiln
    }
}
