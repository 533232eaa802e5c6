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
    static let required: [(name: String, bit: Int)] = [
        ("CAP_DAC_OVERRIDE", 1), ("CAP_KILL", 5), ("CAP_SETUID", 7), ("CAP_NET_ADMIN", 12),
        ("CAP_SYS_CHROOT", 18), ("CAP_SYS_PTRACE", 19), ("CAP_SYS_ADMIN", 21),
    ]

    /// The capabilities kiln needs that the calling process does not have.
    public static func missingCapabilities() -> [String] {
        var mask: UInt64 = 0
        guard kiln_effective_caps(&mask) == 0 else { return ["(capget failed: \(errnoDescription(errno)))"] }
        return required.filter { mask & (1 << UInt64($0.bit)) == 0 }.map(\.name)
    }

    /// Whether the calling process has capability `bit` in its effective set.
    public static func hasCapability(bit: Int) -> Bool {
        var mask: UInt64 = 0
        return kiln_effective_caps(&mask) == 0 && mask & (1 << UInt64(bit)) != 0
    }

    /// Throws unless kiln runs as root with the capabilities CRIU and runc need.
    public static func requireRoot(toDo action: String) throws {
        guard geteuid() == 0 else {
            throw KilnError(
                .notRoot, "kiln must run as root to \(action) (CRIU and runc create namespaces, cgroups and mounts, and read and write process memory)",
                hint: "run it as root, e.g. 'sudo kiln ...'; the service itself never gets these privileges")
        }
        let missing = missingCapabilities()
        guard missing.isEmpty else {
            throw KilnError(
                .missingCapability, "kiln runs as root but without \(missing.joined(separator: ", ")), which it needs to \(action)",
                hint: "run kiln with its full capability set (not under 'capsh --drop' or a restricted container); inside Docker use --privileged or the flags in the README's 'In Docker' section")
        }
    }
}
