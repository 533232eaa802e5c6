import ArgumentParser
import KilnSnapshot

/// `--key` of the commands that restore.
struct KeyOptions: ParsableArguments {
    @Option(
        name: .customLong("key"),
        help: ArgumentHelp(
            "Key file of an encrypted snapshot (repeatable; the snapshot's manifest names the key it needs). NAME=KEYFILE: for snapshot NAME only.",
            valueName: "[NAME=]KEYFILE"))
    var keyFiles: [String] = []

    func keyring() throws -> SnapshotKeyring { try SnapshotKeyring(arguments: keyFiles) }
}
