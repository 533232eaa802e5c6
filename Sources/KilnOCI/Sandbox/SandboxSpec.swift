import Foundation
import KilnSystem

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
    /// Who the service runs as; nil is root (uid 0 in its own sandbox, without privileges).
    /// Set from an image's numeric `User` (see ``ImageConfig/sandboxUser(reference:)``).
    public var user: SandboxUser?
    /// Permission bits of the generated root directory (``RootFilesystem/host``). CRIU checks
    /// the root's mode at restore ("File . has bad mode"), so it must be what the checkpointed
    /// process had: 0555 since `kiln export` exists, which is what Podman's overlay root has;
    /// nil (older manifests) means 0755.
    public var rootMode: Int?
    /// More bind mounts the checkpointed process had (a snapshot imported from a Podman
    /// archive); nil for kiln's own bakes.
    public var binds: [Bind]?
    /// kiln's CRaC agent in the sandbox (nil: none, e.g. `kiln bake --no-agent`, and every
    /// manifest made before the agent): its jar bound read-only at ``CRaCAgent/jarInSandbox``,
    /// each container's own control directory bound read-write at ``CRaCAgent/controlInSandbox``,
    /// and both named in `JAVA_TOOL_OPTIONS`.
    public var agent: CRaCAgent?

    /// A bind mount at ``destination``. With a ``source``, that host path (it must be there at
    /// every restore); without one, kiln makes an empty file or directory per copy, standing in
    /// for what another runtime generated per container (`/etc/hostname`, `/run/.containerenv`).
    public struct Bind: Codable, Sendable, Equatable {
        public var destination: String
        public var source: String?
        public var readOnly: Bool
        public var isDirectory: Bool

        public init(destination: String, source: String?, readOnly: Bool, isDirectory: Bool) {
            self.destination = destination
            self.source = source
            self.readOnly = readOnly
            self.isDirectory = isDirectory
        }
    }

    /// The root mode of new bakes: Podman's, so its restores accept kiln's snapshots (and kiln
    /// Podman's).
    public static let portableRootMode = 0o555

    public init(
        command: [String], environment: [String: String] = [:], workingDirectory: String,
        appDirectory: String?, rootFilesystem: RootFilesystem = .host, port: Int,
        memoryLimitBytes: Int64 = 1 << 30, pidsLimit: Int64 = 1024, tmpfsSizeBytes: Int64 = 64 << 20, user: SandboxUser? = nil,
        rootMode: Int? = SandboxSpec.portableRootMode, binds: [Bind]? = nil, agent: CRaCAgent? = nil
    ) {
        self.agent = agent
        self.rootMode = rootMode
        self.binds = binds
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.appDirectory = appDirectory
        self.rootFilesystem = rootFilesystem
        self.port = port
        self.memoryLimitBytes = memoryLimitBytes
        self.pidsLimit = pidsLimit
        self.tmpfsSizeBytes = tmpfsSizeBytes
        self.user = user
    }

    /// Smallest and largest memory limit kiln accepts: below a few MiB nothing starts (Docker
    /// refuses less than 6 MiB too); the upper bound only keeps MiB-to-bytes arithmetic sane.
    public static let memoryLimitRange: ClosedRange<Int64> = (6 << 20)...(1 << 40)

    /// Parses a memory limit: a number of MiB (`1024`, what `--memory` always took), or a number
    /// with a unit, `k`, `m` or `g` (powers of 1024; `512m`, `2g`, `1536MiB`, `2 GiB` are fine).
    public static func memoryLimit(parsing text: String) throws -> Int64 {
        let invalid = KilnError(
            .invalidArgument, "memory limit '\(text)' is not a size from 6 MiB to 1 TiB",
            hint: "give MiB or a unit, e.g. --memory 1024 or --memory 2g")
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        let shift: Int64
        switch unit {
        case "k", "kb", "kib": shift = 10
        case "", "m", "mb", "mib": shift = 20
        case "g", "gb", "gib": shift = 30
        default: throw invalid
        }
        // `<<` would silently drop the bits that overflow; the multiplication reports them.
        guard let value = Int64(digits) else { throw invalid }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow, memoryLimitRange.contains(bytes) else { throw invalid }
        return bytes
    }

    /// Parses `--env` entries, `KEY=VALUE` each (the value may be empty or hold `=`); a later
    /// entry for the same key wins.
    public static func environment(parsing entries: [String]) throws -> [String: String] {
        var environment: [String: String] = [:]
        for entry in entries {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex, !entry.utf8.contains(0) else {
                throw KilnError(.invalidArgument, "--env '\(entry)' is not KEY=VALUE", hint: "e.g. --env JAVA_OPTS=-Xmx256m")
            }
            environment[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        return environment
    }

    /// What is wrong with a spec read back from a snapshot manifest, or nil: what `kiln bake`
    /// makes has absolute paths, limits in range and no NUL where `execve` would cut a string.
    package var problem: String? {
        var paths = [("working directory", workingDirectory)]
        if let appDirectory { paths.append(("app directory", appDirectory)) }
        if case .directory(let root) = rootFilesystem { paths.append(("root filesystem", root)) }
        for (what, path) in paths where !InputValidation.isCleanAbsolutePath(path) {
            return "its \(what) '\(path)' is not a clean absolute path"
        }
        guard Self.memoryLimitRange.contains(memoryLimitBytes) else { return "its memory limit \(memoryLimitBytes) is out of range" }
        guard pidsLimit > 0, tmpfsSizeBytes > 0 else { return "its pids limit or /tmp size is not positive" }
        guard !command.contains(where: { $0.utf8.contains(0) }) else { return "its command holds a NUL character" }
        if let rootMode, !(0...0o7777).contains(rootMode) { return "its root mode \(rootMode) is not a permission mode" }
        for bind in binds ?? [] {
            guard InputValidation.isCleanAbsolutePath(bind.destination), bind.destination != "/",
                bind.source.map(InputValidation.isCleanAbsolutePath) ?? true
            else { return "its bind mount '\(bind.destination)' is not between clean absolute paths" }
        }
        if let agent, !InputValidation.isCleanAbsolutePath(agent.jarPath) { return "its agent jar '\(agent.jarPath)' is not a clean absolute path" }
        for (key, value) in environment where key.isEmpty || key.contains("=") || key.utf8.contains(0) || value.utf8.contains(0) {
            return "its environment variable '\(key)' is invalid"
        }
        return nil
    }

    /// JVM options kiln adds (through `JAVA_TOOL_OPTIONS`, so any JVM the command starts gets
    /// them, whatever it runs):
    /// - `-XX:-UsePerfData`: no shared perf-data file mapped from /tmp into every copy (the seed
    ///   experiment turned it off too);
    /// - `-XX:ArchiveRelocationMode=0`: map the JDK's class-data archive where it was built for
    ///   instead of relocating it at a random address, which dirties ~10 MB that every snapshot
    ///   would carry. The randomisation buys nothing here: every copy restored from a snapshot has
    ///   the same memory layout anyway. Mapped unmodified, the archive is read from the page cache
    ///   that all copies share. (A diagnostic flag; `IgnoreUnrecognizedVMOptions` keeps JVMs
    ///   without it starting.)
    /// - `-XX:SweeperThreshold=10` (JDK 15-19; the code cache sweeper is gone since JDK 20, which
    ///   ignores the flag silently): the sweeper walks every compiled method, writing to each,
    ///   once the methods made not entrant since its last walk add up to this percentage of the
    ///   code cache (0.5 % by default: 1.2 MB of 240 MB). Each copy's restore makes a few methods
    ///   not entrant (5-13 in the Spring sample), so in a bake whose count was left just short,
    ///   every copy walked the code cache right after its restore: 14 MiB of shared code-cache
    ///   pages copied in each (8 copies' PSS 2.28x one copy's), ~4,000 more page faults and the
    ///   walk competing with afterRestore (docs/restore-path.md). At 10 % (24 MB) a restore's
    ///   few cannot cross it; the sweeper still runs when the code cache fills.
    public static let jvmOptions = [
        "-XX:-UsePerfData", "-XX:+UnlockDiagnosticVMOptions", "-XX:+IgnoreUnrecognizedVMOptions", "-XX:ArchiveRelocationMode=0",
        "-XX:SweeperThreshold=10",
    ]

    /// The environment the process starts with: a plain PATH and locale, the user's variables,
    /// `PORT`, and kiln's ``jvmOptions`` appended to any `JAVA_TOOL_OPTIONS` of the user's.
    public var processEnvironment: [String: String] {
        var env = [
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
        ]
        env.merge(environment) { _, user in user }
        env["PORT"] = String(port)
        let user = env["JAVA_TOOL_OPTIONS"].map { $0.split(separator: " ").map(String.init) } ?? []
        let agentOptions = agent?.options ?? []
        env["JAVA_TOOL_OPTIONS"] =
            (user + agentOptions
            + Self.jvmOptions.filter { option in
                // The user's own setting of a flag wins.
                let name = option.drop { "-+X:".contains($0) }.split(separator: "=").first.map(String.init) ?? option
                return !user.contains { $0.contains(name) }
            }).joined(separator: " ")
        return env
    }
}

/// kiln's CRaC backend (agent/, a Java agent) in a sandbox: where its jar is on the host. The
/// paths inside the sandbox are fixed, so every restored copy finds its control directory where
/// the checkpointed JVM was told it is (agent/PROTOCOL.md).
///
/// Two layouts. Snapshots baked since the jar travels with them (``jarInSnapshot`` set) have one
/// mount, ``directoryInSandbox``: a directory of the sandbox's own holding a copy of the jar
/// (root's, read-only) and the control directory. The jar is stored among the snapshot's images,
/// so a copy restored after kiln's agent was rebuilt, or on another host, finds the very jar its
/// JVM has open; and one mount instead of two: each bind mount costs `runc restore` ~2 ms here.
/// Older snapshots have two mounts: the host's jar at ``jarPath`` (read-only) and the control
/// directory.
public struct CRaCAgent: Codable, Sendable, Equatable {
    /// The agent jar on the host the sandbox's copy is made from: kiln's own at a bake; at a
    /// restore, the snapshot's (``jarInSnapshot``). In the older layout the jar bound as it is,
    /// which must then be the same file at every restore (the JVM keeps it open).
    public var jarPath: String
    /// The jar's name among the snapshot's image files (kiln stores it there at the bake); nil
    /// in snapshots of the older, two-mount layout.
    public var jarInSnapshot: String?

    /// The one mount of the current layout: the jar (``bundledJarInSandbox``) and the control
    /// directory (``controlInSandbox``) are in it.
    public static let directoryInSandbox = "/run/kiln"
    public static let bundledJarInSandbox = "\(directoryInSandbox)/\(jarName)"
    /// Where the jar is bound (read-only) inside the sandbox in the older layout.
    public static let jarInSandbox = "/run/kiln/agent/kiln-crac-agent.jar"
    /// Where each container's own control directory is inside the sandbox (both layouts).
    public static let controlInSandbox = "/run/kiln/control"
    /// The FIFO in each control directory through which kiln wakes the agent (agent/PROTOCOL.md):
    /// kiln makes it before the JVM starts or is restored; the JVM holds it open.
    public static let wakeName = "wake"
    public static let wakeInSandbox = "\(controlInSandbox)/\(wakeName)"
    /// Asks the agent to record the stack of each socket's and file's first I/O (a JFR recording
    /// from premain) and to write them at the checkpoint (`io-stacks.json`, agent/PROTOCOL.md).
    public static let ioStacksOption = "-Dkiln.agent.io-stacks=true"

    /// Whether the agent records which code opened the sockets and files (``ioStacksOption``):
    /// `kiln bake --preflight` only, as the recording costs start-up time and its JFR threads
    /// and files do not belong in a snapshot. nil (as in manifests made before it) means no.
    public var ioStacks: Bool?

    public init(jarPath: String, jarInSnapshot: String? = nil, ioStacks: Bool? = nil) {
        self.jarPath = jarPath
        self.jarInSnapshot = jarInSnapshot
        self.ioStacks = ioStacks
    }

    /// Whether the sandbox has the one-mount layout (``jarInSnapshot`` set).
    public var mountsOneDirectory: Bool { jarInSnapshot != nil }

    /// The options that load the agent into every JVM the sandbox starts, plus
    /// ``ioStacksOption`` when asked.
    public var options: [String] {
        ["-javaagent:\(mountsOneDirectory ? Self.bundledJarInSandbox : Self.jarInSandbox)", "-Dkiln.agent.dir=\(Self.controlInSandbox)"]
            + (ioStacks == true ? [Self.ioStacksOption] : [])
    }

    /// This agent with the jar taken from a snapshot's images directory `images` (a restore or a
    /// cold start of a snapshot): unchanged in the older layout, whose jar is the host's.
    public func fromSnapshot(images: String) -> CRaCAgent {
        guard let jarInSnapshot else { return self }
        var agent = self
        agent.jarPath = "\(images)/\(jarInSnapshot)"
        return agent
    }

    /// The jar's file name, as `make samples` / agent/build.sh build it.
    public static let jarName = "kiln-crac-agent.jar"

    /// Finds the agent jar: `$KILN_AGENT_JAR`, else `agent/build/` of the source tree the running
    /// kiln (or test runner) was built in, else the installed `/usr/local/lib/kiln/`.
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let explicit = environment["KILN_AGENT_JAR"], !explicit.isEmpty {
            guard FileManager.default.fileExists(atPath: explicit) else {
                throw KilnError(
                    .toolMissing, "KILN_AGENT_JAR names \(explicit), which does not exist",
                    hint: "build it with 'agent/build.sh' or unset KILN_AGENT_JAR")
            }
            return explicit
        }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        var candidates: [String] = []
        // kiln is .build/<config>/kiln (or .build/<triple>/<config>/...); the repo is above .build.
        var directory = executable
        while !directory.isEmpty, directory != "/" {
            directory = (directory as NSString).deletingLastPathComponent
            if (directory as NSString).lastPathComponent == ".build" {
                candidates.append("\((directory as NSString).deletingLastPathComponent)/agent/build/\(jarName)")
                break
            }
        }
        candidates.append("\((executable as NSString).deletingLastPathComponent)/\(jarName)")
        candidates.append("/usr/local/lib/kiln/\(jarName)")
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) { return found }
        throw KilnError(
            .toolMissing, "kiln's CRaC agent jar was not found (looked at \(candidates.joined(separator: ", ")))",
            hint: "build it with 'make samples' (or agent/build.sh), set KILN_AGENT_JAR, or bake with --no-agent")
    }
}

/// A uid and gid a sandboxed service runs as.
public struct SandboxUser: Codable, Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32

    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }
}

/// One container made from a ``SandboxSpec``: the per-copy parts.
public struct SandboxContainer: Sendable {
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
    /// The text of the container's `/etc/resolv.conf` on a network (bind-mounted from the
    /// bundle); nil for a loopback-only sandbox, whose root keeps its own (empty) file.
    public var resolvConf: String?
    /// The host directory bound at ``CRaCAgent/controlInSandbox`` when the spec has an agent.
    public var agentDirectory: String?

    public init(
        id: String, bundlePath: String, networkNamespacePath: String, cgroupPath: String, criuConfigPath: String? = nil, resolvConf: String? = nil,
        agentDirectory: String? = nil
    ) {
        self.resolvConf = resolvConf
        self.agentDirectory = agentDirectory
        self.id = id
        self.bundlePath = bundlePath
        self.networkNamespacePath = networkNamespacePath
        self.cgroupPath = cgroupPath
        self.criuConfigPath = criuConfigPath
    }
}
