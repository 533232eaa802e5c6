import ArgumentParser
import Foundation
import KilnEngine
import KilnSnapshot
import KilnSystem

/// `kiln pull`: a snapshot from an OCI registry into the store, after the signature and host checks.
struct Pull: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Pull a snapshot from an OCI registry into the store, verified, after checking this host can restore it.",
        discussion: """
            Before any image file is downloaded, kiln checks the signature (--verify) and compares the facts the \
            snapshot recorded at bake (CPU, kernel, CRIU, JDK, glibc, ...) with this host's; then every file is checked \
            against its digest and the snapshot's SHA-256s, and only a complete snapshot lands in the store.
            """)

    @Argument(help: "What to pull: HOST[:PORT]/REPOSITORY[:TAG].")
    var reference: String

    @Option(help: "Store it under this name (default: the name it was baked as).")
    var name: String?

    @Option(help: "Require a signature by this public key (KEYFILE.pub of kiln keygen --signing; repeatable: any of them).")
    var verify: [String] = []

    @Flag(help: "Replace a snapshot of the same name.")
    var replace = false

    @Option(
        name: .customLong("ignore-host-check"),
        help: ArgumentHelp("Pull even though this host differs from the bake host in FACT (repeatable or comma-separated).", valueName: "FACT"))
    var ignoreHostCheck: [String] = []

    @OptionGroup var registry: RegistryOptions

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let source = try RegistryReference(parsing: reference)
        let trusted = try verify.map { try SnapshotVerifyingKey(contentsOf: $0) }
        let ignored = try HostFact.parse(ignoreHostCheck)
        var kiln = try common.openKiln(toDo: "pull a snapshot")
        kiln.hostCheck.ignored = ignored
        let result = try await kiln.pull(source, as: name, access: registry.access, trusted: trusted, replace: replace)
        if common.json {
            Output.printJSON(result)
        } else {
            print(
                "pulled \(result.reference) as \(result.snapshot): \(result.files) files, \(Output.bytes(result.sizeBytes)) in \(Output.ms(result.pullMs)) (verified in \(Output.ms(result.verifyMs)))"
            )
            print("digest \(result.digest)" + (result.signedBy.map { ", signed by key \($0)" } ?? ""))
            if !result.hostNotes.isEmpty {
                Output.progress("this host differs from the bake host (harmless or waived):")
                for line in HostCheck.table(result.hostNotes) { Output.progress("  \(line)") }
            }
        }
    }
}
