import Foundation
import Testing

@testable import KilnOCI
@testable import KilnSystem

/// How a sandbox carries kiln's CRaC agent: one mount holding a copy of the snapshot's jar and
/// the copy's own control directory (the older layout: the host's jar read-only and the control
/// directory read-write), both named in JAVA_TOOL_OPTIONS; a missing jar named with its fix.
@Suite("the CRaC agent in a sandbox's bundle")
struct CRaCAgentSandboxTests {
    static func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-agent-bundle-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Writes the bundle of copy `copy` under `root` and returns its mounts.
    static func bundleMounts(_ spec: SandboxSpec, root: String, copy: String, agentDirectory: String) throws -> [[String: Any]] {
        let instance = SandboxContainer(
            id: "svc-\(copy)", bundlePath: "\(root)/\(copy)/bundle", networkNamespacePath: "/run/netns/x", cgroupPath: "/kiln/x",
            agentDirectory: agentDirectory)
        try SandboxBundle.create(spec: spec, instance: instance)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(root)/\(copy)/bundle/config.json")))
        return (config as? [String: Any])?["mounts"] as? [[String: Any]] ?? []
    }

    @Test func aSnapshotOfTheOlderLayoutBindsTheHostsJarReadOnlyAndItsOwnControlDirectory() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let jar = "\(root)/kiln-crac-agent.jar"
        try Data("jar".utf8).write(to: URL(fileURLWithPath: jar))
        let spec = SandboxSpec(
            command: ["java", "-version"], environment: ["JAVA_TOOL_OPTIONS": "-Xmx64m"], workingDirectory: "/", appDirectory: nil, port: 8080,
            agent: CRaCAgent(jarPath: jar))
        let environment = spec.processEnvironment["JAVA_TOOL_OPTIONS"] ?? ""
        #expect(environment.hasPrefix("-Xmx64m -javaagent:/run/kiln/agent/kiln-crac-agent.jar -Dkiln.agent.dir=/run/kiln/control "), "\(environment)")

        for copy in ["one", "two"] {
            let mounts = try Self.bundleMounts(spec, root: root, copy: copy, agentDirectory: "\(root)/\(copy)/agent")
            let jarMount = mounts.first { $0["destination"] as? String == "/run/kiln/agent/kiln-crac-agent.jar" }
            let control = mounts.first { $0["destination"] as? String == "/run/kiln/control" }
            #expect(jarMount?["source"] as? String == jar)
            #expect((jarMount?["options"] as? [String])?.contains("ro") == true)
            #expect(control?["source"] as? String == "\(root)/\(copy)/agent", "each copy binds its own directory")
            #expect((control?["options"] as? [String])?.contains("ro") == false)
            #expect(FileManager.default.fileExists(atPath: "\(root)/\(copy)/agent"))
            #expect(FileManager.default.fileExists(atPath: "\(root)/\(copy)/bundle/rootfs/run/kiln/control"), "the mount point in the generated root")
        }
    }

    @Test func eachCopyMountsOneDirectoryWithItsOwnCopyOfTheSnapshotsJarAndItsControlDirectory() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // The jar as the snapshot stores it among its images.
        try FileManager.default.createDirectory(atPath: "\(root)/images", withIntermediateDirectories: true)
        try Data("the snapshot's jar".utf8).write(to: URL(fileURLWithPath: "\(root)/images/kiln-crac-agent.jar"))
        let baked = CRaCAgent(jarPath: "/where/kiln/was/at/the/bake.jar", jarInSnapshot: "kiln-crac-agent.jar")
        let agent = baked.fromSnapshot(images: "\(root)/images")
        #expect(agent.jarPath == "\(root)/images/kiln-crac-agent.jar")
        #expect(CRaCAgent(jarPath: "/host.jar").fromSnapshot(images: "/x") == CRaCAgent(jarPath: "/host.jar"), "the older layout keeps the host's")
        let spec = SandboxSpec(command: ["java"], workingDirectory: "/", appDirectory: nil, port: 8080, agent: agent)
        #expect(
            spec.processEnvironment["JAVA_TOOL_OPTIONS"]?.hasPrefix("-javaagent:/run/kiln/kiln-crac-agent.jar -Dkiln.agent.dir=/run/kiln/control ")
                == true)
        for copy in ["one", "two"] {
            let mounts = try Self.bundleMounts(spec, root: root, copy: copy, agentDirectory: "\(root)/\(copy)/agent/control").filter {
                ($0["destination"] as? String)?.hasPrefix("/run/kiln") == true
            }
            #expect(mounts.count == 1, "one mount: each bind mount costs runc restore time")
            #expect(mounts.first?["destination"] as? String == "/run/kiln")
            #expect(mounts.first?["source"] as? String == "\(root)/\(copy)/agent", "each copy mounts its own directory")
            let jar = "\(root)/\(copy)/agent/kiln-crac-agent.jar"
            #expect(FileManager.default.contents(atPath: jar) == Data("the snapshot's jar".utf8))
            let attributes = try FileManager.default.attributesOfItem(atPath: jar)
            #expect((attributes[.posixPermissions] as? Int) == 0o444, "the service cannot change its copy of the jar")
            #expect(FileManager.default.fileExists(atPath: "\(root)/\(copy)/agent/control"))
            #expect(FileManager.default.fileExists(atPath: "\(root)/\(copy)/bundle/rootfs/run/kiln"), "the mount point in the generated root")
        }
    }

    @Test func aSpecWithoutTheAgentHasNeitherMountNorOption() throws {
        let spec = SandboxSpec(command: ["java"], workingDirectory: "/", appDirectory: nil, port: 8080)
        #expect(spec.processEnvironment["JAVA_TOOL_OPTIONS"]?.contains("javaagent") == false)
        #expect(
            try SandboxBundle.agentBinds(
                spec, instance: SandboxContainer(id: "x", bundlePath: "/b", networkNamespacePath: "", cgroupPath: ""), root: "/r"
            ).isEmpty)
    }

    @Test func aMissingJarIsNamedWithTheFix() throws {
        let spec = SandboxSpec(
            command: ["java"], workingDirectory: "/", appDirectory: nil, port: 8080, agent: CRaCAgent(jarPath: "/nonexistent/kiln-crac-agent.jar"))
        let instance = SandboxContainer(
            id: "x", bundlePath: "/nonexistent/b", networkNamespacePath: "", cgroupPath: "", agentDirectory: "/nonexistent/a")
        do {
            _ = try SandboxBundle.agentBinds(spec, instance: instance, root: "/nonexistent/r")
            Issue.record("a missing jar was bound")
        } catch let error as KilnError {
            #expect(error.code == .toolMissing)
            #expect(error.message.contains("/nonexistent/kiln-crac-agent.jar"))
            #expect(error.hint?.contains("make samples") == true)
        }
        do {
            _ = try CRaCAgent.locate(environment: ["KILN_AGENT_JAR": "/nonexistent/x.jar"])
            Issue.record("located a jar that does not exist")
        } catch let error as KilnError {
            #expect(error.code == .toolMissing)
            #expect(error.hint?.contains("agent/build.sh") == true)
        }
    }
}
