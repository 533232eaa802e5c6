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

/// Debian's docker.io (`make setup` installs it). Not /usr/local/bin/docker, which may be another
/// client entirely.
let debianDocker = "/usr/bin/docker"
let debianDockerd = "/usr/sbin/dockerd"
let hasDebianDocker = FileManager.default.isExecutableFile(atPath: debianDocker) && FileManager.default.isExecutableFile(atPath: debianDockerd)

/// Whether this process's capability bounding set holds every capability up to
/// CAP_CHECKPOINT_RESTORE (40). `docker run --privileged` asks runc for all of them, and runc
/// fails ("unable to apply caps: operation not permitted") where the host's root lacks one,
/// whatever the image: on the Firecracker VMs here root has no CAP_SYS_RESOURCE.
let boundingSetIsFull: Bool = {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapBnd:") }),
        let mask = UInt64(line.dropFirst("CapBnd:".count).trimmingCharacters(in: .whitespaces), radix: 16)
    else { return false }
    let wanted: UInt64 = (1 << 41) - 1
    return mask & wanted == wanted
}()

/// The flags README's "In Docker" section documents instead of `--privileged`.
let narrowDockerFlags = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_TIME",
    "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
]

extension Integration {
    @Suite("kiln in its Docker image", .serialized, .enabled(if: hasDebianDocker, "needs Debian's docker.io (make setup installs it)"))
    struct DockerImageTests {
        /// Builds the image with scripts/docker-image.sh against a dockerd of the test's own, then
        /// in containers: bakes the Spring sample, serves it (first request from the host through
        /// the gateway in the container), restores a copy with `kiln run` and asks it for a page;
        /// with the narrow flags, and with --privileged where this host allows it. Everything
        /// docker made is removed and checked for at the end.
        @Test(.timeLimit(.minutes(10))) func bakesAndRestoresTheSpringSampleInsideTheImage() async throws {
            // Containers of this dockerd mount cgroup2 in the initial cgroup namespace, which
            // sets the host's cgroup2 options anew (turning `make setup`'s favordynmods off): the
            // test puts back what it found, as it removes everything else docker made.
            let cgroup2Before = CgroupMount.current().filter { $0.type == "cgroup2" }
            defer { restoreCgroup2Options(cgroup2Before) }
            let docker = try await PrivateDocker.start()
            do {
                let tag = "kiln:test-\(getpid())"
                let started = ContinuousClock.now
                let build = try await Subprocess.run(
                    "/bin/bash",
                    ["\(packageRoot)/scripts/docker-image.sh", "--tag", tag, "--bin-dir", (kilnBinary as NSString).deletingLastPathComponent],
                    environment: docker.environment)
                try #require(build.status.isSuccess, "docker-image.sh failed: \(build.stderr.suffix(3000))")
                print("docker image \(tag): built in \(Int(started.duration(to: .now).milliseconds)) ms, \(try await docker.imageSizeMiB(tag)) MiB")

                let volume = "kiln-test-\(getpid())"
                try await docker.succeed(["volume", "create", volume])
                try await bakeAndRestore(docker, image: tag, volume: volume, variant: "narrow flags", flags: narrowDockerFlags)
                if boundingSetIsFull {
                    try await bakeAndRestore(docker, image: tag, volume: volume, variant: "--privileged", flags: ["--privileged"])
                } else {
                    print(
                        "docker --privileged: not tried; this host's root lacks capabilities in its bounding set, so runc cannot give a container all of them"
                    )
                }
            } catch {
                _ = await docker.tearDown()
                throw error
            }
            let leftovers = await docker.tearDown()
            #expect(leftovers == [], "docker left these behind")
        }

        func bakeAndRestore(_ docker: PrivateDocker, image: String, volume: String, variant: String, flags: [String]) async throws {
            // Host networking: the test's dockerd has no bridge (it must not touch the host's
            // networking); kiln gives every service its own network namespace anyway.
            let common = ["--network", "host", "-v", "\(volume):/var/lib/kiln"] + flags
            let bake = try await docker.succeed(
                ["run", "--rm"] + common + [
                    // The image carries no CNI plugins (README, In Docker): its sandboxes are loopback-only.
                    image, "bake", "hello", "--replace", "--json", "--network", "none", "--port", "8080", "--ready", "/health", "--warmup",
                    "50:/greet",
                    "--", "/opt/kiln/examples/hello-spring/bin/hello-spring",
                ])
            let manifest = try #require(jsonObject(bake.stdout))
            print("docker (\(variant)): kiln bake: \(manifest["timings"].map { "\($0)" } ?? bake.stdout.suffix(400).description)")

            let name = "kiln-test-\(getpid())-serve"
            let containerID = try await docker.succeed(
                ["run", "-d", "--name", name] + common + [image, "serve", "--json", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
            ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            var listen: String?
            let deadline = ContinuousClock.now + .seconds(30)
            while listen == nil, ContinuousClock.now < deadline {
                let logs = try await docker.run(["logs", name])
                listen = jsonObject(logs.stdout)?["listen"] as? String
                if listen == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let serveLog = listen == nil ? ((try? await docker.run(["logs", name]))?.stderr ?? "") : ""
            let address = try #require(listen, "kiln serve did not report its address: \(serveLog.suffix(2000))")

            // From the host, through the gateway in the container: a restore from zero.
            let first = try await Subprocess.run(
                "curl", ["-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "--max-time", "60", "http://\(address)/hello/greet"])
            let parts = first.stdout.split(separator: " ")
            #expect(parts.first == "200", "GET /hello/greet through the gateway: \(first.stdout) \(first.stderr)")
            print(
                "docker (\(variant)): first request through kiln serve at zero instances: HTTP \(parts.first ?? "?") in \(Double(parts.last ?? "") .map { Int($0 * 1000) } ?? -1) ms"
            )

            // kiln run beside the gateway, and a request to that copy.
            let run = try await docker.succeed(["exec", name, "kiln", "run", "hello", "--json"])
            let instance = try #require((jsonObject(run.stdout)?["instances"] as? [[String: Any]])?.first)
            let id = try #require(instance["id"] as? String)
            print(
                "docker (\(variant)): kiln run: restore \(Int(instance["restoreMs"] as? Double ?? -1)) ms, first response \(Int(instance["firstResponseMs"] as? Double ?? -1)) ms"
            )
            let reply = try await docker.succeed(["exec", name, "kiln", "request", id, "/greet", "--json"])
            #expect(jsonObject(reply.stdout)?["status"] as? Int == 200, "kiln request: \(reply.stdout)")
            try await docker.succeed(["exec", name, "kiln", "stop", id])

            // docker stop: SIGTERM reaches kiln serve through tini; it stops its instances.
            try await docker.succeed(["stop", "-t", "60", name])
            let logs = try await docker.run(["logs", name])
            #expect(logs.stderr.contains("every instance it started is gone"), "kiln serve's log ends: \(logs.stderr.suffix(1500))")
            try await docker.succeed(["rm", name])
            // kiln's sandboxes had their cgroups inside the container's: all gone with it.
            let cgroups = cgroupControllers.map { "/sys/fs/cgroup/\($0)/docker/\(containerID)" }.filter { FileManager.default.fileExists(atPath: $0) }
            #expect(cgroups == [], "cgroups left by the container")
        }
    }
}

private func jsonObject(_ text: String) -> [String: Any]? {
    guard let start = text.firstIndex(of: "{"), let end = text.lastIndex(of: "}") else { return nil }
    return (try? JSONSerialization.jsonObject(with: Data(text[start...end].utf8))) as? [String: Any]
}

/// A dockerd of the test's own: private data root, exec root, pidfile and socket; no bridge, no
/// iptables rules, no IP masquerading, so it never touches the host's networking. It starts its
/// own containerd (under the exec root), which stops with it.
struct PrivateDocker: Sendable {
    let base: String
    let execRoot: String
    let pid: pid_t
    /// The `docker` cgroup parents dockerd creates (one per v1 controller) that did not exist
    /// before it started, removed again at the end.
    let cgroupParents: [String]
    var socket: String { "\(execRoot)/docker.sock" }
    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["DOCKER_HOST"] = "unix://\(socket)"
        env["DOCKER"] = debianDocker
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return env
    }

    static func start() async throws -> PrivateDocker {
        let base = "/tmp/kiln-docker-test-\(getpid())"
        // Short: containerd's socket paths under it must fit a sockaddr_un.
        let execRoot = "/run/kdt-\(getpid())"
        for directory in ["\(base)/data", execRoot] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let log = open("\(base)/dockerd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(log) }
        let arguments = [
            "--data-root", "\(base)/data", "--exec-root", execRoot, "--pidfile", "\(execRoot)/dockerd.pid",
            "-H", "unix://\(execRoot)/docker.sock", "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            // dockerd starts a containerd of its own under the exec root, unless a system one
            // answers at /run/containerd: then these keep its containers apart from others'.
            "--containerd-namespace", "kiln-test-\(getpid())", "--containerd-plugins-namespace", "kiln-test-\(getpid())-plugins",
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        let parents = cgroupControllers.map { "/sys/fs/cgroup/\($0)/docker" }.filter { !FileManager.default.fileExists(atPath: $0) }
        let pid = try Subprocess.spawn(
            debianDockerd, arguments, environment: environment, stdout: .descriptor(log), stderr: .descriptor(log), newSession: true)
        let docker = PrivateDocker(base: base, execRoot: execRoot, pid: pid, cgroupParents: parents)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if (try? await docker.run(["info", "--format", "{{.ServerVersion}}"]))?.status.isSuccess == true { return docker }
            guard ProcessInspector.isAlive(pid) else { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        _ = await docker.tearDown()
        let tail = ((try? String(contentsOfFile: "\(base)/dockerd.log", encoding: .utf8)) ?? "").suffix(2000)
        throw KilnError(.runtimeFailed, "dockerd did not answer within 60 s", details: [String(tail)])
    }

    func run(_ arguments: [String]) async throws -> CommandOutput {
        try await Subprocess.run(debianDocker, ["-H", "unix://\(socket)"] + arguments, environment: environment)
    }

    @discardableResult
    func succeed(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> CommandOutput {
        let output = try await run(arguments)
        try #require(
            output.status.isSuccess,
            "docker \(arguments.prefix(3).joined(separator: " ")) \(output.status): \(output.stderr.suffix(3000)) \(output.stdout.suffix(1500))",
            sourceLocation: sourceLocation)
        return output
    }

    func imageSizeMiB(_ tag: String) async throws -> Int {
        let size = try await succeed(["image", "inspect", "--format", "{{.Size}}", tag]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return (Int(size) ?? 0) >> 20
    }

    /// Removes every container, image and volume, stops dockerd (and its containerd), unmounts
    /// and deletes its directories; returns what is still there (empty: nothing left).
    func tearDown() async -> [String] {
        if ProcessInspector.isAlive(pid) {
            let containers = (try? await run(["ps", "-aq"]))?.stdout.split(separator: "\n").map(String.init) ?? []
            if !containers.isEmpty { _ = try? await run(["rm", "-f", "-v"] + containers) }
            _ = try? await run(["system", "prune", "-af", "--volumes"])
            kill(pid, SIGTERM)
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline, waitpid(pid, nil, WNOHANG) == 0 { try? await Task.sleep(for: .milliseconds(100)) }
        if waitpid(pid, nil, WNOHANG) == 0 {
            kill(pid, SIGKILL)
            _ = waitpid(pid, nil, 0)
        }
        var left: [String] = []
        for process in processesUsing() {
            left.append("process \(process.pid): \(process.commandLine)")
            kill(process.pid, SIGKILL)
        }
        for point in mountPoints().sorted(by: { $0.count > $1.count }) { umount2(point, Int32(MNT_DETACH)) }
        left += mountPoints().map { "mount \($0)" }
        try? FileManager.default.removeItem(atPath: base)
        try? FileManager.default.removeItem(atPath: execRoot)
        for path in [base, execRoot] where FileManager.default.fileExists(atPath: path) { left.append("directory \(path)") }
        if FileManager.default.fileExists(atPath: "/sys/class/net/docker0") { left.append("network link docker0") }
        for parent in cgroupParents where FileManager.default.fileExists(atPath: parent) {
            if rmdir(parent) != 0 { left.append("cgroup \(parent) (not empty)") }
        }
        return left
    }

    /// Mounts under the data or exec root (overlays, the volume, containerd's shm and netns pins).
    private func mountPoints() -> [String] {
        let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return table.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = String(fields[4])
            return point.hasPrefix(base + "/") || point.hasPrefix(execRoot + "/") ? point : nil
        }
    }

    /// Live processes whose command line names our directories (dockerd, containerd, shims).
    private func processesUsing() -> [(pid: Int32, commandLine: String)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = Int32(entry), ProcessInspector.isAlive(pid),
                let raw = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)
            else { return nil }
            let commandLine = raw.replacingOccurrences(of: "\0", with: " ")
            return commandLine.contains(base) || commandLine.contains(execRoot) ? (pid, commandLine) : nil
        }
    }
}

/// Remounts each cgroup2 mount of `before` that has lost some of its options since, adding them
/// back (util-linux's remount keeps the options a mount has).
func restoreCgroup2Options(_ before: [CgroupMount]) {
    let now = CgroupMount.current()
    for mount in before {
        guard let current = now.first(where: { $0.path == mount.path }) else { continue }
        let lost = mount.superOptions.filter { !current.superOptions.contains($0) }
        guard !lost.isEmpty else { continue }
        let result = try? Subprocess.run("/bin/mount", ["-o", (["remount"] + lost).joined(separator: ","), mount.path], stdin: .null)
        if result?.status.isSuccess != true { print("could not give \(mount.path) back its options \(lost): \(result?.stderr ?? "")") }
    }
}
