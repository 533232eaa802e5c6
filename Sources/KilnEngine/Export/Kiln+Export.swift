import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// What `kiln export` wrote.
public struct ExportReport: Codable, Sendable {
    public var snapshot: String
    public var archive: String
    public var archiveBytes: Int64
    /// The empty base image Podman must have before it restores the archive.
    public var baseImage: String
    public var baseImageName: String
    public var milliseconds: Double
    /// The commands that restore the archive with Podman.
    public var podmanCommands: [String]
}

/// What `kiln import` made of an archive.
public struct ImportReport: Codable, Sendable {
    /// "podman" or "kiln" (an archive `kiln export` wrote).
    public var source: String
    public var manifest: SnapshotManifest
    public var milliseconds: Double
    /// Host paths every restored copy sees, all read-only (beyond kiln's own `/usr` and `/etc`
    /// entries): the archive asked for them, so the user should know.
    public var hostPaths: [String]
}

extension Kiln {
    /// Writes snapshot `name` as a Podman checkpoint archive (see ``PodmanArchive``) to
    /// `archive`, and the empty base image Podman needs to `baseImage`.
    ///
    /// The archive holds the service's memory in plain form, whatever the snapshot's encryption
    /// or compression at rest: it is written 0600 and must be kept like the store. An encrypted
    /// snapshot needs its key (``keys``), as for a restore.
    public func export(_ name: String, to archive: String, baseImage: String, replace: Bool = false) async throws -> ExportReport {
        let action = "exporting snapshot '\(name)'"
        do {
            let start = ContinuousClock.now
            let (manifest, _) = try loadVerified(name)
            try Self.checkExportable(manifest)
            if !replace, FileManager.default.fileExists(atPath: archive) {
                throw KilnError(.invalidArgument, "\(archive) exists", hint: "pass --replace to overwrite it, or choose another -o FILE")
            }
            // Plain images: the store's own, or the tmpfs copy a restore of a compressed or
            // encrypted snapshot uses.
            let images = try DumpCache(root: paths.dumpCache, store: store).directory(for: manifest, key: try keys.key(for: manifest))
            let scratch = "\(paths.bakes)/export-\(name)-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            // Marked like a bake's scratch, so `kiln gc` leaves it alone while this kiln runs.
            try OwnerMark.write(into: scratch)
            try writeDumps(of: manifest, into: scratch)
            try FileManager.default.createSymbolicLink(atPath: "\(scratch)/\(PodmanArchive.checkpointDirectory)", withDestinationPath: images)

            // Written under a temporary name, made 0600 before a byte goes in, renamed when whole.
            let partial = "\(archive).partial-\(getpid())"
            guard FileManager.default.createFile(atPath: partial, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw KilnError(.systemCall, "could not create \(partial)", hint: "is the directory there and writable?")
            }
            var moved = false
            defer { if !moved { unlink(partial) } }
            let members = [
                PodmanArchive.configDump, PodmanArchive.specDump, PodmanArchive.rootfsDiff, PodmanArchive.kilnManifest,
                PodmanArchive.checkpointDirectory,
            ]
            // -h: `checkpoint` is a link to the image directory; its files go in as files.
            let output = try await Subprocess.run(
                "tar", ["--zstd", "-chf", partial, "-C", scratch, "--owner=0", "--group=0", "--numeric-owner", "--mode=go-rwx"] + members)
            guard output.status.isSuccess else {
                throw KilnError(
                    .systemCall, "tar could not write \(archive) (\(output.status))", hint: "tar and zstd must be installed ('make setup')",
                    details: output.stderr.split(separator: "\n").suffix(5).map(String.init))
            }
            guard rename(partial, archive) == 0 else { throw KilnError.systemCall("rename", errno: errno, archive) }
            moved = true

            let image = Data(PodmanArchive.BaseImage.archive())
            try image.write(to: URL(fileURLWithPath: baseImage), options: .atomic)
            let size = (try FileManager.default.attributesOfItem(atPath: archive)[.size] as? Int64) ?? 0
            return ExportReport(
                snapshot: name, archive: archive, archiveBytes: size, baseImage: baseImage, baseImageName: PodmanArchive.BaseImage.name,
                milliseconds: start.duration(to: .now).milliseconds,
                podmanCommands: [
                    "podman load -i \(baseImage)",
                    "podman --runtime \(PodmanArchive.runtimeName) container restore --import \(archive) --name \(name) -p 127.0.0.1:\(manifest.sandbox.port):\(manifest.sandbox.port)",
                ])
        } catch let error as KilnError {
            throw error.during(action)
        }
    }

    /// Refuses what a Podman restore could not restore, naming why.
    static func checkExportable(_ manifest: SnapshotManifest) throws {
        guard manifest.cgroupsInImages == true else {
            throw KilnError(
                .invalidArgument,
                "snapshot '\(manifest.name)' was baked by a kiln that left the cgroup controllers out of its images, which a Podman restore needs",
                hint: "bake it again with this kiln (kiln bake \(manifest.name) --replace ...)")
        }
        switch manifest.sandbox.rootFilesystem {
        case .host:
            guard (manifest.sandbox.rootMode ?? 0o755) == PodmanArchive.rootMode else {
                throw KilnError(
                    .invalidArgument,
                    "snapshot '\(manifest.name)' has a root of mode \(String(manifest.sandbox.rootMode ?? 0o755, radix: 8)), and CRIU only restores it on a root of that mode (Podman's is \(String(PodmanArchive.rootMode, radix: 8)))",
                    hint: "bake it again with this kiln (kiln bake \(manifest.name) --replace ...)")
            }
        case .directory(let path):
            throw KilnError(
                .invalidArgument,
                "snapshot '\(manifest.name)' runs on its own root filesystem (\(path)), which a Podman archive cannot carry as its image",
                hint: "export snapshots baked on kiln's default root (without --rootfs or --image)")
        }
        if let binds = manifest.sandbox.binds, binds.contains(where: { $0.source == nil }) {
            throw KilnError(
                .invalidArgument, "snapshot '\(manifest.name)' was imported from another runtime's archive and binds files that runtime generated",
                hint: "export the original archive instead")
        }
        if manifest.sandbox.agent != nil {
            // Its JVM holds the agent jar open and expects a control directory per copy: mounts a
            // Podman archive cannot describe.
            throw KilnError(
                .invalidArgument,
                "snapshot '\(manifest.name)' runs kiln's CRaC agent, whose jar and per-copy control directory a Podman archive cannot carry",
                hint: "bake it again with --no-agent to export it")
        }
    }

    /// spec.dump, config.dump, rootfs-diff.tar and kiln.json of `manifest`, in `directory`.
    private func writeDumps(of manifest: SnapshotManifest, into directory: String) throws {
        let sandbox = manifest.sandbox
        // The config kiln restores with, minus what is per copy: Podman sets the root path and
        // the network namespace's, and kiln's CRIU configuration file exists only here.
        let instance = SandboxContainer(
            id: manifest.name, bundlePath: "/nonexistent", networkNamespacePath: "", cgroupPath: "/kiln-export/\(manifest.name)")
        let binds = ["/usr"] + SandboxBundle.hostEtcBinds()
        var spec = OCIConfig(spec: sandbox, instance: instance, rootPath: "/nonexistent", binds: binds)
        spec.linux.namespaces = spec.linux.namespaces.map { .init(type: $0.type) }
        spec.annotations = ["io.container.manager": "libpod", "dev.kiln.snapshot": manifest.name]
        try PodmanArchive.encoder.encode(spec).write(to: URL(fileURLWithPath: "\(directory)/\(PodmanArchive.specDump)"))

        let config = PodmanArchive.ContainerConfig(
            id: (0..<32).map { _ in UInt8.random(in: .min ... .max) }.hexDigits,
            name: manifest.name, spec: spec, command: sandbox.command, createdTime: manifest.createdAt)
        try PodmanArchive.encoder.encode(config).write(to: URL(fileURLWithPath: "\(directory)/\(PodmanArchive.configDump)"))

        // The sandbox's root as kiln lays it out (symlinks into /usr, the generated /etc, the
        // mount points), laid over Podman's empty base image.
        let root = "\(directory)/rootfs"
        try SandboxBundle.layOutHostRoot(at: root, hostname: manifest.name, binds: binds)
        if let app = sandbox.appDirectory { try FileManager.default.createDirectory(atPath: root + app, withIntermediateDirectories: true) }
        chmod(root, mode_t(PodmanArchive.rootMode))
        let tar = try Subprocess.run(
            "tar", ["-cf", "\(directory)/\(PodmanArchive.rootfsDiff)", "-C", root, "--owner=0", "--group=0", "--numeric-owner", "."])
        guard tar.status.isSuccess else { throw KilnError(.systemCall, "tar could not write the root file system layer: \(tar.stderr)") }

        var kilnManifest = manifest
        kilnManifest.compression = nil
        kilnManifest.encryption = nil
        try kilnManifest.encoded().write(to: URL(fileURLWithPath: "\(directory)/\(PodmanArchive.kilnManifest)"))
    }

    /// Reads a Podman checkpoint archive (or one `kiln export` wrote) into a verified snapshot
    /// named `name`, which `kiln run` and `kiln serve` restore.
    ///
    /// A Podman archive does not say which port the service listens on nor how to tell it is
    /// ready: `port` and `readiness` give them. Its process expects the mounts it had: the
    /// container's root (by default kiln's own, an empty root with the host's `/usr`, which
    /// fits an image made that way; `rootfs` names another directory), host directories bound
    /// in (they must exist here at the same paths), and files Podman generated (`/etc/hosts`,
    /// `/etc/hostname`, `/run/.containerenv`, `/dev/shm`), which each restored copy gets fresh.
    public func importArchive(
        _ archive: String, name: String, port: Int?, readiness: ReadinessCheck?, rootfs: String? = nil, replace: Bool = false
    ) async throws -> ImportReport {
        let action = "importing \(archive) as snapshot '\(name)'"
        do {
            let start = ContinuousClock.now
            try SnapshotStore.validate(name: name)
            if store.exists(name), !replace {
                throw KilnError(
                    .snapshotExists, "a snapshot named '\(name)' already exists", hint: "pass --replace to overwrite it, or choose another --name")
            }
            guard FileManager.default.isReadableFile(atPath: archive) else {
                throw KilnError(
                    .invalidArgument, "cannot read \(archive)",
                    hint: "give the path of a 'podman container checkpoint --export' or 'kiln export' archive")
            }
            // An import in progress counts as a bake for `kiln gc`, which then keeps the store's
            // staging directory (where the snapshot is written) alone.
            let mark = "\(paths.bakes)/import-\(name)-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: mark, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            defer { try? FileManager.default.removeItem(atPath: mark) }
            try OwnerMark.write(into: mark)
            let staging = try store.makeStagingDirectory(for: name)
            do {
                let report = try await importArchive(archive, name: name, port: port, readiness: readiness, rootfs: rootfs, staging: staging)
                DumpCache(root: paths.dumpCache, store: store).evict(name)
                let sandbox = report.manifest.sandbox
                let hostPaths = (sandbox.appDirectory.map { [$0] } ?? []) + (sandbox.binds ?? []).compactMap(\.source)
                return ImportReport(
                    source: report.source, manifest: report.manifest, milliseconds: start.duration(to: .now).milliseconds, hostPaths: hostPaths)
            } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw StoreSpace(path: store.root).explain(error)
            }
        } catch let error as KilnError {
            throw error.during(action)
        }
    }

    private func importArchive(
        _ archive: String, name: String, port: Int?, readiness: ReadinessCheck?, rootfs: String?, staging: String
    ) async throws -> (source: String, manifest: SnapshotManifest) {
        let unpacked = "\(staging)/archive"
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // GNU tar detects the compression (zstd, gzip or none), strips leading '/' and refuses
        // members with '..', so nothing lands outside the staging directory.
        let untar = try await Subprocess.run("tar", ["-xf", archive, "-C", unpacked, "--no-same-owner", "--no-same-permissions"])
        guard untar.status.isSuccess else {
            throw KilnError(
                .invalidArgument, "\(archive) is not a readable checkpoint archive (tar \(untar.status))",
                details: untar.stderr.split(separator: "\n").suffix(5).map(String.init))
        }
        let checkpoint = "\(unpacked)/\(PodmanArchive.checkpointDirectory)"
        guard FileManager.default.fileExists(atPath: "\(checkpoint)/inventory.img") else {
            throw KilnError(
                .invalidArgument, "\(archive) holds no CRIU checkpoint (no \(PodmanArchive.checkpointDirectory)/inventory.img)",
                hint: "give an archive of 'podman container checkpoint --export' or 'kiln export'")
        }
        let specData = try Data(contentsOf: URL(fileURLWithPath: "\(unpacked)/\(PodmanArchive.specDump)"))
        let spec: PodmanArchive.RuntimeSpec
        do {
            spec = try JSONDecoder().decode(PodmanArchive.RuntimeSpec.self, from: specData)
        } catch {
            throw KilnError(.invalidArgument, "\(archive): its \(PodmanArchive.specDump) is not an OCI runtime config: \(error)")
        }
        let source: String
        var manifest: SnapshotManifest
        let host = HostFacts(kernel: HostFacts.kernelRelease(), criuVersion: criu.version.description, runtime: runtime.versionDescription())
        if let data = FileManager.default.contents(atPath: "\(unpacked)/\(PodmanArchive.kilnManifest)") {
            source = "kiln"
            var own = try SnapshotManifest.decode(data, source: "\(archive):\(PodmanArchive.kilnManifest)")
            own.name = name
            if let port { own.sandbox.port = port }
            if let readiness { own.readiness = readiness }
            own.host = host
            manifest = own
        } else {
            source = "podman"
            // kiln joins every restored copy to a network namespace of its own, handed to CRIU as
            // the external one the images refer to. A container whose namespace CRIU dumped
            // (podman run --network none) would come back in a namespace kiln cannot reach.
            let network = spec.linux?.namespaces?.first { $0.type == "network" }
            guard network?.path != nil else {
                throw KilnError(
                    .invalidArgument,
                    "\(archive): the container's network namespace is in the checkpoint (it ran with --network none or without a network namespace of its own), and kiln restores into network namespaces it makes itself",
                    hint: "checkpoint a container on a Podman network (the default bridge)")
            }
            guard let port else {
                throw KilnError(.invalidArgument, "a Podman archive does not say which port the service listens on", hint: "pass --port PORT")
            }
            guard let readiness else {
                throw KilnError(
                    .invalidArgument, "a Podman archive does not say how to tell the service is ready",
                    hint: "pass --ready PATH (a path that answers GET with 2xx)")
            }
            let sandbox = try Self.sandbox(from: spec, port: port, rootfs: rootfs, archive: archive)
            manifest = SnapshotManifest(
                name: name, createdAt: Date(), sandbox: sandbox, readiness: readiness, warmup: [], host: host, timings: BakeTimings(),
                compacted: false, cgroupsInImages: true, files: [])
        }
        try Self.checkHostExposure(manifest.sandbox, source: source, archive: archive)
        try manifest.readiness.validate()
        guard InputValidation.isServicePort(manifest.sandbox.port) else {
            throw KilnError(.invalidArgument, "port \(manifest.sandbox.port) is out of range", hint: "pass --port 1-65535")
        }

        // The images become the snapshot's, digested like a bake's.
        let images = "\(staging)/images"
        for file in try FileManager.default.contentsOfDirectory(atPath: checkpoint) {
            try FileManager.default.moveItem(atPath: "\(checkpoint)/\(file)", toPath: "\(images)/\(file)")
        }
        try FileManager.default.removeItem(atPath: unpacked)
        let template = manifest
        let committed = try store.commit(staging: staging) { files in
            var finished = template
            finished.files = files
            finished.sizeBytes = files.reduce(0) { $0 + $1.size }
            return finished
        }
        return (source, committed)
    }

    /// An archive is input from elsewhere, and what it asks to see of this host is honoured at
    /// every restore: host directories are bound read-only only (a writable one would hand the
    /// function that directory of the host), and a root filesystem comes only from `--rootfs`
    /// (`kiln export` never writes one into kiln's own archive).
    static func checkHostExposure(_ sandbox: SandboxSpec, source: String, archive: String) throws {
        if let writable = sandbox.binds?.first(where: { $0.source != nil && !$0.readOnly }) {
            throw KilnError(
                .invalidArgument,
                "\(archive) binds the host's \(writable.source!) writable at \(writable.destination); kiln imports host directories read-only only",
                hint:
                    "checkpoint the container with that volume mounted read-only (-v \(writable.source!):\(writable.destination):ro), or put what it needs in its image"
            )
        }
        if source == "kiln", case .directory(let root) = sandbox.rootFilesystem {
            throw KilnError(
                .invalidArgument, "\(archive) asks for the host directory \(root) as the root filesystem, which kiln export never writes",
                hint: "import archives that 'kiln export' or 'podman container checkpoint --export' wrote")
        }
    }

    /// The sandbox a Podman container ran in, as kiln can recreate it.
    static func sandbox(from spec: PodmanArchive.RuntimeSpec, port: Int, rootfs: String?, archive: String) throws -> SandboxSpec {
        guard let args = spec.process?.args, !args.isEmpty else {
            throw KilnError(.invalidArgument, "\(archive): its \(PodmanArchive.specDump) has no process arguments")
        }
        var environment: [String: String] = [:]
        for entry in spec.process?.env ?? [] {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else { continue }
            environment[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        var binds: [SandboxSpec.Bind] = []
        for mount in spec.mounts ?? [] where mount.isBind {
            let readOnly = (mount.options ?? []).contains("ro")
            guard let hostPath = mount.source, InputValidation.isCleanAbsolutePath(mount.destination) else {
                throw KilnError(.invalidArgument, "\(archive): its bind mount at '\(mount.destination)' has no usable source")
            }
            if PodmanArchive.generatedBinds.contains(mount.destination) || hostPath.contains("/userdata/") {
                // Gone with the container by now: the kind follows from where Podman binds it.
                let isDirectory = PodmanArchive.generatedDirectories.contains(mount.destination)
                binds.append(.init(destination: mount.destination, source: nil, readOnly: readOnly, isDirectory: isDirectory))
                continue
            }
            var isDirectory: ObjCBool = false
            guard InputValidation.isCleanAbsolutePath(hostPath), FileManager.default.fileExists(atPath: hostPath, isDirectory: &isDirectory) else {
                throw KilnError(
                    .invalidArgument,
                    "the checkpointed container had \(hostPath) bound at \(mount.destination), and there is no \(hostPath) on this host",
                    hint:
                        "CRIU restores a process only with the same mounts at the same paths: make \(hostPath) available here (the same content) and import again"
                )
            }
            binds.append(.init(destination: mount.destination, source: hostPath, readOnly: readOnly, isDirectory: isDirectory.boolValue))
        }
        let limit = spec.linux?.resources?.memory?.limit.flatMap { SandboxSpec.memoryLimitRange.contains($0) ? $0 : nil }
        let root: SandboxSpec.RootFilesystem =
            try rootfs.map { path in
                let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
                var info = stat()
                guard stat(absolute, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                    throw KilnError(.invalidArgument, "--rootfs \(path) is not a directory")
                }
                guard Int(info.st_mode & 0o7777) == PodmanArchive.rootMode else {
                    throw KilnError(
                        .invalidArgument,
                        "--rootfs \(path) has mode \(String(info.st_mode & 0o7777, radix: 8)); CRIU restores the container only on a root of mode \(String(PodmanArchive.rootMode, radix: 8)), the mode Podman's root had",
                        hint: "chmod \(String(PodmanArchive.rootMode, radix: 8)) \(path)")
                }
                return .directory(absolute)
            } ?? .host
        return SandboxSpec(
            command: args, environment: environment, workingDirectory: spec.process?.cwd ?? "/", appDirectory: nil, rootFilesystem: root,
            port: port, memoryLimitBytes: limit ?? (1 << 30), rootMode: PodmanArchive.rootMode, binds: binds)
    }
}
