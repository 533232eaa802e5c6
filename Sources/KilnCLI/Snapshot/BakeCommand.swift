import ArgumentParser
import Foundation
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem

/// `kiln bake`: cold-starts a service (a command line, or a container image) in a sandbox, waits
/// until it is ready, warms it up, and checkpoints it into a snapshot in the store.
struct Bake: AsyncParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "bake",
        abstract: "Cold-start a service in a sandbox, warm it up, and checkpoint it into a snapshot.",
        usage: """
            kiln bake <name> --port <port> [--ready <path>] [--warmup COUNT:PATH ...] -- <command> [args...]
              kiln bake <name> --image <ref> [--port <port>] [--ready <path>] [...] [-- <args replacing the image's CMD>]
            """)

    @Argument(help: "Snapshot name (lowercase letters, digits, '-', '_').")
    var name: String

    @Option(help: "TCP port the service listens on (it also gets PORT in its environment); with --image, default: the port the image exposes.")
    var port: Int?

    @Option(help: "Readiness path: the service is up once GET <path> answers 2xx.")
    var ready: String = "/"

    @Option(help: "Seconds to wait for readiness.")
    var readyTimeout: Double = 60

    @Option(help: "Warmup requests, COUNT:PATH (repeatable), replayed before the checkpoint.")
    var warmup: [String] = []

    @Option(help: "Directory bound read-only at the same path in the sandbox (default: current directory).")
    var app: String?

    @Option(help: "Use this directory as the (read-only) root filesystem instead of the host's /usr.")
    var rootfs: String?

    @Option(
        help: ArgumentHelp(
            "Bake from a container image: its root filesystem (read-only), Entrypoint, Cmd (replaced by a command after --), Env, WorkingDir, User and exposed port. REF: oci:DIR[:TAG] (an OCI layout), podman:NAME[:TAG] (containers-storage), docker:NAME[:TAG] (the Docker daemon).",
            valueName: "REF"))
    var image: String?

    @Option(name: .customLong("env"), help: "Extra environment variable KEY=VALUE (repeatable).")
    var environment: [String] = []

    @Option(help: "Memory limit of the sandbox: MiB, or a size with a unit (512m, 2g).")
    var memory = "1024"

    @Flag(help: "Do not run a full GC in the JVM before the checkpoint.")
    var noCompact = false

    @Flag(help: "Replace an existing snapshot of the same name.")
    var replace = false

    @Option(help: MemorySharingMode.help)
    var shareMemory: MemorySharingMode = .mapped

    /// Before `--share-memory`, KSM was the default and this turned it off; `mapped` is the default now.
    @Flag(help: .hidden)
    var noShareMemory = false

    @Flag(help: "Compress the memory images at rest (zstd); the first restore decompresses them into a tmpfs cache.")
    var compress = false

    @Option(
        help: ArgumentHelp(
            "After each restore, POST {\"instance\",\"snapshot\",\"hostname\"} to PATH before the copy takes traffic (reseed generators, renew ids); a non-2xx answer fails the restore.",
            valueName: "PATH"))
    var onRestore: String?

    @Option(
        help: ArgumentHelp(
            "Encrypt every image file at rest (AES-256-GCM) with the key in KEYFILE: 32 random bytes or 64 hex digits, mode 0600 (kiln keygen KEYFILE). Restores then need --key KEYFILE.",
            valueName: "KEYFILE"))
    var encrypt: String?

    @OptionGroup var networkOption: BakeNetworkOption

    @Flag(help: "Do not run kiln's CRaC agent in the JVM (no beforeCheckpoint/afterRestore callbacks; for a service that is no JVM).")
    var noAgent = false

    @Flag(
        help:
            "The application asks for its checkpoint (org.crac.Core.checkpointRestore(), e.g. Spring's -Dspring.context.checkpoint=onRefresh): wait for it instead of the readiness path and warm-up."
    )
    var onRequest = false

    @Flag(
        help:
            "Do not rehearse the restore before the checkpoint (with the agent, the service runs beforeCheckpoint, afterRestore, the readiness path and each warm-up path three times first, so its copies find that code already loaded and linked)."
    )
    var noRehearsal = false

    @Option(
        help: ArgumentHelp(
            "After the warm-up steps, go on sending their paths until the JVM's JIT compilers have been idle for a second, at most this long (0: stop after the steps). Copies then run compiled code, not code still being profiled.",
            valueName: "SECONDS"))
    var warmupSettle: Double = 90

    @Option(
        help: ArgumentHelp(
            "Accept a kind of preflight finding instead of refusing the dump (repeatable): \(CheckpointPreflight.Kind.allCases.map(\.rawValue).joined(separator: ", ")).",
            valueName: "KIND"))
    var allow: [String] = []

    @Flag(help: "Start and warm up the service, run its beforeCheckpoint, print what would block a checkpoint, and stop (nothing is stored).")
    var preflight = false

    @OptionGroup var common: CommonOptions

    @Argument(parsing: .postTerminator, help: "The service's command line.")
    var command: [String] = []

    /// `kiln bake --preflight --json`.
    struct PreflightReport: Encodable {
        struct Item: Encodable {
            var kind: String
            var process: String
            var what: String
            var why: String
            var fix: String
            var allowed: Bool
            /// A socket's remote `address:port`, a file's path.
            var peer: String?
            var path: String?
            /// The Java stack of its first I/O (with the agent).
            var openedBy: CheckpointPreflight.OpeningStack?
        }
        var name: String
        var blocked: Bool
        var findings: [Item]
    }

    func run() async throws {
        // The key first: a bad key file should not cost a cold start.
        let key = try encrypt.map { try SnapshotKey(contentsOf: $0) }
        let current = FileManager.default.currentDirectoryPath
        let reference = try image.map { try ImageReference(parsing: $0, relativeTo: current) }
        if reference != nil, rootfs != nil {
            throw KilnError(.invalidArgument, "--image and --rootfs both give a root filesystem", hint: "pass only one of them")
        }
        guard reference != nil || port != nil else {
            throw KilnError(.invalidArgument, "no --port given", hint: "pass the port the service listens on, e.g. --port 8080")
        }
        let allowed = try Set(
            allow.map { kind in
                guard let parsed = CheckpointPreflight.Kind(rawValue: kind) else {
                    throw KilnError(
                        .invalidArgument, "--allow \(kind) is not a kind of preflight finding",
                        hint: "one of \(CheckpointPreflight.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return parsed
            })
        guard InputValidation.isSeconds(warmupSettle, allowZero: true) else {
            throw KilnError(
                .invalidArgument, "--warmup-settle \(warmupSettle) is out of range",
                hint: "pass seconds, e.g. --warmup-settle 90, or 0 to stop warming up after the --warmup steps")
        }
        let kiln = try common.openKiln(toDo: "bake a snapshot")
        let appDirectory = app.map { URL(fileURLWithPath: $0, relativeTo: URL(fileURLWithPath: current)).standardizedFileURL.path }
        // With --image, the image's configuration fills in the root, working directory and
        // (port 0) the port: see BakeRequest.image.
        let ownRoot = rootfs != nil || reference != nil
        let sandbox = SandboxSpec(
            command: command, environment: try SandboxSpec.environment(parsing: environment),
            workingDirectory: appDirectory ?? (ownRoot ? "/" : current),
            appDirectory: ownRoot ? appDirectory : (appDirectory ?? current),
            rootFilesystem: rootfs.map { .directory(URL(fileURLWithPath: $0).standardizedFileURL.path) } ?? .host,
            port: port ?? 0, memoryLimitBytes: try SandboxSpec.memoryLimit(parsing: memory))
        var request = BakeRequest(
            name: name, sandbox: sandbox, readiness: ReadinessCheck(path: ready, timeoutSeconds: readyTimeout),
            warmup: try warmup.map(WarmupStep.init(parsing:)), compact: !noCompact, replace: replace,
            shareMemory: shareMemory.mergesPages && !noShareMemory, compress: compress, encryptionKey: key, restoreHook: onRestore, image: reference,
            network: networkOption.network, agent: !noAgent)
        request.onRequest = onRequest
        request.rehearseRestore = !noRehearsal
        request.warmupSettleLimit = .milliseconds(Int(warmupSettle * 1000))
        request.allow = allowed
        let preflightOnly = preflight
        let progress: @Sendable (BakeEvent) -> Void = { event in
            switch event {
            case .importingImage(let reference): Output.progress("copying and unpacking image \(reference)...")
            case .importedImage(let image):
                Output.progress(
                    "image \(image.reference) (\(image.image.manifestDigest.prefix(19))): copied in \(Output.ms(image.copyMs)), unpacked in \(Output.ms(image.unpackMs))"
                )
            case .starting(let command): Output.progress("starting \(command.joined(separator: " ")) in a sandbox...")
            case .ready(let ms): Output.progress("ready after \(Output.ms(ms)) (cold start)")
            case .warmingUp(let step): Output.progress("warming up: \(step.count) x GET \(step.path)")
            case .warmedUp(let ms, let requests): Output.progress("warmed up: \(requests) requests in \(Output.ms(ms))")
            case .settlingCompilers(let limit):
                Output.progress("warming up until the JIT compilers are idle (at most \(Output.ms(limit.milliseconds)))...")
            case .settledCompilers(let ms, let requests, let settled):
                Output.progress(
                    settled
                        ? "JIT compilers idle after \(requests) more requests in \(Output.ms(ms))"
                        : "JIT compilers still busy after \(requests) more requests in \(Output.ms(ms)) (the --warmup-settle limit); checkpointing anyway"
                )
            case .beforeCheckpoint(let ms, let resources, let app):
                Output.progress(
                    "\(app ? "the application asked for its checkpoint; " : "")beforeCheckpoint of \(resources.map(String.init) ?? "?") CRaC resources done in \(Output.ms(ms))"
                )
            case .rehearsedRestore(let ms):
                Output.progress(
                    "restore rehearsed in \(Output.ms(ms)) (beforeCheckpoint, afterRestore, readiness once, each warm-up path three times)")
            case .preflight(let lines, let blocked):
                Output.progress("preflight: \(blocked ? "blocked" : "ok")")
                if !preflightOnly { for line in lines { Output.progress("  \(line)") } }
            case .compacting: Output.progress("compacting (full GC)...")
            case .compacted(let ms, _, let note): Output.progress("compacted in \(Output.ms(ms)): \(note)")
            case .checkpointing: Output.progress("checkpointing...")
            case .checkpointed(let ms): Output.progress("checkpointed in \(Output.ms(ms))")
            case .storing: Output.progress("storing and digesting the images...")
            case .encrypting(let keyID): Output.progress("encrypting the images (\(SnapshotCipher.name), key \(keyID))...")
            }
        }
        if preflight {
            let findings = try await kiln.preflight(request, progress: progress)
            let blocked = CheckpointPreflight.blocked(findings, allowed: allowed) != nil
            if common.json {
                Output.printJSON(
                    PreflightReport(
                        name: name, blocked: blocked,
                        findings: findings.map {
                            .init(
                                kind: $0.kind.rawValue, process: $0.process, what: $0.what, why: $0.why, fix: $0.fix,
                                allowed: allowed.contains($0.kind), peer: $0.peer, path: $0.path, openedBy: $0.openedBy)
                        }))
            } else {
                for line in CheckpointPreflight.render(findings, allowed: allowed) { print(line) }
                print(blocked ? "\nA bake would refuse the dump (see the fixes above, or --allow KIND)." : "\nA bake would dump this service.")
            }
            return
        }
        let manifest = try await kiln.bake(request, progress: progress)
        if common.json {
            Output.printJSON(manifest)
        } else {
            print(
                Output.table(
                    ["SNAPSHOT", "COLD START", "WARMUP", "COMPACT", "CHECKPOINT", "SIZE"],
                    [
                        [
                            manifest.name, Output.ms(manifest.timings.coldStartMs), Output.ms(manifest.timings.warmupMs),
                            Output.ms(manifest.timings.compactMs), Output.ms(manifest.timings.checkpointMs), Output.bytes(manifest.sizeBytes),
                        ]
                    ]))
        }
    }
}
