import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Where the facts of this host come from: /proc and friends in kiln (``ProcHostFactsSource``),
/// anything a test wants in the tests (``FixedHostFactsSource``).
public protocol HostFactsSource: Sendable {
    /// This host's facts as they matter to a service in `sandbox`: the C library and the JDK
    /// only when it runs on the host's own root (an image brings its own).
    func facts(for sandbox: SandboxSpec) throws -> HostFacts
}

/// Facts given outright: what the tests change to play another host.
public struct FixedHostFactsSource: HostFactsSource {
    public var facts: HostFacts

    public init(_ facts: HostFacts) {
        self.facts = facts
    }

    public func facts(for sandbox: SandboxSpec) throws -> HostFacts { facts }
}

/// This machine's facts, read from /proc/cpuinfo, uname, the C library, /sys/fs/cgroup, the JDK's
/// `release` file and `criu check --feature`. The CRIU feature probes (~10 ms each) run once per
/// boot, kernel and CRIU binary: their answers are kept in `cachePath`.
public struct ProcHostFactsSource: HostFactsSource {
    public var criu: CRIU
    public var runtime: String
    /// Where the CRIU feature answers are kept (nil: probe every time).
    public var cachePath: String?
    /// A JSON file of facts to use instead of the measured ones (`$KILN_HOST_FACTS`): how a test
    /// or a staging host plays a machine with another CPU, kernel or CRIU. Only the fields it has
    /// replace the measured ones.
    public var overridePath: String?

    public init(criu: CRIU, runtime: String, cachePath: String? = nil, overridePath: String? = nil) {
        self.criu = criu
        self.runtime = runtime
        self.cachePath = cachePath
        self.overridePath = overridePath
    }

    public func facts(for sandbox: SandboxSpec) throws -> HostFacts {
        let cpu = Self.cpuInfo()
        let onHostRoot: Bool = if case .host = sandbox.rootFilesystem { true } else { false }
        var facts = HostFacts(
            kernel: Self.uname().release, criuVersion: criu.version.description, runtime: runtime, architecture: Self.uname().machine,
            cpuVendor: cpu.vendor, cpuModel: cpu.model, cpuFlags: cpu.flags.map { $0.filter(HostCheck.jvmCPUFlags.contains).sorted() },
            kernelFeatures: kernelFeatures(), glibc: onHostRoot ? Self.glibcVersion() : nil, jdk: onHostRoot ? Self.jdk(for: sandbox) : nil,
            pageSize: Int(sysconf(Int32(_SC_PAGESIZE))), cgroupVersion: Self.cgroupVersion())
        if let overridePath { try HostFactsOverride.load(overridePath).apply(to: &facts) }
        return facts
    }

    /// `uname -r` and `uname -m`.
    static func uname() -> (release: String, machine: String) {
        var name = utsname()
        Glibc.uname(&name)
        func text<T>(_ field: inout T) -> String {
            withUnsafeBytes(of: &field) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        }
        return (text(&name.release), text(&name.machine))
    }

    /// The first processor's vendor, model and flags (x86 `flags`, arm64 `Features`).
    static func cpuInfo(_ text: String? = ProcFile.text("/proc/cpuinfo")) -> (
        vendor: String?, model: String?, flags: [String]?
    ) {
        guard let text else { return (nil, nil, nil) }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty, !fields.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            if fields[key] == nil { fields[key] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
        }
        let flags = (fields["flags"] ?? fields["Features"]).map { $0.split(separator: " ").map(String.init) }
        return (fields["vendor_id"] ?? fields["CPU implementer"], fields["model name"] ?? fields["CPU part"], flags)
    }

    /// `confstr(_CS_GNU_LIBC_VERSION)`, e.g. "2.36" (from "glibc 2.36").
    static func glibcVersion() -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        guard confstr(Int32(_CS_GNU_LIBC_VERSION), &buffer, buffer.count) > 0 else { return nil }
        let text = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.hasPrefix("glibc ") ? String(text.dropFirst("glibc ".count)) : text
    }

    /// 2 when the unified hierarchy is mounted at /sys/fs/cgroup (it has cgroup.controllers), else 1.
    static func cgroupVersion() -> Int? {
        guard FileManager.default.fileExists(atPath: "/sys/fs/cgroup") else { return nil }
        return FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") ? 2 : 1
    }

    /// The JDK a service on the host's root runs: `$JAVA` or `$JAVA_HOME` of its environment, a
    /// command that is `java` itself, else the `java` on the sandbox's PATH (what the samples'
    /// launch scripts run), resolved through its symlinks (Debian's alternatives) to its home.
    static func jdk(for sandbox: SandboxSpec) -> JDKBuild? {
        var candidates: [String] = []
        if let java = sandbox.environment["JAVA"], java.hasPrefix("/") { candidates.append(java) }
        if let home = sandbox.environment["JAVA_HOME"], home.hasPrefix("/") { candidates.append("\(home)/bin/java") }
        if let first = sandbox.command.first, (first as NSString).lastPathComponent == "java", first.hasPrefix("/") { candidates.append(first) }
        let path = sandbox.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        candidates += path.split(separator: ":").map { "\($0)/java" }
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate) {
            guard let real = realpath(candidate, nil) else { continue }
            defer { free(real) }
            let home = ((String(cString: real) as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
            guard let release = try? String(contentsOfFile: "\(home)/release", encoding: .utf8) else { continue }
            for line in release.split(separator: "\n") where line.hasPrefix("JAVA_RUNTIME_VERSION=") {
                let version = line.dropFirst("JAVA_RUNTIME_VERSION=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                return JDKBuild(home: home, version: version)
            }
        }
        return nil
    }

    /// The ``HostCheck/criuFeatures`` `criu check --feature` confirms on this kernel.
    func kernelFeatures() -> [String] {
        let bootID =
            (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        var info = stat()
        let criuMtime = stat(criu.path, &info) == 0 ? info.st_mtim.tv_sec : 0
        let key = "\(bootID) \(Self.uname().release) \(criu.path) \(criu.version) \(criuMtime) \(HostCheck.criuFeatures.joined(separator: ","))"
        struct Cached: Codable {
            var key: String
            var features: [String]
        }
        if let cachePath, let data = FileManager.default.contents(atPath: cachePath), let cached = try? JSONDecoder().decode(Cached.self, from: data),
            cached.key == key
        {
            return cached.features
        }
        let features = HostCheck.criuFeatures.filter { feature in
            (try? Subprocess.run(criu.path, ["check", "--feature", feature]).status.isSuccess) ?? false
        }.sorted()
        if let cachePath, let data = try? JSONEncoder().encode(Cached(key: key, features: features)) {
            try? data.write(to: URL(fileURLWithPath: cachePath), options: .atomic)
        }
        return features
    }
}

/// The facts an override file (`$KILN_HOST_FACTS`) replaces: any subset of ``HostFacts``'s fields.
struct HostFactsOverride: Codable {
    var kernel: String?
    var criuVersion: String?
    var runtime: String?
    var architecture: String?
    var cpuVendor: String?
    var cpuModel: String?
    var cpuFlags: [String]?
    /// Flags to take away from the measured ones (a CPU like this one, less a feature).
    var removeCPUFlags: [String]?
    var kernelFeatures: [String]?
    var glibc: String?
    var jdk: JDKBuild?
    var pageSize: Int?
    var cgroupVersion: Int?

    static func load(_ path: String) throws -> HostFactsOverride {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KilnError(.invalidArgument, "the host facts file \(path) (KILN_HOST_FACTS) cannot be read", hint: "unset KILN_HOST_FACTS")
        }
        do {
            return try JSONDecoder().decode(HostFactsOverride.self, from: data)
        } catch {
            throw KilnError(.invalidArgument, "the host facts file \(path) (KILN_HOST_FACTS) is not a JSON object of host facts: \(error)")
        }
    }

    func apply(to facts: inout HostFacts) {
        if let kernel { facts.kernel = kernel }
        if let criuVersion { facts.criuVersion = criuVersion }
        if let runtime { facts.runtime = runtime }
        if let architecture { facts.architecture = architecture }
        if let cpuVendor { facts.cpuVendor = cpuVendor }
        if let cpuModel { facts.cpuModel = cpuModel }
        if let cpuFlags { facts.cpuFlags = cpuFlags.sorted() }
        if let removeCPUFlags { facts.cpuFlags = facts.cpuFlags?.filter { !removeCPUFlags.contains($0) } }
        if let kernelFeatures { facts.kernelFeatures = kernelFeatures.sorted() }
        if let glibc { facts.glibc = glibc }
        if let jdk { facts.jdk = jdk }
        if let pageSize { facts.pageSize = pageSize }
        if let cgroupVersion { facts.cgroupVersion = cgroupVersion }
    }
}
