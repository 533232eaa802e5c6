import ArgumentParser
import Foundation
import KilnEngine

/// `kiln export`: writes a snapshot as a Podman checkpoint archive (and kiln's empty base image
/// beside it) that `podman container restore --import` reads.
struct Export: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a snapshot as a Podman checkpoint archive (podman container restore --import reads it).",
        discussion: """
            The archive holds the service's process memory, unencrypted and uncompressed whatever the snapshot's \
            --encrypt or --compress (secrets included: keys, tokens, --env values): it is written mode 0600; keep it like \
            the snapshot store. An encrypted snapshot needs its --key. Podman also needs kiln's empty base image \
            (written beside the archive, --base-image): podman load -i it first, and restore with --runtime runc.
            """)

    @Argument(help: "Snapshot name.")
    var name: String

    @Option(name: .shortAndLong, help: "The archive to write (default: NAME.tar.zst; zstd, as Podman 4.3 compresses its exports).")
    var output: String?

    @Option(help: "Where to write kiln's empty base image for 'podman load -i' (default: kiln-root-image.tar beside the archive).")
    var baseImage: String?

    @Flag(help: "Overwrite an existing archive.")
    var replace = false

    @OptionGroup var keys: KeyOptions

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let kiln = try common.openKiln(toDo: "export a snapshot", keys: keys)
        let archive = absolute(output ?? "\(name).tar.zst")
        let image = absolute(baseImage ?? ((archive as NSString).deletingLastPathComponent + "/kiln-root-image.tar"))
        let report = try await kiln.export(name, to: archive, baseImage: image, replace: replace)
        if common.json {
            Output.printJSON(report)
        } else {
            print(
                "wrote \(report.archive) (\(Output.bytes(report.archiveBytes)), in \(Output.ms(report.milliseconds))): it holds the service's memory, keep it private"
            )
            print("wrote \(report.baseImage) (the empty base image \(report.baseImageName))")
            print("restore it with Podman:")
            for command in report.podmanCommands { print("  \(command)") }
        }
    }
}
