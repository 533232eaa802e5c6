import Foundation
import KilnSystem

/// The CRIU binary kiln drives (through runc) and what it is known to do on this host.
public struct CRIU: Sendable {
    /// The oldest CRIU that works on the kernels kiln targets: 3.17 does not know the
    /// `[vvar_vclock]` mapping of Linux 6.13+, and 4.1 fails to dump TCP sockets on 6.16+
    /// (SO_PASSSEC is refused on non-unix sockets). 4.2.1 is what `make setup` builds.
    public static let minimumVersion = SemanticVersion(4, 2, 0)

    /// Absolute path of the binary.
    public var path: String
    /// What `criu --version` reported.
    public var version: SemanticVersion
    /// Whether this CRIU can restore memory by mapping the page images (kiln's patch 0001, which
    /// `make setup` applies): restores then copy nothing up front, and copies of one snapshot
    /// share every page they have not written. `KILN_MAP_PAGE_IMAGES=0` turns it off.
    public var mapsPageImages = false
    /// Whether this CRIU can dump a tmpfs without regular files as a listing that restores without tar
    /// (kiln's patch 0002): runc's /dev, /dev/shm, /sys/fs/cgroup, the masked paths and an unused /tmp
    /// no longer cost a tar + gzip each per restore. `KILN_TMPFS_INLINE=0` turns it off.
    public var inlinesTmpfs = false
    /// Whether this CRIU can catch the tasks it dumps and restores by tracing their system calls
    /// instead of with hardware breakpoints (kiln's patch 0005). A ptrace breakpoint is a perf
    /// event, and the first one after a second without any waits for an RCU grace period (5-17 ms
    /// here): a restore on demand, which nearly always follows a quiet second, paid it every time.
    /// `KILN_NO_BREAKPOINTS=0` turns it off.
    public var avoidsBreakpoints = false

    /// The options of kiln's CRIU patches (patches/criu) this CRIU lacks or the environment turned
    /// off, each with what a restore pays without it: `kiln doctor` warns about them, since kiln
    /// still works with a plain CRIU 4.2, only slower.
    public var optionsNotInUse: [(option: String, cost: String)] {
        [
            ("mmap-page-images", mapsPageImages, "each restore reads every page of the snapshot instead of mapping it (KILN_MAP_PAGE_IMAGES)"),
            ("tmpfs-inline", inlinesTmpfs, "each restore untars every tmpfs mount of the sandbox (KILN_TMPFS_INLINE)"),
            ("no-breakpoints", avoidsBreakpoints, "a restore after a quiet second waits 5-17 ms for its first breakpoint (KILN_NO_BREAKPOINTS)"),
        ].filter { !$0.1 }.map { ($0.0, $0.2) }
    }

    /// Finds CRIU (`$KILN_CRIU`, else the first `criu` on PATH, /usr/local/sbin and /usr/sbin
    /// included) and checks its version; `probes` keeps CRIU's answers about itself between
    /// commands (nil: ask it every time).
    public static func locate(
        environment: [String: String] = ProcessInfo.processInfo.environment, probes: ExecutableProbeCache? = nil
    ) throws -> CRIU {
        func ask(_ arguments: [String]) throws -> CommandOutput {
            try probes?.output(of: path, arguments) ?? Subprocess.run(path, arguments)
        }
        let path: String
        if let explicit = environment["KILN_CRIU"], !explicit.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: explicit) else {
                throw KilnError(
                    .criuMissing, "KILN_CRIU points at '\(explicit)', which is not an executable file",
                    hint: "unset KILN_CRIU to use the CRIU that 'make setup' installs, or point it at a CRIU \(minimumVersion)+ binary")
            }
            path = explicit
        } else {
            let searchPath = (environment["PATH"] ?? "") + ":/usr/local/sbin:/usr/sbin:/sbin"
            guard let found = ExecutableSearch.find("criu", in: searchPath) else {
                throw KilnError(
                    .criuMissing, "CRIU is not installed (no 'criu' on PATH, /usr/local/sbin or /usr/sbin)",
                    hint: "run 'make setup' as root: it builds CRIU \(minimumVersion) from Debian's source package")
            }
            path = found
        }
        let output = try ask(["--version"])
        guard let version = SemanticVersion(criuVersionOutput: output.stdout + output.stderr) else {
            throw KilnError(
                .criuMissing, "'\(path) --version' did not print a version (\(output.status))",
                hint: "run 'make setup' as root to install a working CRIU \(minimumVersion)")
        }
        guard version >= minimumVersion else {
            throw KilnError(
                .criuTooOld,
                "CRIU \(version) at \(path) is too old: this kernel needs CRIU \(minimumVersion) or newer (older ones fail on the vDSO layout of Linux 6.13+ and on TCP sockets from 6.16)",
                hint:
                    "run 'make setup' as root: it builds CRIU 4.2.1 from Debian's source package into /usr/local/sbin (or set KILN_CRIU to a newer binary)"
            )
        }
        var criu = CRIU(path: path, version: version)
        if let help = try? ask(["--help"]) {
            let options = help.stdout + help.stderr
            criu.mapsPageImages = environment["KILN_MAP_PAGE_IMAGES"] != "0" && options.contains("--mmap-page-images")
            criu.inlinesTmpfs = environment["KILN_TMPFS_INLINE"] != "0" && options.contains("--tmpfs-inline")
            criu.avoidsBreakpoints = environment["KILN_NO_BREAKPOINTS"] != "0" && options.contains("--no-breakpoints")
        }
        return criu
    }

    /// Runs `criu check`; CRIU prints "Looks good." when the kernel has what it needs.
    public func check() -> (ok: Bool, output: String) {
        guard let result = try? Subprocess.run(path, ["check"]) else { return (false, "could not run \(path)") }
        let text = (result.stdout + result.stderr).trimmingCharacters(in: .whitespacesAndNewlines)
        return (result.status.isSuccess && text.contains("Looks good"), text)
    }
}

/// A dotted `major.minor.patch` version.
public struct SemanticVersion: Comparable, Codable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int

    public init(_ major: Int, _ minor: Int, _ patch: Int) {
        (self.major, self.minor, self.patch) = (major, minor, patch)
    }

    /// Parses "4.2.1", "4.2" or "1.1.5+ds1".
    public init?(_ text: some StringProtocol) {
        let numbers = text.split(whereSeparator: { !$0.isNumber && $0 != "." }).first?.split(separator: ".").compactMap { Int($0) } ?? []
        guard numbers.count >= 2 else { return nil }
        self.init(numbers[0], numbers[1], numbers.count > 2 ? numbers[2] : 0)
    }

    /// Parses the "Version: 4.2.1" line `criu --version` prints.
    public init?(criuVersionOutput output: String) {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("Version:") }),
            let version = SemanticVersion(line.dropFirst("Version:".count).trimmingCharacters(in: .whitespaces))
        else { return nil }
        self = version
    }

    public static func < (lhs: SemanticVersion, rhs: SemanticVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
    }

    public var description: String { "\(major).\(minor).\(patch)" }
}
