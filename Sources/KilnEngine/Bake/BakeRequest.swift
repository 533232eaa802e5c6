import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

/// What `kiln bake` is asked to do.
public struct BakeRequest: Sendable {
    public var name: String
    public var sandbox: SandboxSpec
    public var readiness: ReadinessCheck
    public var warmup: [WarmupStep]
    /// Run a full GC in a JVM before the dump (smaller snapshot, less to restore).
    public var compact: Bool
    /// Replace an existing snapshot of the same name.
    public var replace: Bool
    /// Also merge identical pages of the copies through KSM (`--share-memory ksm`; see ``PageMerging``).
    public var shareMemory: Bool
    /// Compress the memory images at rest with zstd (see ``DumpCache``).
    public var compress: Bool
    /// Encrypt every image file at rest with this key (after compressing; see ``SnapshotCipher``).
    public var encryptionKey: SnapshotKey?
    /// A path kiln POSTs to in every restored copy before it counts as ready (see
    /// ``SnapshotManifest/restoreHook``).
    public var restoreHook: String?
    /// Bake from this container image (`kiln bake --image`). Its root filesystem becomes the
    /// sandbox's root, and its configuration fills in ``sandbox``: `sandbox.command` (possibly
    /// empty) replaces the image's `Cmd` after its `Entrypoint`, `sandbox.environment` is laid
    /// over its `Env`, a `sandbox.port` of 0 takes its one exposed port, and the working
    /// directory and user are the image's (see ``ImageConfig/sandbox(applyingTo:rootfs:reference:)``).
    public var image: ImageReference?
    /// The network the service runs on while it is baked, and its copies after (`kiln`, a user's
    /// CNI network); nil or `none`: loopback only.
    public var network: String?
    /// Run kiln's CRaC agent in the service's JVM (`--no-agent` turns it off): its resources'
    /// `beforeCheckpoint` runs before the dump, `afterRestore` in every copy before it is ready.
    public var agent: Bool = true
    /// `kiln bake --on-request`: the application asks for the checkpoint itself
    /// (`org.crac.Core.checkpointRestore()`); kiln waits for that instead of the readiness
    /// path and the warm-up.
    public var onRequest: Bool = false
    /// Rehearse the copies' restore path before the checkpoint (with the agent, not with
    /// `onRequest`, not for `--preflight`): beforeCheckpoint, afterRestore, the readiness path once
    /// and each warm-up path three times; `--no-rehearsal` turns it off.
    public var rehearseRestore: Bool = true
    /// After the warm-up steps, go on sending their paths until the JVM's JIT compilers have been
    /// idle for a second (``CompilerSettling``), at most this long; zero: not at all
    /// (`--warmup-settle SECONDS`). Code a copy runs that is still profiled or compiled after
    /// its restore costs every copy (docs/restore-path.md). 90 s because the limit only costs a
    /// bake whose compilers are still busy, which is where settling pays: the Spring sample
    /// settles in ~17 s on a fast VM and in 37-50 s on one twice as slow, whose copies answered
    /// 7-8 ms sooner from a settled bake than from one cut off at the former 30 s
    /// (docs/snapshot-safe.md).
    public var warmupSettleLimit: Duration = .seconds(90)
    /// Kinds of preflight finding (``CheckpointPreflight/Kind``) accepted (`--allow KIND`).
    package var allow: Set<CheckpointPreflight.Kind> = []
    /// The agent jar to bind (default: ``CRaCAgent/locate(environment:)``).
    package var agentJar: String?

    public init(
        name: String, sandbox: SandboxSpec, readiness: ReadinessCheck, warmup: [WarmupStep] = [], compact: Bool = true,
        replace: Bool = false, shareMemory: Bool = false, compress: Bool = false, encryptionKey: SnapshotKey? = nil,
        restoreHook: String? = nil, image: ImageReference? = nil, network: String? = nil, agent: Bool = true
    ) {
        self.network = network
        self.agent = agent
        self.name = name
        self.sandbox = sandbox
        self.readiness = readiness
        self.warmup = warmup
        self.compact = compact
        self.replace = replace
        self.shareMemory = shareMemory
        self.compress = compress
        self.restoreHook = restoreHook
        self.encryptionKey = encryptionKey
        self.image = image
    }

    /// Checks the request against the host before anything is started: a valid name, a port in
    /// range, a readiness path and timeout, warmup steps, a memory limit, and a command the
    /// sandbox will be able to see and execute.
    public func validate() throws {
        try SnapshotStore.validate(name: name)
        guard InputValidation.isServicePort(sandbox.port) else {
            throw KilnError(
                .invalidArgument, "port \(sandbox.port) is out of range", hint: "pass the port the service listens on, 1-65535, e.g. --port 8080")
        }
        if let given = sandbox.environment["PORT"], given != String(sandbox.port) {
            // The sandbox's PORT is always --port's (the readiness check and every restore dial
            // that port); a different one from --env would be silently overridden.
            throw KilnError(
                .invalidArgument, "PORT=\(given) in the service's environment (--env, or the image's Env) conflicts with --port \(sandbox.port)",
                hint: "kiln sets PORT from --port: drop --env PORT, or pass --port \(given)")
        }
        try readiness.validate()
        for step in warmup {
            do { try step.validate() } catch { throw KilnError(.invalidArgument, "warmup '\(step)' \(error.message)", hint: error.hint) }
        }
        if onRequest, !agent {
            throw KilnError(.invalidArgument, "--on-request needs kiln's CRaC agent", hint: "drop --no-agent, or drop --on-request")
        }
        if let hook = restoreHook, !hook.hasPrefix("/") || hook.contains(where: { $0.isWhitespace }) {
            throw KilnError(.invalidArgument, "restore hook '\(hook)' must be a path starting with '/'", hint: "e.g. --on-restore /kiln/restored")
        }
        guard SandboxSpec.memoryLimitRange.contains(sandbox.memoryLimitBytes) else {
            throw KilnError(
                .invalidArgument, "memory limit \(sandbox.memoryLimitBytes) bytes is out of range (6 MiB to 1 TiB)", hint: "e.g. --memory 1024")
        }
        if let app = sandbox.appDirectory {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: app, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw KilnError(
                    .invalidArgument, "the app directory '\(app)' does not exist",
                    hint: "pass --app DIR with the directory holding your service (default: the current directory)")
            }
        }
        // CRIU reads and restores the resource limits of the service's tasks with prlimit(),
        // which another user's process allows only with CAP_SYS_RESOURCE: refuse before a cold start.
        if let user = sandbox.user, !HostPrivileges.has(.sysResource) {
            throw KilnError(
                .missingCapability,
                "the service would run as uid \(user.uid), and kiln lacks CAP_SYS_RESOURCE, without which CRIU cannot read a non-root process's resource limits to checkpoint it",
                hint:
                    "run kiln with its full capability set, or run the service as root inside its sandbox (USER 0 in the image; it still gets no privileges)"
            )
        }
        _ = try CommandResolver(sandbox: sandbox).resolve()
    }
}

/// Finds the file a sandbox would execute for its command, on the host, and checks the sandbox
/// can see it: a command that is not there should fail before a container starts, saying why.
struct CommandResolver {
    var sandbox: SandboxSpec

    /// The host paths visible inside the sandbox (for a host root: /usr and the app directory).
    var visibleRoots: [String] {
        switch sandbox.rootFilesystem {
        case .host: ["/usr", "/bin", "/sbin", "/lib", "/lib64"] + (sandbox.appDirectory.map { [$0] } ?? [])
        case .directory: ["/"]
        }
    }

    /// The host path of the executable.
    func resolve() throws -> String {
        guard let program = sandbox.command.first, !program.isEmpty else {
            throw KilnError(
                .invalidArgument, "no command given",
                hint: "put the service's command after '--', e.g. kiln bake hello --port 8080 --ready /health -- java -jar app.jar")
        }
        let root: String?
        if case .directory(let path) = sandbox.rootFilesystem { root = path } else { root = nil }
        // Where the sandbox's `path` is on the host: inside a root of its own, with its symlinks
        // resolved in that root (`/usr/bin/java -> /etc/alternatives/java` must not be looked
        // up on the host, which may have no Java at all).
        let onHost = { (path: String) in root.map { Self.resolve(path, in: $0) } ?? path }
        if program.contains("/") {
            let path = program.hasPrefix("/") ? program : (sandbox.workingDirectory as NSString).appendingPathComponent(program)
            let standardized = (path as NSString).standardizingPath
            guard FileManager.default.fileExists(atPath: onHost(standardized)) else {
                throw KilnError(
                    .commandNotFound, "command '\(program)' not found (looked for \(onHost(standardized)))",
                    hint: "check the path; relative paths are taken from the working directory \(sandbox.workingDirectory)")
            }
            guard FileManager.default.isExecutableFile(atPath: onHost(standardized)) else {
                throw KilnError(.commandNotFound, "command '\(program)' is not executable", hint: "chmod +x \(onHost(standardized))")
            }
            guard visibleRoots.contains(where: { $0 == "/" || standardized == $0 || standardized.hasPrefix($0 + "/") }) else {
                throw KilnError(
                    .commandNotFound, "command '\(standardized)' is outside the sandbox, which sees only \(visibleRoots.joined(separator: ", "))",
                    hint: "pass --app with the directory that holds it (it is mounted read-only at the same path)")
            }
            return standardized
        }
        let searchPath = sandbox.processEnvironment["PATH"] ?? "/usr/bin:/bin"
        for directory in searchPath.split(separator: ":") {
            let candidate = "\(directory)/\(program)"
            if FileManager.default.isExecutableFile(atPath: onHost(candidate)) { return candidate }
        }
        throw KilnError(
            .commandNotFound, "command '\(program)' not found on the sandbox's PATH (\(searchPath))",
            hint: "install it, or give its path (e.g. ./bin/\(program) inside the app directory)")
    }
}

extension CommandResolver {
    /// The host path of `path` as a process chrooted to `root` would open it: every symlink on
    /// the way is followed inside `root` (an absolute target starts again at `root`, `..` stops
    /// at it), so nothing resolves to the host's own files. Gives up after 40 links, as the
    /// kernel does, returning the path as it stands.
    static func resolve(_ path: String, in root: String) -> String {
        var pending = path.split(separator: "/").map(String.init)
        var resolved: [String] = []
        var links = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." || component.isEmpty { continue }
            if component == ".." {
                _ = resolved.popLast()
                continue
            }
            let candidate = root + "/" + (resolved + [component]).joined(separator: "/")
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: candidate) else {
                resolved.append(component)
                continue
            }
            links += 1
            if links > 40 { return root + "/" + (resolved + [component] + pending).joined(separator: "/") }
            if target.hasPrefix("/") { resolved = [] }
            pending = target.split(separator: "/").map(String.init) + pending
        }
        return root + "/" + resolved.joined(separator: "/")
    }
}
