import ArgumentParser
import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that this machine can checkpoint and restore, and say what to fix if not.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let checks = KilnEngine.Doctor.run()
        let failed = checks.contains { $0.status == .failed }
        if common.json {
            Output.printJSON(["ok": AnyEncodable(!failed), "checks": AnyEncodable(checks)])
        } else {
            print(Output.table(["CHECK", "STATUS", "DETAIL"], checks.map { [$0.name, $0.status.rawValue, $0.detail + ($0.fix.map { " -> fix: \($0)" } ?? "")] }))
            print(failed ? "\nkiln cannot run here yet: fix the failed checks above." : "\nThis machine can bake and restore.")
        }
        if failed { throw ExitCode(3) }
    }
}

struct Bake: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cold-start a service in a sandbox, warm it up, and checkpoint it into a snapshot.",
        usage: """
            kiln bake <name> --port <port> --ready <path> [--warmup COUNT:PATH ...] -- <command> [args...]
              kiln bake <name> --image <ref> [--port <port>] --ready <path> [...] [-- <args replacing the image's CMD>]
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

    @Option(help: ArgumentHelp(
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

    @Flag(help: "Do not let copies share identical memory pages (KSM): for services that must not share pages with other tenants.")
    var noShareMemory = false

    @Flag(help: "Compress the memory images at rest (zstd); the first restore decompresses them into a tmpfs cache.")
    var compress = false

    @Option(help: ArgumentHelp(
        "After each restore, POST {\"instance\",\"snapshot\",\"hostname\"} to PATH before the copy takes traffic (reseed generators, renew ids); a non-2xx answer fails the restore.",
        valueName: "PATH"))
    var onRestore: String?

    @Option(
        help: ArgumentHelp(
            "Encrypt every image file at rest (AES-256-GCM) with the key in KEYFILE: 32 random bytes or 64 hex digits, mode 0600 (kiln keygen KEYFILE). Restores then need --key KEYFILE.",
            valueName: "KEYFILE"))
    var encrypt: String?

    @Flag(help: "Do not run kiln's CRaC agent in the JVM (no beforeCheckpoint/afterRestore callbacks; for a service that is no JVM).")
    var noAgent = false

    @Flag(help: "The application asks for its checkpoint (org.crac.Core.checkpointRestore(), e.g. Spring's -Dspring.context.checkpoint=onRefresh): wait for it instead of the readiness path and warm-up.")
    var onRequest = false

    @Option(help: ArgumentHelp(
        "Accept a kind of preflight finding instead of refusing the dump (repeatable): \(CheckpointPreflight.Kind.allCases.map(\.rawValue).joined(separator: ", ")).",
        valueName: "KIND"))
    var allow: [String] = []

    @Flag(help: "Start and warm up the service, run its beforeCheckpoint, print what would block a checkpoint, and stop (nothing is stored).")
    var preflight = false

    @OptionGroup var common: CommonOptions

    @Argument(parsing: .postTerminator, help: "The service's command line.")
    var command: [String] = []

    struct PreflightReport: Encodable {
        struct Item: Encodable {
            var kind: String
            var process: String
            var what: String
            var why: String
            var fix: String
            var allowed: Bool
        }
        var name: String
        var blocked: Bool
        var findings: [Item]
    }

    func run() async throws {
        try await reporting(common) {
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
            let allowed = try Set(allow.map { kind in
                guard let parsed = CheckpointPreflight.Kind(rawValue: kind) else {
                    throw KilnError(
                        .invalidArgument, "--allow \(kind) is not a kind of preflight finding",
                        hint: "one of \(CheckpointPreflight.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return parsed
            })
            let kiln = try common.openKiln(toDo: "bake a snapshot")
            let appDirectory = app.map { URL(fileURLWithPath: $0, relativeTo: URL(fileURLWithPath: current)).standardizedFileURL.path }
            // With --image, the image's configuration fills in the root, working directory and
            // (port 0) the port: see BakeRequest.image.
            let ownRoot = rootfs != nil || reference != nil
            let sandbox = SandboxSpec(
                command: command, environment: try SandboxSpec.environment(parsing: environment), workingDirectory: appDirectory ?? (ownRoot ? "/" : current),
                appDirectory: ownRoot ? appDirectory : (appDirectory ?? current),
                rootFilesystem: rootfs.map { .directory(URL(fileURLWithPath: $0).standardizedFileURL.path) } ?? .host,
                port: port ?? 0, memoryLimitBytes: try SandboxSpec.memoryLimit(parsing: memory))
            let request = BakeRequest(
                name: name, sandbox: sandbox, readiness: ReadinessCheck(path: ready, timeoutSeconds: readyTimeout),
                warmup: try warmup.map(WarmupStep.init(parsing:)), compact: !noCompact, replace: replace, shareMemory: !noShareMemory, compress: compress,
                encryptionKey: key, restoreHook: onRestore, image: reference)
            var configured = request
            configured.agent = !noAgent
            configured.onRequest = onRequest
            configured.allow = allowed
            let progress: @Sendable (BakeEvent) -> Void = { event in
                switch event {
                case .importingImage(let reference): Output.progress("copying and unpacking image \(reference)...")
                case .importedImage(let image):
                    Output.progress(
                        "image \(image.reference) (\(image.image.manifestDigest.prefix(19))): copied in \(Output.ms(image.copyMs)), unpacked in \(Output.ms(image.unpackMs))")
                case .starting(let command): Output.progress("starting \(command.joined(separator: " ")) in a sandbox...")
                case .ready(let ms): Output.progress("ready after \(Output.ms(ms)) (cold start)")
                case .warmingUp(let step): Output.progress("warming up: \(step.count) x GET \(step.path)")
                case .warmedUp(let ms, let requests): Output.progress("warmed up: \(requests) requests in \(Output.ms(ms))")
                case .beforeCheckpoint(let ms, let resources, let app):
                    Output.progress(
                        "\(app ? "the application asked for its checkpoint; " : "")beforeCheckpoint of \(resources.map(String.init) ?? "?") CRaC resources done in \(Output.ms(ms))")
                case .preflight(let lines, let blocked):
                    Output.progress("preflight: \(blocked ? "blocked" : "ok")")
                    if !preflight { for line in lines { Output.progress("  \(line)") } }
                case .compacting: Output.progress("compacting (full GC)...")
                case .compacted(let ms, _, let note): Output.progress("compacted in \(Output.ms(ms)): \(note)")
                case .checkpointing: Output.progress("checkpointing...")
                case .checkpointed(let ms): Output.progress("checkpointed in \(Output.ms(ms))")
                case .storing: Output.progress("storing and digesting the images...")
                case .encrypting(let keyID): Output.progress("encrypting the images (\(SnapshotCipher.name), key \(keyID))...")
                }
            }
            if preflight {
                let findings = try await kiln.preflight(configured, progress: progress)
                let blocked = CheckpointPreflight.blocked(findings, allowed: allowed) != nil
                if common.json {
                    Output.printJSON(PreflightReport(name: name, blocked: blocked, findings: findings.map {
                        .init(kind: $0.kind.rawValue, process: $0.process, what: $0.what, why: $0.why, fix: $0.fix, allowed: allowed.contains($0.kind))
                    }))
                } else {
                    for line in CheckpointPreflight.render(findings, allowed: allowed) { print(line) }
                    print(blocked ? "\nA bake would refuse the dump (see the fixes above, or --allow KIND)." : "\nA bake would dump this service.")
                }
                return
            }
            let manifest = try await kiln.bake(configured, progress: progress)
            if common.json {
                Output.printJSON(manifest)
            } else {
                print(Output.table(["SNAPSHOT", "COLD START", "WARMUP", "COMPACT", "CHECKPOINT", "SIZE"], [[
                    manifest.name, Output.ms(manifest.timings.coldStartMs), Output.ms(manifest.timings.warmupMs),
                    Output.ms(manifest.timings.compactMs), Output.ms(manifest.timings.checkpointMs), Output.bytes(manifest.sizeBytes),
                ]]))
            }
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore copies of a snapshot side by side and report each one's time to first response.")

    @Argument(help: "Snapshot name.")
    var name: String

    @Option(help: "Number of copies to restore.")
    var count: Int = 1

    @Flag(inversion: .prefixedNo, help: "Share identical memory pages between copies through KSM (default: as the snapshot was baked).")
    var shareMemory: Bool?

    @OptionGroup var keys: KeyOptions

    @OptionGroup var common: CommonOptions

    struct Report: Encodable {
        var snapshot: String
        var verifyMs: Double
        var instances: [InstanceRecord]
    }

    func run() async throws {
        try await reporting(common) {
            let kiln = try common.openKiln(toDo: "restore a snapshot", keys: keys)
            let (manifest, verifyMs) = try kiln.loadVerified(name)
            if !common.json { Output.progress("verified \(manifest.files.count) image files (\(Output.bytes(manifest.sizeBytes))) in \(Output.ms(verifyMs))") }
            let records = try await kiln.restore(manifest, count: count, shareMemory: shareMemory)
            if common.json {
                Output.printJSON(Report(snapshot: name, verifyMs: verifyMs, instances: records))
            } else {
                print(Output.table(["INSTANCE", "PID", "RESTORE", "FIRST RESPONSE"], records.map { [$0.id, String($0.pid), Output.ms($0.restoreMs), Output.ms($0.firstResponseMs)] }))
            }
        }
    }
}

struct PS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List instances: id, snapshot, pid, state, age, memory.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            let kiln = try common.openKiln(toDo: "list instances")
            let rows = try await kiln.status()
            if common.json {
                let totals = Dictionary(grouping: rows, by: \.snapshot).mapValues { group in group.reduce(MemoryUsage.zero) { $0 + $1.memory } }
                Output.printJSON(["instances": AnyEncodable(rows), "totals": AnyEncodable(totals)])
            } else {
                print(Output.table(["INSTANCE", "SNAPSHOT", "PID", "STATE", "AGE", "RSS", "PSS", "SHARED", "MERGED"], rows.map {
                    [$0.id, $0.snapshot, String($0.pid), $0.state, String(format: "%.0fs", $0.ageSeconds),
                     Output.bytes($0.memory.rssBytes), Output.bytes($0.memory.pssBytes), Output.bytes($0.memory.sharedBytes),
                     $0.sharesMemory ? Output.bytes($0.memory.mergedBytes) : "off"]
                }))
                for (snapshot, group) in Dictionary(grouping: rows, by: \.snapshot).sorted(by: { $0.key < $1.key }) where group.count > 1 {
                    let total = group.reduce(MemoryUsage.zero) { $0 + $1.memory }
                    print("total \(snapshot) (\(group.count) copies): RSS \(Output.bytes(total.rssBytes)), PSS \(Output.bytes(total.pssBytes))")
                }
            }
        }
    }
}

struct Request: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send one HTTP request to an instance and print the reply.")

    @Argument(help: "Instance id (or a unique prefix).")
    var instance: String

    @Argument(help: "Path, e.g. /greet.")
    var path: String

    @Option(name: [.customShort("X"), .long], help: "HTTP method.")
    var method: String = "GET"

    @Option(name: [.customShort("d"), .long], help: "Request body (sent as application/json).")
    var data: String?

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            let kiln = try common.openKiln(toDo: "send a request")
            let record = try kiln.instance(instance)
            let reply = try await kiln.request(record, method: method, path: path, body: data.map { Array($0.utf8) })
            if common.json {
                Output.printJSON(["id": AnyEncodable(record.id), "status": AnyEncodable(reply.status), "body": AnyEncodable(reply.bodyText)])
            } else {
                print(reply.bodyText)
                if !(200..<400).contains(reply.status) { FileHandle.standardError.write(Data("HTTP \(reply.status)\n".utf8)) }
            }
            if reply.status >= 400 { throw ExitCode(1) }
        }
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop instances and remove everything they had.")

    @Argument(help: "Instance ids (or unique prefixes).")
    var instances: [String] = []

    @Flag(help: "Stop every instance.")
    var all = false

    @OptionGroup var common: CommonOptions

    func validate() throws {
        if instances.isEmpty && !all { throw ValidationError("name the instances to stop, or pass --all") }
    }

    func run() async throws {
        try await reporting(common) {
            let kiln = try common.openKiln(toDo: "stop instances")
            let records = all ? kiln.instanceRecords() : try instances.map { try kiln.instance($0) }
            for record in records { try await kiln.stop(record) }
            if common.json {
                Output.printJSON(["stopped": records.map(\.id)])
            } else {
                for record in records { print("stopped \(record.id)") }
            }
        }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List snapshots.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            let kiln = try common.openKiln(toDo: "list snapshots")
            let snapshots = try kiln.store.list()
            if common.json {
                Output.printJSON(["snapshots": snapshots])
            } else {
                let formatter = ISO8601DateFormatter()
                print(Output.table(["SNAPSHOT", "CREATED", "SIZE", "PORT", "COLD START", "KEY", "IMAGE", "COMMAND"], snapshots.map {
                    [$0.name, formatter.string(from: $0.createdAt), Output.bytes($0.sizeBytes), String($0.sandbox.port),
                     Output.ms($0.timings.coldStartMs), $0.encryption?.keyID ?? "-",
                     $0.image.map { "\($0.reference)@\($0.manifestDigest.prefix(19))" } ?? "-", $0.sandbox.command.joined(separator: " ")]
                }))
            }
        }
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a snapshot.")

    @Argument(help: "Snapshot name.")
    var name: String

    @Flag(help: "Also stop the instances restored from it.")
    var force = false

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            let kiln = try common.openKiln(toDo: "remove snapshot '\(name)'")
            let running = kiln.instanceRecords().filter { $0.snapshot == name }
            if !running.isEmpty {
                guard force else {
                    throw KilnError(
                        .snapshotInUse, "snapshot '\(name)' has \(running.count) running instance(s): \(running.map(\.id).joined(separator: ", "))",
                        hint: "stop them first ('kiln stop ...') or pass --force")
                }
                for record in running { try await kiln.stop(record) }
            }
            try kiln.removeSnapshot(name)
            if common.json { Output.printJSON(["removed": name]) } else { print("removed \(name)") }
        }
    }
}

/// Type-erases heterogeneous values for small JSON documents.
struct AnyEncodable: Encodable {
    let encodeValue: (Encoder) throws -> Void
    init(_ value: some Encodable) { encodeValue = value.encode }
    func encode(to encoder: Encoder) throws { try encodeValue(encoder) }
}

struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Remove what a crashed or killed kiln left behind (running instances and bakes in progress are kept).")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            let kiln = try common.openKiln(toDo: "collect garbage")
            let report = try await kiln.collectGarbage()
            if common.json {
                Output.printJSON(report)
            } else if report.isEmpty {
                print("nothing to clean")
            } else {
                for (kind, items) in [("instance", report.instances), ("container", report.containers), ("network namespace", report.networkNamespaces),
                                      ("directory", report.directories), ("cgroup", report.cgroups)] {
                    for item in items { print("removed \(kind) \(item)") }
                }
            }
        }
    }
}

struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a new random snapshot key (64 hex digits, mode 0600) for kiln bake --encrypt; never overwrites a file.")

    @Argument(help: "Where to write the key (must not exist).")
    var path: String

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            let key = try SnapshotKey.generate(at: path)
            if common.json {
                Output.printJSON(["path": key.source, "keyID": key.id])
            } else {
                print("wrote a new key to \(key.source) (key id \(key.id))")
                Output.progress("keep a copy somewhere safe: snapshots baked with --encrypt \(key.source) cannot be restored without it")
            }
        }
    }
}
