import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Integration tests drive real runc and CRIU; both need root.
let isRoot = geteuid() == 0

/// The package root, found from this file's path.
let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The `kiln` executable built beside the test runner.
let kilnBinary: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    var directory = (exe as NSString).deletingLastPathComponent
    if directory.hasSuffix(".xctest") { directory = (directory as NSString).deletingLastPathComponent }
    return "\(directory)/kiln"
}()

let helloJdk = "\(packageRoot)/examples/hello-jdk/bin/hello-jdk"
let helloSpring = "\(packageRoot)/examples/hello-spring/bin/hello-spring"

/// The cgroup v1 hierarchies runc creates a container's cgroups in.
let cgroupControllers = [
    "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc",
    "systemd", "unified",
]

/// Every integration suite nests in this one, so they run one at a time: they share two cores,
/// and a timing-sensitive readiness wait should not compete with another test's JVM start.
@Suite("integration", .serialized, .enabled(if: isRoot, "needs root: runc and CRIU create namespaces, cgroups and mounts"))
struct Integration {}

/// A private store and state directory for one test, removed (and checked for leaks) at the end.
struct TestHost {
    let paths: KilnPaths
    let kiln: Kiln
    let scratch: String

    init(_ name: String = #function) throws {
        let base = "/tmp/kiln-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        // A cgroup parent of its own, so a leak check sees only this host's containers.
        paths = KilnPaths(store: "\(base)/store", state: "\(base)/state", cgroupParent: "/kiln-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        scratch = base
        var logger = Logger(label: "kiln-test")
        logger.logLevel = .warning
        kiln = try Kiln.open(paths: paths, logger: logger, toDo: "test")
    }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["KILN_STORE"] = paths.store
        env["KILN_STATE"] = paths.state
        env["KILN_CGROUP_PARENT"] = paths.cgroupParent
        return env
    }

    /// A sandbox running one of the samples from the package root.
    func sandbox(_ command: [String], port: Int = 8080, environment: [String: String] = [:], app: String = packageRoot) -> SandboxSpec {
        SandboxSpec(command: command, environment: environment, workingDirectory: app, appDirectory: app, port: port, memoryLimitBytes: 512 << 20)
    }

    /// Everything kiln could leave behind, as human-readable strings; empty means clean. With
    /// `network` (else kiln's own network, if this host's kiln used it), its veths, addresses,
    /// firewall rules and cached CNI results of sandboxes no instance record names count too.
    func leftovers(network: CNINetwork? = nil) async throws -> [String] {
        var found: [String] = []
        let own = FileManager.default.fileExists(atPath: "\(paths.state)/cni") ? try? CNINetwork.kiln(stateDirectory: paths.state) : nil
        if let network = network ?? own {
            found += try await network.leftovers(liveIDs: Set(kiln.instanceRecords().compactMap { $0.network?.id }))
        }
        for container in try await kiln.runtime.list() { found.append("container \(container.id) (\(container.status))") }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: paths.networkNamespaces)) ?? [] {
            found.append("network namespace pin \(entry)")
        }
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        for line in mounts.split(separator: "\n") where line.contains(scratch) { found.append("mount: \(line)") }
        for controller in cgroupControllers {
            let parent = "/sys/fs/cgroup/\(controller)\(paths.cgroupParent)"
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] {
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: "\(parent)/\(entry)", isDirectory: &isDirectory), isDirectory.boolValue {
                    found.append("cgroup \(controller)\(paths.cgroupParent)/\(entry)")
                }
            }
        }
        // Image roots (`bake --image`) outlive their snapshot only by mistake: tests remove theirs.
        for directory in [paths.instances, paths.bakes, "\(paths.store)/staging", "\(paths.store)/rootfs"] {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                found.append("directory \(directory)/\(entry)")
            }
        }
        // Live processes still in a kiln cgroup or still running our shim (zombies hold nothing
        // and are reaped by the host's init; this VM's pid 1 never reaps, so they are skipped).
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), ProcessInspector.isAlive(pid) else { continue }
            let cgroup = (try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)) ?? ""
            if cgroup.contains(":\(paths.cgroupParent)/") { found.append("process \(pid) in \(cgroup.split(separator: "\n").first ?? "")") }
            let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            if cmdline.contains(paths.state) { found.append("process \(pid): \(cmdline.replacingOccurrences(of: "\0", with: " "))") }
        }
        return found
    }

    /// Removes the scratch directories; call at the end of a test.
    func cleanUp() async {
        for record in kiln.instanceRecords() { try? await kiln.stop(record) }
        try? FileManager.default.removeItem(atPath: scratch)
        try? FileManager.default.removeItem(atPath: paths.dumpCache)
        // On tmpfs, named after the state directory: nothing else removes it.
        try? FileManager.default.removeItem(atPath: paths.verificationRecords)
        for controller in cgroupControllers { rmdir("/sys/fs/cgroup/\(controller)\(paths.cgroupParent)") }
    }
}

/// Runs the kiln CLI with the test host's private directories.
func runKiln(_ arguments: [String], environment: [String: String], prefix: [String] = []) throws -> CommandOutput {
    if prefix.isEmpty { return try Subprocess.run(kilnBinary, arguments, environment: environment) }
    return try Subprocess.run(prefix[0], Array(prefix.dropFirst()) + [kilnBinary] + arguments, environment: environment)
}

/// Runs `body` with a fresh test host and always cleans the host up afterwards.
func withTestHost(_ body: (TestHost) async throws -> Void) async throws {
    let host = try TestHost()
    do {
        try await body(host)
    } catch {
        await host.cleanUp()
        throw error
    }
    await host.cleanUp()
}

/// Records an issue for each thing kiln left behind.
func expectNoLeftovers(_ host: TestHost, network: CNINetwork? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let leftovers = try await host.leftovers(network: network)
    #expect(leftovers == [], "kiln left these behind", sourceLocation: sourceLocation)
}

/// Runs `body` and expects it to fail with a ``KilnError`` of `code`; returns that error (nil,
/// with an issue recorded, when it succeeded or failed otherwise).
func expectKilnError(
    _ code: KilnError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> KilnError? {
    do {
        try await body()
        Issue.record("expected a \(code.rawValue) error, got success", sourceLocation: sourceLocation)
        return nil
    } catch let error as KilnError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a KilnError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
