import Foundation
import KilnOCI
import KilnSystem

/// One fact of ``HostFacts`` a restore depends on, by the name `--ignore-host-check` takes.
public enum HostFact: String, CaseIterable, Codable, Sendable, CustomStringConvertible {
    case architecture
    case cpuVendor = "cpu-vendor"
    case cpuModel = "cpu-model"
    case cpuFlags = "cpu-flags"
    case kernel
    case kernelFeatures = "kernel-features"
    case criu
    case runtime
    case glibc
    case jdk
    case pageSize = "page-size"
    case cgroup

    public var description: String { rawValue }

    /// Parses `--ignore-host-check` values (each may also be a comma-separated list).
    public static func parse(_ arguments: [String]) throws -> Set<HostFact> {
        var facts: Set<HostFact> = []
        for name in arguments.flatMap({ $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }) {
            guard let fact = HostFact(rawValue: name) else {
                throw KilnError(
                    .invalidArgument, "--ignore-host-check '\(name)' is not a host fact",
                    hint: "one of: \(allCases.map(\.rawValue).joined(separator: ", "))")
            }
            facts.insert(fact)
        }
        return facts
    }
}

/// How one fact of this host differs from the host a snapshot was baked on.
public struct HostDifference: Sendable, Equatable, Codable {
    public enum Severity: String, Sendable, Codable {
        /// The restore would fail, or the restored process could crash or misbehave.
        case refuse
        /// Worth knowing, harmless for the restore.
        case note
    }

    public var fact: HostFact
    public var severity: Severity
    public var recorded: String
    public var current: String
    /// Why the difference matters (or why it does not).
    public var why: String
    /// What to do about it.
    public var fix: String
    /// A refusal the user waived with `--ignore-host-check`.
    public var ignored = false

    public init(fact: HostFact, severity: Severity, recorded: String, current: String, why: String, fix: String) {
        self.fact = fact
        self.severity = severity
        self.recorded = recorded
        self.current = current
        self.why = why
        self.fix = fix
    }
}

/// The portability guard: compares the facts recorded when a snapshot was baked with this
/// host's, before a restore and before a pull, so a snapshot either restores or the user is
/// told exactly why it cannot.
public enum HostCheck {
    /// The x86 and arm64 CPU features the JVM's JIT compilers and intrinsics may use (HotSpot's
    /// `VM_Version` feature detection): code generated on a CPU with one of them executes its
    /// instructions unconditionally, so a restored JIT-compiled method on a CPU without it dies
    /// with SIGILL. Names as /proc/cpuinfo spells them.
    public static let jvmCPUFlags: Set<String> = [
        // x86
        "cmov", "cx8", "cx16", "fxsr", "mmx", "sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "abm", "lzcnt",
        "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "adx", "aes", "pclmulqdq", "vpclmulqdq", "vaes", "sha_ni", "movbe",
        "erms", "fsrm", "rdtscp", "rdrand", "rdseed", "clflush", "clflushopt", "clwb", "xsave", "osxsave", "tsc", "rtm", "hle",
        "gfni", "serialize", "avx_vnni", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi",
        "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq", "avx512_fp16", "avx512_bf16", "amx_tile", "amx_bf16",
        "amx_int8", "pku", "ospke", "ht", "sha512", "apx",
        // arm64 ("Features")
        "fp", "asimd", "aes", "pmull", "sha1", "sha2", "sha3", "sha512", "crc32", "atomics", "lse", "sve", "sve2", "svebitperm",
        "dcpop", "paca", "pacg", "fphp", "asimdhp", "asimddp", "asimdfhm",
    ]

    /// The `criu check --feature` names a restore of a kiln container uses: mount ids and the new
    /// mount API (mount namespaces), pid namespaces and `clone3` with `set_tid` (each copy's pids
    /// as dumped), seccomp (kiln's filter), the external network namespace kiln hands CRIU,
    /// timerfd/epoll/file locks (a JVM holds them), pidfds, rseq (glibc 2.35+ registers it), the
    /// vDSO remap, memfd.
    public static let criuFeatures: [String] = [
        "mnt_id", "move_mount_set_group", "ns_pid", "clone3_set_tid", "seccomp_filters", "seccomp_suspend", "external_net_ns",
        "nsid", "sk_ns", "newifindex", "timerfd", "kcmp_epoll", "fdinfo_lock", "pidfd_store", "get_rseq_conf", "can_map_vdso",
        "memfd_hugetlb", "openat2", "cgroupns", "uffd",
    ]

    /// Every difference between the host a snapshot was baked on (`recorded`) and this one
    /// (`current`), refusals first. A fact the snapshot did not record (older manifests) is not
    /// compared. Pure: no I/O.
    public static func compare(recorded: HostFacts, current: HostFacts) -> [HostDifference] {
        var differences: [HostDifference] = []
        func add(
            _ fact: HostFact, _ severity: HostDifference.Severity, _ recorded: String, _ current: String, why: String, fix: String
        ) {
            differences.append(HostDifference(fact: fact, severity: severity, recorded: recorded, current: current, why: why, fix: fix))
        }
        let rebake = "bake the snapshot again on this host (or on one like it)"

        if let was = recorded.architecture, was != current.architecture {
            let now = current.architecture ?? "unknown"
            add(
                .architecture, .refuse, was, now, why: "the snapshot's memory holds \(was) machine code, which this CPU cannot run",
                fix: "restore it on a \(was) host, or \(rebake)")
        }
        if let was = recorded.cpuFlags {
            let now = Set(current.cpuFlags ?? [])
            let missing = was.filter { !now.contains($0) }
            if current.cpuFlags == nil {
                add(
                    .cpuFlags, .refuse, "\(was.count) flags", "unknown",
                    why: "this host's CPU flags could not be read, so JIT-compiled code may use instructions it lacks",
                    fix: "check /proc/cpuinfo is readable, or --ignore-host-check cpu-flags if the CPUs are known to match")
            } else if !missing.isEmpty {
                add(
                    .cpuFlags, .refuse, "has \(missing.joined(separator: " "))", "lacks \(missing.joined(separator: " "))",
                    why: "the JVM compiled code using these instructions when the snapshot was baked; on this CPU that code dies with SIGILL",
                    fix: "restore on a CPU with these features (in a VM: pass the host CPU model through), or \(rebake)")
            } else {
                let extra = now.subtracting(was).intersection(jvmCPUFlags).sorted()
                if !extra.isEmpty {
                    add(
                        .cpuFlags, .note, "lacks \(extra.joined(separator: " "))", "has \(extra.joined(separator: " "))",
                        why: "harmless: the restored JVM keeps code for the older CPU and does not use these until a new cold start",
                        fix: "none needed; bake here to use them")
                }
            }
        }
        if let was = recorded.cpuVendor, let now = current.cpuVendor, was != now {
            add(
                .cpuVendor, .note, was, now,
                why: "the JVM tuned some code paths for the CPU vendor; correctness rests on the CPU flags, compared separately",
                fix: "none needed; bake on this vendor's CPUs for its tuning")
        }
        if let was = recorded.cpuModel, let now = current.cpuModel, was != now, recorded.cpuVendor == current.cpuVendor || recorded.cpuVendor == nil {
            add(.cpuModel, .note, was, now, why: "harmless: the CPU flags, compared separately, decide what runs", fix: "none needed")
        }

        if recorded.kernel != current.kernel {
            let was = KernelRelease(recorded.kernel), now = KernelRelease(current.kernel)
            if let was, let now, (was.major, was.minor) == (now.major, now.minor) {
                add(
                    .kernel, .note, recorded.kernel, current.kernel,
                    why: "same kernel series (\(was.major).\(was.minor)), another patch level or build: the interfaces CRIU uses are the same",
                    fix: "none needed")
            } else {
                add(
                    .kernel, .note, recorded.kernel, current.kernel,
                    why: "another kernel series: what CRIU needs of it is compared feature by feature (kernel-features)",
                    fix: "none needed unless a kernel feature is missing")
            }
        }
        if let was = recorded.kernelFeatures {
            let now = Set(current.kernelFeatures ?? [])
            let missing = was.filter { !now.contains($0) }
            if !missing.isEmpty {
                add(
                    .kernelFeatures, .refuse, "has \(missing.joined(separator: " "))",
                    current.kernelFeatures == nil ? "unknown" : "lacks \(missing.joined(separator: " "))",
                    why: "CRIU restores the snapshot's process with these kernel features (criu check --feature NAME fails here)",
                    fix: "use a kernel with them (see 'criu check --all'), or \(rebake)")
            }
        }

        if recorded.criuVersion != current.criuVersion {
            let was = SemanticVersion(recorded.criuVersion), now = SemanticVersion(current.criuVersion)
            if let was, let now, now < was {
                add(
                    .criu, .refuse, recorded.criuVersion, current.criuVersion,
                    why: "an older CRIU may not read images a newer one wrote, nor know the kernel interfaces it used",
                    fix: "install CRIU \(was) or newer ('make setup' builds 4.2.1), or \(rebake)")
            } else if was == nil || now == nil {
                add(
                    .criu, .refuse, recorded.criuVersion, current.criuVersion, why: "the CRIU versions cannot be compared",
                    fix: "install the CRIU the snapshot was baked with")
            } else {
                add(.criu, .note, recorded.criuVersion, current.criuVersion, why: "a newer CRIU reads older images", fix: "none needed")
            }
        }
        if recorded.runtime != current.runtime {
            add(
                .runtime, .note, recorded.runtime, current.runtime,
                why: "the container runtime only sets the sandbox up around CRIU; the snapshot does not depend on its version",
                fix: "none needed")
        }
        if let was = recorded.glibc, was != current.glibc {
            add(
                .glibc, .refuse, was, current.glibc ?? "unknown",
                why:
                    "the restored process has the host's libc mapped as it was at the bake; CRIU refuses a changed file, and code inlined from another build would not match",
                fix: "install glibc \(was), or \(rebake)")
        }
        if let was = recorded.jdk, was != current.jdk {
            add(
                .jdk, .refuse, was.description, current.jdk?.description ?? "no JDK at \(was.home)",
                why:
                    "the restored JVM has this JDK's libjvm.so and modules file mapped: another build, or none, makes the restore fail or the JVM crash",
                fix: "install JDK \(was.version) at \(was.home), or \(rebake)")
        }
        if let was = recorded.pageSize, let now = current.pageSize, was != now {
            add(
                .pageSize, .refuse, "\(was)", "\(now)", why: "the snapshot's memory layout is in pages of \(was) bytes",
                fix: "restore on a kernel with \(was)-byte pages, or \(rebake)")
        }
        if let was = recorded.cgroupVersion, let now = current.cgroupVersion, was != now {
            add(
                .cgroup, .note, "v\(was)", "v\(now)",
                why:
                    "the JVM read its container limits from cgroup v\(was) at start; it keeps those and may misread memory and CPU metrics under v\(now)",
                fix: "none needed for kiln (it leaves cgroups out of the restore); bake on a v\(now) host for exact container metrics")
        }
        return differences.filter { $0.severity == .refuse } + differences.filter { $0.severity == .note }
    }

    /// The differences after `--ignore-host-check`: ignored refusals become notes marked ignored.
    public static func applying(ignored: Set<HostFact>, to differences: [HostDifference]) -> [HostDifference] {
        differences.map { difference in
            guard difference.severity == .refuse, ignored.contains(difference.fact) else { return difference }
            var waived = difference
            waived.severity = .note
            waived.ignored = true
            return waived
        }
    }

    /// The error refusing `snapshot` on this host, or nil when no difference refuses. Its
    /// details are a table of every difference (refusals and notes), each with why and the fix.
    public static func refusal(snapshot: String, differences: [HostDifference], action: String = "") -> KilnError? {
        let refusals = differences.filter { $0.severity == .refuse }
        guard !refusals.isEmpty else { return nil }
        return KilnError(
            .hostMismatch,
            "snapshot '\(snapshot)' was baked on a host this one differs from in \(refusals.map(\.fact.rawValue).joined(separator: ", ")): restoring it here would fail or crash",
            action: action,
            hint: "fix what the table says, or, if you know better, --ignore-host-check \(refusals.map(\.fact.rawValue).joined(separator: ","))",
            details: table(differences))
    }

    /// Rows `FACT  SEVERITY  BAKED ON  HERE  WHY / FIX`, aligned.
    public static func table(_ differences: [HostDifference]) -> [String] {
        let header = ["FACT", "", "BAKED ON", "HERE"]
        let rows = differences.map { [$0.fact.rawValue, $0.ignored ? "ignored" : $0.severity.rawValue, $0.recorded, $0.current] }
        let widths = (0..<4).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            String(
                zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ").reversed().drop { $0 == " " }
                    .reversed())
        }
        var lines = [line(header)]
        for (row, difference) in zip(rows, differences) {
            lines.append(line(row))
            lines.append("    why: \(difference.why)")
            lines.append("    fix: \(difference.fix)")
        }
        return lines
    }
}

/// `major.minor.patch` of a kernel release such as "6.18.3-cloud-amd64".
struct KernelRelease {
    var major: Int
    var minor: Int

    init?(_ text: String) {
        let numbers = text.prefix(while: { $0.isNumber || $0 == "." }).split(separator: ".").compactMap { Int($0) }
        guard numbers.count >= 2 else { return nil }
        (major, minor) = (numbers[0], numbers[1])
    }
}
