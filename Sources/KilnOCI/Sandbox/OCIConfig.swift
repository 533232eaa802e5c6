import Foundation
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// The subset of the OCI runtime spec (config.json) kiln writes for runc.
package struct OCIConfig: Codable {
    package struct Process: Codable {
        package struct User: Codable {
            package var uid: UInt32
            package var gid: UInt32
        }
        package struct Capabilities: Codable {
            package var bounding: [String]
            package var effective: [String]
            package var permitted: [String]
        }
        package struct Rlimit: Codable {
            package var type: String
            package var hard: UInt64
            package var soft: UInt64
        }
        package var terminal = false
        package var user = User(uid: 0, gid: 0)
        package var args: [String]
        package var env: [String]
        package var cwd: String
        package var capabilities: Capabilities
        package var rlimits: [Rlimit]
        package var noNewPrivileges = true
    }
    package struct Root: Codable {
        package var path: String
        package var readonly: Bool
    }
    package struct Mount: Codable {
        package var destination: String
        package var type: String
        package var source: String
        package var options: [String]
    }
    package struct Linux: Codable {
        package struct Namespace: Codable {
            package var type: NamespaceType
            package var path: String?
            package init(type: NamespaceType, path: String? = nil) {
                self.type = type
                self.path = path
            }
        }
        package struct Resources: Codable {
            package struct Memory: Codable { package var limit: Int64 }
            package struct Pids: Codable { package var limit: Int64 }
            package var memory: Memory
            package var pids: Pids
        }
        package var namespaces: [Namespace]
        package var resources: Resources
        package var cgroupsPath: String
        package var maskedPaths: [String]
        package var readonlyPaths: [String]
        package var seccomp: SeccompProfile
    }

    package var ociVersion = "1.0.2"
    package var process: Process
    package var root: Root
    package var hostname: String
    package var mounts: [Mount]
    package var linux: Linux
    package var annotations: [String: String]

    /// runc's default capability set (`runc spec`): nothing beyond these three.
    package static let defaultCapabilities = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

    /// Open files allowed in the sandbox: 65536, or kiln's own hard limit if lower (raising it
    /// takes CAP_SYS_RESOURCE, which kiln does not assume).
    package static var fileLimit: UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return min(65536, UInt64(limit.rlim_max))
    }

    /// runc's default masked and read-only /proc and /sys paths.
    package static let maskedPaths = [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
    ]
    package static let readonlyPaths = [
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
    ]

    /// The config for one container of `spec`; `rootPath` is the root filesystem and `binds`
    /// the extra read-only bind mounts the root filesystem layout asks for.
    package init(spec: SandboxSpec, instance: SandboxContainer, rootPath: String, binds: [String], extraMounts: [Mount] = []) {
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
            .init(
                destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
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
                .init(type: .pid), .init(type: .ipc), .init(type: .uts), .init(type: .mount),
                .init(type: .network, path: instance.networkNamespacePath),
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

/// The kinds of Linux namespace an OCI config names (`linux.namespaces[].type`).
package enum NamespaceType: String, Codable, Sendable {
    case pid, network, mount, ipc, uts, user, cgroup
}
