import ArgumentParser
import Foundation
import KilnEngine
import KilnSnapshot
import KilnSystem

/// `kiln push`: a snapshot to an OCI registry, as kiln's artifact or a Podman checkpoint image.
struct Push: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Push a snapshot to an OCI registry as an artifact (its manifest and image files; an encrypted snapshot stays encrypted).",
        discussion: """
            REF is HOST[:PORT]/REPOSITORY[:TAG] (tag default: latest). The snapshot is verified before it leaves. \
            With --sign KEYFILE (kiln keygen --signing), an Ed25519 signature of the pushed manifest digest is stored \
            beside it under the tag sha256-<hex>.sig, for kiln pull --verify.
            """)

    @Argument(help: "Snapshot name.")
    var name: String

    @Argument(help: "Where to push it: HOST[:PORT]/REPOSITORY[:TAG].")
    var reference: String

    @Option(help: "Sign the pushed snapshot with this Ed25519 key (kiln keygen --signing).")
    var sign: String?

    @Option(
        help: ArgumentHelp(
            "snapshot: kiln's artifact (kiln pull reads it); checkpoint-image: a Podman checkpoint image (podman container restore IMAGE reads it; it holds the service's memory unencrypted, like kiln export).",
            valueName: "snapshot|checkpoint-image"))
    var format = "snapshot"

    @Option(help: "With --format checkpoint-image: where to write kiln's empty base image for 'podman load -i' (default: kiln-root-image.tar).")
    var baseImage = "kiln-root-image.tar"

    @OptionGroup var keys: KeyOptions

    @OptionGroup var registry: RegistryOptions

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let target = try RegistryReference(parsing: reference)
        let key = try sign.map { try SnapshotSigningKey(contentsOf: $0) }
        guard ["snapshot", "checkpoint-image"].contains(format) else {
            throw KilnError(.invalidArgument, "--format '\(format)' is not a push format", hint: "use snapshot (the default) or checkpoint-image")
        }
        if format == "checkpoint-image" {
            guard sign == nil else {
                throw KilnError(
                    .invalidArgument, "--sign is for kiln's own format",
                    hint: "sign checkpoint images with the registry's tools (cosign, skopeo --sign-by)")
            }
            let kiln = try common.openKiln(toDo: "push a checkpoint image", keys: keys)
            let path = baseImage.hasPrefix("/") ? baseImage : FileManager.default.currentDirectoryPath + "/" + baseImage
            let result = try await kiln.pushCheckpointImage(name, to: target, access: registry.access, baseImage: path)
            if common.json {
                Output.printJSON(result)
            } else {
                print(
                    "pushed \(name) to \(result.reference) as a Podman checkpoint image (\(Output.bytes(result.layerBytes)), in \(Output.ms(result.pushMs))): it holds the service's memory unencrypted"
                )
                print("digest \(result.digest)")
                print("restore it with Podman:")
                for command in result.podmanCommands { print("  \(command)") }
            }
            return
        }
        let kiln = try common.openKiln(toDo: "push a snapshot")
        let result = try await kiln.push(name, to: target, access: registry.access, signingKey: key)
        if common.json {
            Output.printJSON(result)
        } else {
            print(
                "pushed \(name) to \(result.reference): \(result.files) files, \(Output.bytes(result.sizeBytes)) in \(Output.ms(result.pushMs))")
            print("digest \(result.digest)")
            if let tag = result.signatureTag, let id = result.keyID { print("signed with key \(id) (tag \(tag))") }
        }
    }
}
