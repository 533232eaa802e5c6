import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("the sandbox kiln asks runc for")
struct SandboxConfigTests {
    let spec = SandboxSpec(
        command: ["bin/app", "--flag"], environment: ["GREETING": "hi", "PORT": "1"], workingDirectory: "/srv/app",
        appDirectory: "/srv/app", port: 8080, memoryLimitBytes: 256 << 20, pidsLimit: 100)
    let instance = SandboxContainer(
        id: "app-abc123", bundlePath: "/tmp/b", networkNamespacePath: "/run/kiln/netns/app-abc123", cgroupPath: "/kiln/app-abc123")

    func config() throws -> [String: Any] {
        let data = try JSONEncoder().encode(OCIConfig(spec: spec, instance: instance, rootPath: "/tmp/b/rootfs", binds: ["/usr"]))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func confinementIsNarrow() throws {
        let config = try config()
        let process = try #require(config["process"] as? [String: Any])
        #expect(process["noNewPrivileges"] as? Bool == true)
        let capabilities = try #require(process["capabilities"] as? [String: [String]])
        for set in ["bounding", "effective", "permitted"] {
            #expect(Set(capabilities[set] ?? ["missing"]) == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
        }
        #expect((config["root"] as? [String: Any])?["readonly"] as? Bool == true)
        let linux = try #require(config["linux"] as? [String: Any])
        let namespaces = try #require(linux["namespaces"] as? [[String: String]])
        #expect(Set(namespaces.compactMap { $0["type"] }) == ["pid", "ipc", "uts", "mount", "network"])
        #expect(namespaces.first { $0["type"] == "network" }?["path"] == instance.networkNamespacePath)
        let resources = try #require(linux["resources"] as? [String: [String: Int]])
        #expect(resources["memory"]?["limit"] == 256 << 20)
        #expect(resources["pids"]?["limit"] == 100)
        #expect(linux["cgroupsPath"] as? String == "/kiln/app-abc123")
        #expect((linux["maskedPaths"] as? [String])?.contains("/proc/kcore") == true)
        #expect(config["hostname"] as? String == instance.id)
    }

    @Test func seccompDeniesEscapeRoutesAndKeepsThreads() throws {
        let linux = try #require(try config()["linux"] as? [String: Any])
        let seccomp = try #require(linux["seccomp"] as? [String: Any])
        #expect(seccomp["defaultAction"] as? String == "SCMP_ACT_ALLOW")
        let rules = try #require(seccomp["syscalls"] as? [[String: Any]])
        let denied = Set(rules.filter { $0["args"] == nil && $0["errnoRet"] as? Int == 1 }.flatMap { $0["names"] as? [String] ?? [] })
        for name in ["mount", "init_module", "finit_module", "unshare", "setns", "ptrace", "bpf", "keyctl", "kexec_load", "open_by_handle_at"] {
            #expect(denied.contains(name), "\(name) must be denied")
        }
        // Creating threads and processes must stay possible: clone is only refused with namespace flags.
        #expect(!denied.contains("clone") && !denied.contains("fork") && !denied.contains("execve"))
        let cloneRules = rules.filter { ($0["names"] as? [String]) == ["clone"] }
        let newUser: UInt64 = 0x1000_0000
        #expect(
            cloneRules.contains { rule in
                let argument = (rule["args"] as? [[String: Any]])?.first
                return (argument?["value"] as? NSNumber)?.uint64Value == newUser && argument?["op"] as? String == "SCMP_CMP_MASKED_EQ"
            })
        #expect(rules.contains { ($0["names"] as? [String]) == ["clone3"] && $0["errnoRet"] as? Int == 38 })
    }

    @Test func mountsAreReadOnlyExceptTmp() throws {
        let mounts = try #require(try config()["mounts"] as? [[String: Any]])
        let byDestination = Dictionary(uniqueKeysWithValues: mounts.map { ($0["destination"] as! String, $0) })
        for bind in ["/usr", "/srv/app"] {
            let options = try #require(byDestination[bind]?["options"] as? [String])
            #expect(options.contains("ro"), "\(bind) must be read-only")
            #expect(byDestination[bind]?["type"] as? String == "bind")
        }
        #expect(byDestination["/tmp"]?["type"] as? String == "tmpfs")
    }

    @Test func environmentCarriesPortAndJVMFlags() {
        let env = spec.processEnvironment
        #expect(env["PORT"] == "8080", "PORT comes from --port, not from the user's environment")
        #expect(env["GREETING"] == "hi")
        #expect(env["JAVA_TOOL_OPTIONS"] == SandboxSpec.jvmOptions.joined(separator: " "))
        var custom = spec
        custom.environment["JAVA_TOOL_OPTIONS"] = "-Xmx64m -XX:+UsePerfData"
        let options = custom.processEnvironment["JAVA_TOOL_OPTIONS"] ?? ""
        #expect(options.hasPrefix("-Xmx64m -XX:+UsePerfData "))
        #expect(!options.contains("-XX:-UsePerfData"), "the user's own choice of a flag wins")
        #expect(options.contains("-XX:ArchiveRelocationMode=0"))
        #expect(options.contains("-XX:SweeperThreshold=10"))
        custom.environment["JAVA_TOOL_OPTIONS"] = "-XX:SweeperThreshold=2"
        let sweeper = (custom.processEnvironment["JAVA_TOOL_OPTIONS"] ?? "").split(separator: " ").filter { $0.contains("SweeperThreshold") }
        #expect(sweeper == ["-XX:SweeperThreshold=2"], "the user's own sweeper threshold wins")
    }

    @Test func hostRootHasSymlinksAndAMinimalEtc() throws {
        let root = "/tmp/kiln-unit-root-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try SandboxBundle.layOutHostRoot(at: root, hostname: "copy-1", binds: ["/usr", "/etc/alternatives"])
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(root)/bin") == "usr/bin")
        let hosts = try String(contentsOfFile: "\(root)/etc/hosts", encoding: .utf8)
        #expect(hosts.contains("copy-1"))
        #expect(FileManager.default.fileExists(atPath: "\(root)/etc/alternatives"))
        #expect(!FileManager.default.fileExists(atPath: "\(root)/etc/shadow"))
        #expect(SandboxBundle.hostEtcBinds().allSatisfy { $0.hasPrefix("/etc/") && $0 != "/etc" })
    }

    @Test func commandsOutsideTheSandboxAreRefused() throws {
        var outside = spec
        outside.command = ["/etc/passwd"]
        #expect(throws: KilnError.self) { try CommandResolver(sandbox: outside).resolve() }
        var onPath = spec
        onPath.command = ["sh"]
        #expect(try CommandResolver(sandbox: onPath).resolve().hasSuffix("/sh"))
        var missing = spec
        missing.command = ["definitely-not-a-command"]
        let error = try #require(throws: KilnError.self) { try CommandResolver(sandbox: missing).resolve() }
        #expect(error.code == .commandNotFound)
    }

    /// In a root of its own (an image), a command's symlinks resolve inside that root, as they
    /// will for the process: Debian's `/usr/bin/java -> /etc/alternatives/java -> /usr/lib/jvm/...`
    /// must not be looked up on the host.
    @Test func commandsInAnImageRootResolveTheirLinksInThatRoot() throws {
        let root = "/tmp/kiln-unit-root-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fileManager = FileManager.default
        for directory in ["usr/bin", "etc/alternatives", "opt/only-in-image/bin"] {
            try fileManager.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
        }
        let java = "\(root)/opt/only-in-image/bin/java"
        #expect(fileManager.createFile(atPath: java, contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755]))
        try fileManager.createSymbolicLink(atPath: "\(root)/etc/alternatives/java", withDestinationPath: "/opt/only-in-image/bin/java")
        try fileManager.createSymbolicLink(atPath: "\(root)/usr/bin/java", withDestinationPath: "/etc/alternatives/java")
        // `..` stops at the root; an absolute link to a host-only file stays inside.
        try fileManager.createSymbolicLink(atPath: "\(root)/usr/bin/escape", withDestinationPath: "../../../../../../opt/only-in-image/bin/java")
        try fileManager.createSymbolicLink(atPath: "\(root)/usr/bin/hostsh", withDestinationPath: "/bin/sh")
        #expect(CommandResolver.resolve("/usr/bin/java", in: root) == java)
        #expect(CommandResolver.resolve("/usr/bin/escape", in: root) == java)
        #expect(CommandResolver.resolve("/usr/bin/hostsh", in: root) == "\(root)/bin/sh")

        var image = SandboxSpec(command: ["java"], workingDirectory: "/", appDirectory: nil, rootFilesystem: .directory(root), port: 8080)
        #expect(try CommandResolver(sandbox: image).resolve() == "/usr/bin/java")
        image.command = ["/usr/bin/hostsh"]
        let error = try #require(throws: KilnError.self) { try CommandResolver(sandbox: image).resolve() }
        #expect(error.code == .commandNotFound, "the host's /bin/sh is not in the image")
    }
}
