import KilnSystem

/// The seccomp filter every kiln container runs under (the OCI `linux.seccomp` object).
///
/// A deny list rather than Docker's allow list: a JVM, a shell script or a Python service must all
/// run unmodified, and an allow list that misses one syscall a runtime needs breaks it in ways that
/// are hard to diagnose (an `EPERM` deep in a library). What it denies is what Docker's default
/// profile denies to a container without `CAP_SYS_ADMIN`, plus io_uring (which Docker also blocks
/// now): the kernel interfaces a confined service never needs and that most container escapes go
/// through. The capabilities kiln leaves a container already refuse most of them; the filter is
/// the second wall, and it also closes what capabilities do not cover (user namespaces, which an
/// unprivileged process may otherwise create and be all-powerful in; `bpf`, `userfaultfd`,
/// `perf_event_open`, keyrings).
///
/// Checkpoint and restore keep it: CRIU dumps each thread's filter and installs it again as the
/// last step of a restore, and suspends it for its own code while it dumps.
package struct SeccompProfile: Codable, Equatable {
    package struct Rule: Codable, Equatable {
        package struct Argument: Codable, Equatable {
            package var index: Int
            package var value: UInt64
            package var valueTwo: UInt64
            package var op: SeccompOperator
        }
        package var names: [String]
        package var action: SeccompAction
        package var errnoRet: Int?
        package var args: [Argument]?
    }

    package var defaultAction: SeccompAction
    /// Only the native ABI: a 32-bit syscall (int 0x80) from a 64-bit service is killed outright,
    /// so the deny list cannot be sidestepped by calling the same syscall under another number.
    package var architectures: [String]
    package var syscalls: [Rule]

    package static let permissionDenied = 1
    package static let notImplemented = 38

    /// Syscalls refused with `EPERM`, grouped by why.
    package static let deniedSyscalls: [String] = [
        // Kernel modules and replacing the kernel.
        "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
        "kexec_load", "kexec_file_load", "reboot",
        // Mounting and changing the root: the sandbox's view of files is fixed by kiln.
        "mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
        // New namespaces (a user namespace makes its creator root inside it) and joining others.
        "unshare", "setns",
        // Reading or changing other processes and the kernel's inner state.
        "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "perf_event_open", "bpf",
        "userfaultfd", "lookup_dcookie", "syslog", "name_to_handle_at", "open_by_handle_at",
        // Kernel keyrings are not namespaced.
        "keyctl", "add_key", "request_key",
        // The host's clock, swap, quotas, accounting and I/O ports.
        "settimeofday", "clock_settime", "clock_adjtime", "stime",
        "swapon", "swapoff", "quotactl", "quotactl_fd", "acct", "nfsservctl", "sysfs", "_sysctl", "ustat", "uselib", "vhangup",
        "iopl", "ioperm",
        // A large, young attack surface no JVM uses.
        "io_uring_setup", "io_uring_enter", "io_uring_register",
    ]

    /// `clone` flags that create namespaces; `clone` with any of them is refused (threads and
    /// plain forks pass).
    package static let namespaceCloneFlags: [UInt64] = [
        0x0002_0000,  // CLONE_NEWNS
        0x0200_0000,  // CLONE_NEWCGROUP
        0x0400_0000,  // CLONE_NEWUTS
        0x0800_0000,  // CLONE_NEWIPC
        0x1000_0000,  // CLONE_NEWUSER
        0x2000_0000,  // CLONE_NEWPID
        0x4000_0000,  // CLONE_NEWNET
    ]

    package static var nativeArchitecture: String {
        #if arch(x86_64)
        "SCMP_ARCH_X86_64"
        #elseif arch(arm64)
        "SCMP_ARCH_AARCH64"
        #else
        #error("kiln's seccomp profile knows x86_64 and arm64")
        #endif
    }

    /// kiln's profile.
    package static let kiln: SeccompProfile = {
        var rules = [Rule(names: deniedSyscalls, action: .errno, errnoRet: permissionDenied)]
        // clone3 passes its flags in memory a filter cannot read: answer ENOSYS, so the C library
        // falls back to clone, whose flags it can (Docker does the same).
        rules.append(Rule(names: ["clone3"], action: .errno, errnoRet: notImplemented))
        for flag in namespaceCloneFlags {
            rules.append(
                Rule(
                    names: ["clone"], action: .errno, errnoRet: permissionDenied,
                    args: [.init(index: 0, value: flag, valueTwo: flag, op: .maskedEqual)]))
        }
        return SeccompProfile(defaultAction: .allow, architectures: [nativeArchitecture], syscalls: rules)
    }()
}

/// What a seccomp rule does with a matching syscall (the OCI spec's `SCMP_ACT_*` names).
package enum SeccompAction: String, Codable, Sendable {
    case allow = "SCMP_ACT_ALLOW"
    /// Fails the call with the rule's `errnoRet`.
    case errno = "SCMP_ACT_ERRNO"
    case kill = "SCMP_ACT_KILL"
}

/// How a seccomp rule compares a syscall argument (the OCI spec's `SCMP_CMP_*` names).
package enum SeccompOperator: String, Codable, Sendable {
    case equal = "SCMP_CMP_EQ"
    /// `(argument & value) == valueTwo`.
    case maskedEqual = "SCMP_CMP_MASKED_EQ"
}
