import ArgumentParser
import KilnSnapshot

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
