import ArgumentParser
import KilnSnapshot

/// `kiln keygen`: writes a new random snapshot key for `kiln bake --encrypt`; never overwrites a file.
struct Keygen: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Write a new random snapshot key (64 hex digits, mode 0600) for kiln bake --encrypt; never overwrites a file.")

    @Argument(help: "Where to write the key (must not exist).")
    var path: String

    @Flag(help: "Write an Ed25519 signing key for kiln push --sign instead, and its public key beside it as PATH.pub (for kiln pull --verify).")
    var signing = false

    @OptionGroup var common: CommonOptions

    func run() async throws {
        if signing {
            let key = try SnapshotSigningKey.generate(at: path)
            if common.json {
                Output.printJSON(["path": key.source, "publicKey": "\(key.source).pub", "keyID": key.id])
            } else {
                print("wrote a new signing key to \(key.source) and its public key to \(key.source).pub (key id \(key.id))")
                Output.progress(
                    "sign pushes with: kiln push --sign \(key.source) ...; hand \(key.source).pub to whoever pulls: kiln pull --verify \(key.source).pub ..."
                )
            }
            return
        }
        let key = try SnapshotKey.generate(at: path)
        if common.json {
            Output.printJSON(["path": key.source, "keyID": key.id])
        } else {
            print("wrote a new key to \(key.source) (key id \(key.id))")
            Output.progress("keep a copy somewhere safe: snapshots baked with --encrypt \(key.source) cannot be restored without it")
        }
    }
}
