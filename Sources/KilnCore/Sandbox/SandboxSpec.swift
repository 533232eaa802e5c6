/// Everything about a service's sandbox that stays the same across its cold start and every copy
/// restored from its snapshot. Stored in the snapshot manifest: a restore must recreate the exact
/// mounts the checkpointed process saw.
public struct SandboxSpec: Codable, Sendable, Equatable {
    /// Where the container's root filesystem comes from.
    public enum RootFilesystem: Codable, Sendable, Equatable {
        /// An empty root with the host's `/usr` (and the few `/etc` entries a JVM reads) bound
        /// read-only, so a command line that works on the host works inside.
        case host
        /// A user-given directory, used as the (read-only) root as it is.
        case directory(String)
    }

    /// The command and its arguments, as given to `kiln bake`.
    public var command: [String]
    /// Extra environment for the service (`PORT` is always set from ``port``).
    public var environment: [String: String]
    /// Working directory inside the sandbox.
    public var workingDirectory: String
    /// Host directory bound read-only at the same path inside the sandbox, if any.
    public var appDirectory: String?
    public var rootFilesystem: RootFilesystem
    /// TCP port the service listens on inside its network namespace.
    public var port: Int
    /// Memory cgroup limit.
    public var memoryLimitBytes: Int64
    /// Maximum number of tasks (processes and threads) in the sandbox.
    public var pidsLimit: Int64
    /// Size of the tmpfs mounted on /tmp.
    public var tmpfsSizeBytes: Int64

    public init(
        command: [String], environment: [String: String] = [:], workingDirectory: String,
        appDirectory: String?, rootFilesystem: RootFilesystem = .host, port: Int,
        memoryLimitBytes: Int64 = 1 << 30, pidsLimit: Int64 = 1024, tmpfsSizeBytes: Int64 = 64 << 20
    ) {
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.appDirectory = appDirectory
        self.rootFilesystem = rootFilesystem
        self.port = port
        self.memoryLimitBytes = memoryLimitBytes
        self.pidsLimit = pidsLimit
        self.tmpfsSizeBytes = tmpfsSizeBytes
    }

    /// The environment the process starts with.
    ///
    /// `-XX:-UsePerfData` keeps a JVM from mapping a shared perf-data file in /tmp, which every
    /// restored copy would otherwise carry (and which the seed experiment also turned off).
    public var processEnvironment: [String: String] {
        var env = [
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
        ]
        env.merge(environment) { _, user in user }
        env["PORT"] = String(port)
        let perfData = "-XX:-UsePerfData"
        if let options = env["JAVA_TOOL_OPTIONS"], !options.isEmpty {
            if !options.contains("UsePerfData") { env["JAVA_TOOL_OPTIONS"] = options + " " + perfData }
        } else {
            env["JAVA_TOOL_OPTIONS"] = perfData
        }
        return env
    }
}

/// One container made from a ``SandboxSpec``: the per-copy parts.
public struct SandboxInstance: Sendable {
    /// Container id, unique on the host; also the copy's hostname.
    public var id: String
    /// Bundle directory holding `config.json` and, for ``SandboxSpec/RootFilesystem/host``, `rootfs/`.
    public var bundlePath: String
    /// The pinned network namespace the container joins.
    public var networkNamespacePath: String
    /// The cgroup path (relative to each controller's root).
    public var cgroupPath: String
    /// A CRIU configuration file runc passes to every checkpoint and restore of this container.
    public var criuConfigPath: String?

    public init(id: String, bundlePath: String, networkNamespacePath: String, cgroupPath: String, criuConfigPath: String? = nil) {
        self.id = id
        self.bundlePath = bundlePath
        self.networkNamespacePath = networkNamespacePath
        self.cgroupPath = cgroupPath
        self.criuConfigPath = criuConfigPath
    }
}
