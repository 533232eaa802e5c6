import CKilnShims

#if canImport(Glibc)
import Glibc
#endif

/// What kiln needs from the host before it can checkpoint or restore anything.
///
/// CRIU must run as root: it reads and writes other processes' memory (ptrace and
/// /proc/PID/map_files), enters their namespaces and recreates them, which takes CAP_SYS_ADMIN,
/// CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE and more; runc needs root to create the namespaces,
/// cgroups and mounts of each sandbox. The service inside never gets any of these.
public enum HostPrivileges {
    /// Capabilities kiln checks for by name (bit numbers from linux/capability.h).
    ///
    /// `CAP_CHECKPOINT_RESTORE` is not among them although CRIU uses what it grants (`ns_last_pid`,
    /// `clone3` with a set pid, `/proc/PID/map_files`): the kernel grants all of that to
    /// `CAP_SYS_ADMIN` as well (`checkpoint_restore_ns_capable`), which kiln requires anyway. So a
    /// container runtime that cannot grant it (Docker 20.10, Debian bookworm's: `--cap-add
    /// CHECKPOINT_RESTORE` is "unknown capability") can still run kiln.
    static let required: [Capability] = [.dacOverride, .kill, .setuid, .netAdmin, .sysChroot, .sysPtrace, .sysAdmin]

    /// The capabilities kiln needs that the calling process does not have.
    public static func missingCapabilities() -> [String] {
        var mask: UInt64 = 0
        guard kiln_effective_caps(&mask) == 0 else { return ["(capget failed: \(errnoDescription(errno)))"] }
        return required.filter { mask & (1 << UInt64($0.rawValue)) == 0 }.map(\.name)
    }

    /// Whether the calling process has `capability` in its effective set.
    public static func has(_ capability: Capability) -> Bool {
        var mask: UInt64 = 0
        return kiln_effective_caps(&mask) == 0 && mask & (1 << UInt64(capability.rawValue)) != 0
    }

    /// Throws unless kiln runs as root with the capabilities CRIU and runc need.
    public static func requireRoot(toDo action: String) throws {
        guard geteuid() == 0 else {
            throw KilnError(
                .notRoot,
                "kiln must run as root to \(action) (CRIU and runc create namespaces, cgroups and mounts, and read and write process memory)",
                hint: "run it as root, e.g. 'sudo kiln ...'; the service itself never gets these privileges")
        }
        let missing = missingCapabilities()
        guard missing.isEmpty else {
            throw KilnError(
                .missingCapability, "kiln runs as root but without \(missing.joined(separator: ", ")), which it needs to \(action)",
                hint:
                    "run kiln with its full capability set (not under 'capsh --drop' or a restricted container); inside Docker use --privileged or the flags in the README's 'In Docker' section"
            )
        }
    }
}

/// The Linux capabilities kiln asks about, by their bit numbers in linux/capability.h.
public enum Capability: Int, Sendable, CaseIterable {
    case dacOverride = 1
    case kill = 5
    case setuid = 7
    case netAdmin = 12
    case sysChroot = 18
    case sysPtrace = 19
    case sysAdmin = 21
    /// Raising resource limits past the hard limit; a bake that runs the service as another
    /// user needs it to hand that user its limits.
    case sysResource = 24

    /// The kernel's name, e.g. `CAP_SYS_ADMIN`.
    public var name: String {
        switch self {
        case .dacOverride: "CAP_DAC_OVERRIDE"
        case .kill: "CAP_KILL"
        case .setuid: "CAP_SETUID"
        case .netAdmin: "CAP_NET_ADMIN"
        case .sysChroot: "CAP_SYS_CHROOT"
        case .sysPtrace: "CAP_SYS_PTRACE"
        case .sysAdmin: "CAP_SYS_ADMIN"
        case .sysResource: "CAP_SYS_RESOURCE"
        }
    }
}
