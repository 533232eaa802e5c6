import Foundation
import Testing

@testable import KilnOCI
@testable import KilnSystem

/// How a sandbox carries kiln's CRaC agent: the jar read-only, its own control directory
/// read-write, both named in JAVA_TOOL_OPTIONS; a missing jar named with its fix.
@Suite("the CRaC agent in a sandbox's bundle")
struct CRaCAgentSandboxTests {
    static func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-agent-bundle-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func theBundleBindsTheJarReadOnlyAndItsOwnControlDirectoryReadWrite() throws {
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
            let instance = SandboxContainer(
                id: "svc-\(copy)", bundlePath: "\(root)/\(copy)/bundle", networkNamespacePath: "/run/netns/x", cgroupPath: "/kiln/x",
                agentDirectory: "\(root)/\(copy)/agent")
            try SandboxBundle.create(spec: spec, instance: instance)
            let config =
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(root)/\(copy)/bundle/config.json"))) as? [String: Any]
            let mounts = config?["mounts"] as? [[String: Any]] ?? []
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
