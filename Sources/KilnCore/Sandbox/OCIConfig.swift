import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The subset of the OCI runtime spec (config.json) kiln writes for runc.
struct OCIConfig: Codable {
    struct Process: Codable {
        struct User: Codable { var uid: UInt32; var gid: UInt32 }
        struct Capabilities: Codable {
            var bounding: [String]
            var effective: [String]
            var permitted: [String]
        }
        struct Rlimit: Codable { var type: String; var hard: UInt64; var soft: UInt64 }
        var terminal = false
        var user = User(uid: 0, gid: 0)
        var args: [String]
        var env: [String]
        var cwd: String
        var capabilities: Capabilities
        var rlimits: [Rlimit]
        var noNewPrivileges = true
    }
    struct Root: Codable { var path: String; var readonly: Bool }
    struct Mount: Codable {
        var destination: String
        var type: String
        var source: String
        var options: [String]
    }
    struct Linux: Codable {
        struct Namespace: Codable { var type: String; var path: String? }
        struct Resources: Codable {
            struct Memory: Codable { var limit: Int64 }
            struct Pids: Codable { var limit: Int64 }
            var memory: Memory
            var pids: Pids
        }
        var namespaces: [Namespace]
        var resources: Resources
        var cgroupsPath: String
        var maskedPaths: [String]
        var readonlyPaths: [String]
        var seccomp: SeccompProfile
    }

    var ociVersion = "1.0.2"
    var process: Process
    var root: Root
    var hostname: String
    var mounts: [Mount]
    var linux: Linux
    var annotations: [String: String]

    /// runc's default capability set (`runc spec`): nothing beyond these three.
    static let defaultCapabilities = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

    /// Open files allowed in the sandbox: 65536, or kiln's own hard limit if lower (raising it
    /// takes CAP_SYS_RESOURCE, which kiln does not assume).
    static var fileLimit: UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return min(65536, UInt64(limit.rlim_max))
    }

    /// runc's default masked and read-only /proc and /sys paths.
    static let maskedPaths = [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
    ]
    static let readonlyPaths = [
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
    ]

    /// The config for one container of `spec`; `rootPath` is the root filesystem and `binds`
    /// the extra read-only bind mounts the root filesystem layout asks for.
    init(spec: SandboxSpec, instance: SandboxInstance, rootPath: String, binds: [String], extraMounts: [Mount] = []) {
        let env = spec.processEnvironment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        process = Process(
            user: Process.User(uid: spec.user?.uid ?? 0, gid: spec.user?.gid ?? 0), args: spec.command, env: env, cwd: spec.workingDirectory,
            capabilities: .init(
                bounding: Self.defaultCapabilities, effective: Self.defaultCapabilities,
                permitted: Self.defaultCapabilities),
            rlimits: [.init(type: "RLIMIT_NOFILE", hard: Self.fileLimit, soft: Self.fileLimit)])
        root = Root(path: rootPath, readonly: true)
        hostname = instance.id
        var mounts: [Mount] = [
            .init(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
            .init(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            .init(destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
            .init(destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            .init(destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
            .init(destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
            .init(destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"]),
            .init(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777", "size=\(spec.tmpfsSizeBytes)"]),
        ]
        for path in binds {
            mounts.append(.init(destination: path, type: "bind", source: path, options: ["rbind", "ro", "nosuid", "nodev"]))
        }
        if let app = spec.appDirectory {
            mounts.append(.init(destination: app, type: "bind", source: app, options: ["rbind", "ro", "nosuid", "nodev"]))
        }
        self.mounts = mounts + extraMounts
        linux = Linux(
            namespaces: [
                .init(type: "pid"), .init(type: "ipc"), .init(type: "uts"), .init(type: "mount"),
                .init(type: "network", path: instance.networkNamespacePath),
            ],
            resources: .init(memory: .init(limit: spec.memoryLimitBytes), pids: .init(limit: spec.pidsLimit)),
            cgroupsPath: instance.cgroupPath,
            maskedPaths: Self.maskedPaths,
            readonlyPaths: Self.readonlyPaths,
            seccomp: .kiln)
        // runc hands this file to CRIU for checkpoint and restore alike (see CRIUConfiguration).
        annotations = instance.criuConfigPath.map { ["org.criu.config": $0] } ?? [:]
    }
}
