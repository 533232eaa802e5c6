import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Whether Debian's podman is installed (scripts/setup.sh installs it).
let podmanAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/podman")

extension Integration {
    /// `kiln export` and `kiln import` against a real peer: Debian's Podman 4.3 (runc, CRIU
    /// 4.2.1), with a private --root/--runroot and cgroupfs, restores a kiln snapshot and
    /// answers; a Podman checkpoint archive becomes a kiln snapshot that `kiln run` restores.
    @Suite("podman interop", .serialized, .enabled(if: podmanAvailable, "needs podman (make setup installs it)"))
    struct PodmanInteropTests {
        @Test func podmanRestoresAKilnExport() async throws {
            try await withPodman { host, podman in
                let manifest = try await host.kiln.bake(
                    BakeRequest(
                        name: "hello", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"),
                        warmup: [WarmupStep(count: 20, path: "/greet")], agent: false))
                let archive = "\(host.scratch)/hello.tar.zst"
                let export = try runKiln(["export", "hello", "-o", archive, "--json"], environment: host.environment)
                #expect(export.status == .exited(0), "\(export.stderr)")
                let report = try JSONDecoder().decode(ExportReport.self, from: Data(export.stdout.utf8))
                var info = stat()
                #expect(stat(archive, &info) == 0 && info.st_mode & 0o777 == 0o600, "the archive holds process memory: 0600")
                let listing = try await Subprocess.run("tar", ["--zstd", "-tvf", archive])
                for member in ["config.dump", "spec.dump", "rootfs-diff.tar", "checkpoint/inventory.img", "checkpoint/pages-1.img"] {
                    #expect(listing.stdout.contains(member), "\(member) missing from \(listing.stdout)")
                }
                #expect(!listing.stdout.split(separator: "\n").contains { $0.hasPrefix("-") && !$0.hasPrefix("-rw-------") }, "every member 0600")
                // Exporting again without --replace is refused, the archive untouched.
                let again = try runKiln(["export", "hello", "-o", archive], environment: host.environment)
                #expect(again.status == .exited(2) && again.stderr.contains("--replace"), "\(again.stderr)")

                try podman.check(["load", "-i", report.baseImage])
                let start = ContinuousClock.now
                try podman.check(["container", "restore", "--import", archive, "--name", "kiln-export"])
                let pid = try podman.pid(of: "kiln-export")
                let reply = try await waitForOK(ServiceEndpoint(networkNamespacePath: "/proc/\(pid)/ns/net", port: 8080), path: "/greet")
                let podmanMs = start.duration(to: .now).milliseconds
                #expect(reply.status == 200)
                #expect(reply.bodyText.contains("hello-jdk"), "\(reply.bodyText)")
                try podman.check(["rm", "-f", "-t", "0", "kiln-export"])

                // The same snapshot restored by kiln, for the comparison.
                let record = try await host.kiln.restoreOne(manifest)
                try await host.kiln.stop(record)
                print(
                    "kiln export: \(Int(report.milliseconds)) ms, \(report.archiveBytes) bytes; podman restore --import to first 200: \(Int(podmanMs)) ms; kiln restore to first 200: \(Int(record.firstResponseMs)) ms"
                )
            }
        }

        @Test func kilnRestoresAPodmanCheckpoint() async throws {
            try await withPodman { host, podman in
                let image = try podman.importHostRoot()
                try podman.check([
                    "run", "-d", "--name", "source", "--memory", "1g",
                    // This VM's root lacks CAP_SYS_RESOURCE: keep the limits under the host's hard ones.
                    "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=16384:16384",
                    "-e", "PORT=8080", "-v", "/usr:/usr:ro", "-v", "\(packageRoot):\(packageRoot):ro", image, helloJdk,
                ])
                let pid = try podman.pid(of: "source")
                _ = try await waitForOK(ServiceEndpoint(networkNamespacePath: "/proc/\(pid)/ns/net", port: 8080), path: "/health")
                let archive = "\(host.scratch)/podman.tar.zst"
                try podman.check(["container", "checkpoint", "--export", archive, "source"])
                try podman.check(["rm", "-f", "-t", "0", "source"])

                // Without the port and readiness path Podman's archive lacks: refused, saying which.
                let bare = try runKiln(["import", archive, "--name", "frompodman"], environment: host.environment)
                #expect(bare.status == .exited(2) && bare.stderr.contains("--port"), "\(bare.stderr)")

                let imported = try runKiln(
                    ["import", archive, "--name", "frompodman", "--port", "8080", "--ready", "/health", "--json"], environment: host.environment)
                #expect(imported.status == .exited(0), "\(imported.stderr)")
                let report = try isoDecoder.decode(ImportReport.self, from: Data(imported.stdout.utf8))
                #expect(report.source == "podman")
                #expect(report.hostPaths.contains(packageRoot), "the import names the host paths copies see: \(report.hostPaths)")

                let (manifest, _) = try host.kiln.loadVerified("frompodman")
                #expect(manifest.files.contains { $0.path == "pages-1.img" })
                let records = try await host.kiln.restore(manifest, count: 2)
                for record in records {
                    let reply = try await host.kiln.request(record, path: "/greet")
                    #expect(reply.status == 200, "\(reply.bodyText)")
                    let id = try await host.kiln.request(record, path: "/id")
                    #expect(id.bodyText.contains(record.id), "each copy has its own hostname: \(id.bodyText)")
                }
                for record in records { try await host.kiln.stop(record) }
                print("kiln import: \(Int(report.milliseconds)) ms; kiln restores to first 200: \(records.map { Int($0.firstResponseMs) }) ms")
            }
        }
    }
}

let isoDecoder: JSONDecoder = {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .iso8601
    return decoder
}()

extension Integration {
    @Suite("export and import", .serialized)
    struct ExportImportTests {
        /// An encrypted, compressed snapshot exports only with its key, into plain images (what
        /// Podman's CRIU reads); kiln imports its own archive back with the same sandbox, and
        /// restores it.
        @Test func encryptedSnapshotExportsWithItsKeyAndComesBack() async throws {
            try await withTestHost { host in
                let keyPath = "\(host.scratch)/snapshot.key"
                let key = try SnapshotKey.generate(at: keyPath)
                let manifest = try await host.kiln.bake(
                    BakeRequest(
                        name: "sealed", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"),
                        warmup: [WarmupStep(count: 5, path: "/greet")], compress: true, encryptionKey: key, agent: false))
                let archive = "\(host.scratch)/sealed.tar.zst"
                let refused = try runKiln(["export", "sealed", "-o", archive], environment: host.environment)
                #expect(refused.status == .exited(2) && refused.stderr.contains(key.id), "\(refused.stderr)")
                #expect(!FileManager.default.fileExists(atPath: archive))

                let exported = try runKiln(["export", "sealed", "-o", archive, "--key", keyPath], environment: host.environment)
                #expect(exported.status == .exited(0), "\(exported.stderr)")
                let listing = try await Subprocess.run("tar", ["--zstd", "-tf", archive])
                #expect(listing.stdout.contains("checkpoint/pages-1.img\n"), "plain images: \(listing.stdout)")
                #expect(!listing.stdout.contains(".enc") && !listing.stdout.contains(".zst"))

                let imported = try runKiln(["import", archive, "--name", "unsealed", "--json"], environment: host.environment)
                #expect(imported.status == .exited(0), "\(imported.stderr)")
                let report = try isoDecoder.decode(ImportReport.self, from: Data(imported.stdout.utf8))
                #expect(report.source == "kiln")
                #expect(report.manifest.sandbox == manifest.sandbox)
                #expect(report.manifest.encryption == nil && report.manifest.compression == nil)
                let (restored, _) = try host.kiln.loadVerified("unsealed")
                let record = try await host.kiln.restoreOne(restored)
                let reply = try await host.kiln.request(record, path: "/greet")
                #expect(reply.status == 200)
                try await host.kiln.stop(record)
                try await expectNoLeftovers(host)
            }
        }
    }
}

/// GETs `path` until it answers 200 (30 s at most).
func waitForOK(_ endpoint: ServiceEndpoint, path: String) async throws -> HTTPReply {
    InstanceHTTPClient.prepare()
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
        if let reply = try? await InstanceHTTPClient.send(.GET, path, to: endpoint), reply.status == 200 { return reply }
        guard ContinuousClock.now < deadline else {
            throw KilnError(.serviceNeverReady, "GET \(path) in \(endpoint.networkNamespacePath) never answered 200")
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// A private Podman (its own storage and run-time directories, cgroupfs, runc, CRIU 4.2.1 first
/// on PATH) and everything needed to leave the host as it was.
/// A test host with a private Podman beside it; both are checked for leftovers at the end, and
/// Podman's are removed whether the body passes or throws.
func withPodman(_ body: (TestHost, PodmanHost) async throws -> Void) async throws {
    try await withTestHost { host in
        let podman = try PodmanHost(scratch: host.scratch)
        do {
            try await body(host, podman)
        } catch {
            podman.cleanUp()
            throw error
        }
        podman.cleanUp()
        #expect(podman.leftovers() == [])
        try await expectNoLeftovers(host)
    }
}

struct PodmanHost {
    let root: String
    let runRoot: String
    let environment: [String: String]
    /// The host's network namespaces and links before, to tell what Podman added.
    let netnsBefore: Set<String>
    let bridgeExisted: Bool
    /// Podman's cgroupfs parent (and its conmon cgroup), removed at the end if Podman made it now.
    let cgroupParentExisted: Bool

    init(scratch: String) throws {
        root = "\(scratch)/podman/root"
        runRoot = "/run/kiln-test-podman-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var environment = ProcessInfo.processInfo.environment
        let criu = try CRIU.locate().path
        environment["PATH"] = "\((criu as NSString).deletingLastPathComponent):/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.environment = environment
        netnsBefore = Set((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [])
        bridgeExisted = FileManager.default.fileExists(atPath: "/sys/class/net/cni-podman0")
        cgroupParentExisted = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/libpod_parent")
    }

    func arguments(_ arguments: [String]) -> [String] {
        ["--root", root, "--runroot", runRoot, "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", PodmanArchive.runtimeName]
            + arguments
    }

    @discardableResult
    func run(_ arguments: [String]) throws -> CommandOutput {
        try Subprocess.run("/usr/bin/podman", self.arguments(arguments), environment: environment)
    }

    /// Runs podman, failing with its output unless it succeeds.
    @discardableResult
    func check(_ arguments: [String]) throws -> CommandOutput {
        let output = try run(arguments)
        guard output.status.isSuccess else {
            throw KilnError(
                .runtimeFailed, "podman \(arguments.joined(separator: " ")) \(output.status)",
                details: (output.stderr + output.stdout).split(separator: "\n").suffix(12).map(String.init))
        }
        return output
    }

    func pid(of container: String) throws -> Int32 {
        let output = try check(["inspect", "--format", "{{.State.Pid}}", container])
        guard let pid = Int32(output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else {
            throw KilnError(.runtimeFailed, "podman did not report the pid of \(container): \(output.stdout)")
        }
        return pid
    }

    /// An image like kiln's default root (and the benchmark's): /bin, /lib... as symlinks into
    /// /usr, which the container gets from the host, and the /etc entries a JVM reads.
    func importHostRoot() throws -> String {
        let rootfs = "\((root as NSString).deletingLastPathComponent)/rootfs"
        let fileManager = FileManager.default
        for directory in ["usr", "etc", "tmp", "proc", "sys", "dev", "run", "var/tmp"] {
            try fileManager.createDirectory(atPath: "\(rootfs)/\(directory)", withIntermediateDirectories: true)
        }
        chmod("\(rootfs)/tmp", 0o1777)
        for name in ["bin", "sbin", "lib", "lib64"] {
            if let target = try? fileManager.destinationOfSymbolicLink(atPath: "/\(name)") {
                try fileManager.createSymbolicLink(atPath: "\(rootfs)/\(name)", withDestinationPath: target)
            }
        }
        for entry in try fileManager.contentsOfDirectory(atPath: "/etc") where entry == "alternatives" || entry.hasPrefix("java-") {
            _ = try Subprocess.run("/bin/cp", ["-a", "/etc/\(entry)", "\(rootfs)/etc/"])
        }
        try "root:x:0:0:root:/tmp:/bin/sh\n".write(toFile: "\(rootfs)/etc/passwd", atomically: false, encoding: .utf8)
        try "root:x:0:\n".write(toFile: "\(rootfs)/etc/group", atomically: false, encoding: .utf8)
        let tar = "\(rootfs).tar"
        let made = try Subprocess.run("/bin/tar", ["-C", rootfs, "-cf", tar, "."])
        guard made.status.isSuccess else { throw KilnError(.systemCall, "tar: \(made.stderr)") }
        let image = "localhost/kiln-test-root:latest"
        try check(["import", tar, image])
        return image
    }

    /// Removes every container and image, then the storage (unmounting what Podman left
    /// mounted), and the bridge and its iptables rules if this test made them.
    func cleanUp() {
        _ = try? run(["rm", "-af", "-t", "0"])
        _ = try? run(["rmi", "-af"])
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        let targets = mounts.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let target = String(fields[4])
            return target.hasPrefix(root) || target.hasPrefix(runRoot) ? target : nil
        }
        for target in targets.sorted(by: { $0.count > $1.count }) { umount2(target, Int32(MNT_DETACH)) }
        try? FileManager.default.removeItem(atPath: (root as NSString).deletingLastPathComponent)
        try? FileManager.default.removeItem(atPath: runRoot)
        if !cgroupParentExisted {
            for controller in cgroupControllers {
                rmdir("/sys/fs/cgroup/\(controller)/libpod_parent/conmon")
                rmdir("/sys/fs/cgroup/\(controller)/libpod_parent")
            }
        }
        // The bridge goes only if it was not there before and no one else's container uses it.
        let ports = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net/cni-podman0/brif")) ?? []
        if !bridgeExisted, FileManager.default.fileExists(atPath: "/sys/class/net/cni-podman0"), ports.isEmpty {
            _ = try? Subprocess.run("/usr/sbin/ip", ["link", "del", "cni-podman0"])
            Self.removeCNIFirewallRules()
        }
    }

    /// The chains and rules Podman's CNI plugins add on first use (CNI-FORWARD, CNI-HOSTPORT-*,
    /// ...) and the jumps to them: only what carries CNI's names is touched.
    static func removeCNIFirewallRules() {
        for table in ["filter", "nat"] {
            guard let listing = try? Subprocess.run("/usr/sbin/iptables", ["-t", table, "-S"]), listing.status.isSuccess else { continue }
            var chains: [String] = []
            for line in listing.stdout.split(separator: "\n") {
                let fields = line.split(separator: " ").map(String.init)
                guard fields.count > 1 else { continue }
                if fields[0] == "-N", fields[1].hasPrefix("CNI-") {
                    chains.append(fields[1])
                } else if fields[0] == "-A", !fields[1].hasPrefix("CNI-"), line.contains("CNI-") {
                    // Comments are quoted in the listing: delete by the rule's number instead.
                    let rules =
                        (try? Subprocess.run("/usr/sbin/iptables", ["-t", table, "-S", fields[1]]))?.stdout.split(separator: "\n").dropFirst() ?? []
                    if let index = rules.firstIndex(where: { $0 == line }) {
                        _ = try? Subprocess.run("/usr/sbin/iptables", ["-t", table, "-D", fields[1], String(index - rules.startIndex + 1)])
                    }
                }
            }
            for chain in chains { _ = try? Subprocess.run("/usr/sbin/iptables", ["-t", table, "-F", chain]) }
            for chain in chains { _ = try? Subprocess.run("/usr/sbin/iptables", ["-t", table, "-X", chain]) }
        }
    }

    /// What Podman left: processes naming its directories, mounts, network namespaces.
    func leftovers() -> [String] {
        var found: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), ProcessInspector.isAlive(pid) else { continue }
            let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            if cmdline.contains(runRoot) || cmdline.contains(root) {
                found.append("process \(pid): \(cmdline.replacingOccurrences(of: "\0", with: " "))")
            }
        }
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        for line in mounts.split(separator: "\n") where line.contains(root) || line.contains(runRoot) { found.append("mount: \(line)") }
        let netns = Set((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [])
        for name in netns.subtracting(netnsBefore) where name.hasPrefix("netns-") { found.append("network namespace /run/netns/\(name)") }
        if FileManager.default.fileExists(atPath: root) || FileManager.default.fileExists(atPath: runRoot) {
            found.append("podman storage \(root) / \(runRoot)")
        }
        return found
    }
}
