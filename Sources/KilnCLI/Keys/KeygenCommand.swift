import ArgumentParser
import KilnSnapshot

/// `kiln keygen`: writes a new random snapshot key for `kiln bake --encrypt`; never overwrites a file.
struct Keygen: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a new random snapshot key (64 hex digits, mode 0600) for kiln bake --encrypt; never overwrites a file.")

    @Argument(help: "Where to write the key (must not exist).")
    var path: String

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let key = try SnapshotKey.generate(at: path)
        if common.json {
            Output.printJSON(["path": key.source, "keyID": key.id])
        } else {
            print("wrote a new key to \(key.source) (key id \(key.id))")
            Output.progress("keep a copy somewhere safe: snapshots baked with --encrypt \(key.source) cannot be restored without it")
        }
    }
}
