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

/// The OCI image layout of hello-jdk on a jlink'ed JVM of its own (see Fixtures/make-hello-image.sh),
/// built once per version of the script and the sample's source, and kept in /var/tmp so reruns
/// take milliseconds: no registry is reachable here, so the tests make their image.
enum HelloImage {
    static let script = "\(packageRoot)/Tests/KilnIntegrationTests/Fixtures/make-hello-image.sh"

    static func layout() throws -> String {
        let source = "\(packageRoot)/examples/hello-jdk/src/main/java/dev/kiln/samples/hello/HelloJdk.java"
        let sums = try Subprocess.run("/usr/bin/sha256sum", [script, source])
        guard sums.status.isSuccess else { throw KilnError(.systemCall, "sha256sum: \(sums.stderr)") }
        let tag = sums.stdout.split(separator: "\n").map { $0.prefix(12) }.joined(separator: "-")
        let path = "/var/tmp/kiln-test-images/hello-jdk-\(tag)"
        if !FileManager.default.fileExists(atPath: "\(path)/oci-layout") {
            try FileManager.default.createDirectory(atPath: "/var/tmp/kiln-test-images", withIntermediateDirectories: true)
            let built = try Subprocess.run("/bin/bash", [script, path])
            guard built.status.isSuccess else { throw KilnError(.systemCall, "building the test image failed: \(built.stderr)") }
        }
        return path
    }

    /// A variant of the image with its config changed (`umoci config` arguments), tagged `tag`,
    /// in a copy of the layout under `directory`: the layer is shared, only a new config is written.
    static func variant(of layout: String, in directory: String, tag: String, _ arguments: [String]) throws -> String {
        let copy = "\(directory)/layout-\(tag)"
        let copied = try Subprocess.run("/bin/cp", ["-a", layout, copy])
        guard copied.status.isSuccess else { throw KilnError(.systemCall, "cp: \(copied.stderr)") }
        let configured = try Subprocess.run("/usr/bin/umoci", ["config", "--image", "\(copy):1", "--tag", tag] + arguments)
        guard configured.status.isSuccess else { throw KilnError(.systemCall, "umoci config: \(configured.stderr)") }
        return copy
    }
}

extension Integration {
    @Suite("bake from a container image (--image)", .serialized)
    struct ImageBakeTests {
        /// What the service sees, from hello-jdk's /runtime: working directory, Java home, one variable.
        func runtime(_ host: TestHost, _ copy: InstanceRecord, env: String) async throws -> [String: Any] {
            let reply = try await host.kiln.request(copy, path: "/runtime?env=\(env)")
            #expect(reply.status == 200)
            return try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any] ?? [:]
        }

        /// The image's root, Entrypoint + Cmd, Env, WorkingDir and exposed port; restore; `kiln ls`
        /// and `kiln rm` know the image.
        @Test func bakesFromAnOCILayoutAndRestores() async throws {
            let layout = try HelloImage.layout()
            try await withTestHost { host in
                var sandbox = SandboxSpec(
                    command: [], environment: ["HELLO_EXTRA": "from-kiln"], workingDirectory: "/", appDirectory: nil, port: 0,
                    memoryLimitBytes: 512 << 20)
                sandbox.rootFilesystem = .host
                let manifest = try await host.kiln.bake(
                    BakeRequest(
                        name: "img", sandbox: sandbox, readiness: ReadinessCheck(path: "/health", timeoutSeconds: 60),
                        warmup: [WarmupStep(count: 20, path: "/greet")], image: try ImageReference(parsing: "oci:\(layout):1")))
                #expect(manifest.sandbox.port == 8080, "the image's one exposed port is the default")
                #expect(
                    manifest.sandbox.command == [
                        "/usr/lib/jvm/kiln-jre/bin/java", "-XX:-UsePerfData", "-cp", "/srv/hello/classes", "dev.kiln.samples.hello.HelloJdk",
                    ])
                #expect(manifest.sandbox.workingDirectory == "/srv/hello")
                #expect(manifest.compacted, "jcmd is found in the image's JDK")
                let image = try #require(manifest.image)
                #expect(image.reference == "oci:\(layout):1")
                #expect(image.manifestDigest.hasPrefix("sha256:") && image.configDigest.hasPrefix("sha256:"))
                guard case .directory(let root) = manifest.sandbox.rootFilesystem else {
                    Issue.record("no image root")
                    return
                }
                #expect(root.hasPrefix("\(host.paths.store)/rootfs/"))
                var info = stat()
                #expect(stat("\(host.paths.store)/rootfs", &info) == 0 && info.st_mode & 0o777 == 0o700, "the image roots are private to root")
                #expect(FileManager.default.fileExists(atPath: "\(root)/etc/kiln-test-image"))

                let (verified, _) = try host.kiln.loadVerified("img")
                let copies = try await host.kiln.restore(verified, count: 1)
                let copy = try #require(copies.first)
                #expect(try await host.kiln.request(copy, path: "/health").status == 200)
                let seen = try await runtime(host, copy, env: "HELLO_IMAGE_GREETING")
                #expect(seen["env"] as? String == "from-the-image", "the image's Env reaches the service")
                #expect(seen["cwd"] as? String == "/srv/hello", "the image's WorkingDir")
                // The JVM runs from the image's /usr: the host has no such runtime.
                #expect(seen["javaHome"] as? String == "/usr/lib/jvm/kiln-jre")
                #expect(!FileManager.default.fileExists(atPath: "/usr/lib/jvm/kiln-jre"))
                #expect(try await runtime(host, copy, env: "HELLO_EXTRA")["env"] as? String == "from-kiln", "--env is laid over the image's Env")

                let listed = try runKiln(["ls", "--json"], environment: host.environment)
                let snapshots = (try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any])?["snapshots"] as? [[String: Any]]
                let listedImage = snapshots?.first?["image"] as? [String: Any]
                #expect(listedImage?["manifestDigest"] as? String == image.manifestDigest)
                #expect(try runKiln(["ls"], environment: host.environment).stdout.contains("oci:\(layout):1@\(image.manifestDigest.prefix(19))"))

                // `kiln gc` collects a root no snapshot refers to, and keeps the one in use.
                let orphan = "\(host.paths.store)/rootfs/gone-123456-bake"
                try FileManager.default.createDirectory(atPath: orphan, withIntermediateDirectories: false)
                let report = try await host.kiln.collectGarbage()
                #expect(report.directories == [orphan])
                #expect(FileManager.default.fileExists(atPath: "\(root)/etc/kiln-test-image"))

                // The root is checked with the snapshot's files: a change refuses the restore.
                #expect(image.rootListingSHA256?.count == 64)
                let planted = "\(root)/srv/hello/planted"
                try "x".write(toFile: planted, atomically: false, encoding: .utf8)
                let tampered = #expect(throws: KilnError.self) { try host.kiln.loadVerified("img") }
                #expect(
                    tampered?.code == .snapshotCorrupt && tampered?.message.contains("image root filesystem") == true,
                    "\(String(describing: tampered))")
                try FileManager.default.removeItem(atPath: planted)
                _ = try host.kiln.loadVerified("img")

                try await host.kiln.stop(copy)
                try host.kiln.removeSnapshot("img")
                #expect(!FileManager.default.fileExists(atPath: root), "kiln rm removes the image root")
                #expect(try FileManager.default.contentsOfDirectory(atPath: "\(host.paths.store)/rootfs") == [])
                try await expectNoLeftovers(host)
            }
        }

        /// From containers-storage (a private Podman store), with the arguments after `--`
        /// replacing the image's Cmd; a re-bake drops the old version's root.
        @Test func bakesFromPodmanStorageWithItsCmdReplaced() async throws {
            let layout = try HelloImage.layout()
            try await withTestHost { host in
                let storage = "\(host.scratch)/containers"
                let specifier = "[vfs@\(storage)/root+\(storage)/run]"
                // A vfs store makes no mounts: it is plain files in the test's scratch directory,
                // removed with it (no `podman system reset`, which may touch host-wide state).
                let copied = try await Subprocess.run(
                    "/usr/bin/skopeo",
                    ["--insecure-policy", "copy", "--quiet", "oci:\(layout):1", "containers-storage:\(specifier)localhost/kiln-hello:1"])
                #expect(copied.status.isSuccess, "\(copied.stderr)")
                let listed = try await Subprocess.run(
                    "/usr/bin/podman",
                    [
                        "--root", "\(storage)/root", "--runroot", "\(storage)/run", "--storage-driver", "vfs", "images", "--format",
                        "{{.Repository}}:{{.Tag}}",
                    ])
                #expect(listed.stdout.contains("localhost/kiln-hello:1"), "podman sees the image: \(listed.stdout) \(listed.stderr)")

                let reference = try ImageReference(parsing: "podman:\(specifier)localhost/kiln-hello:1")
                // The override: user.dir changed on the java command line, then the main class.
                let sandbox = SandboxSpec(
                    command: ["-Duser.dir=/tmp", "dev.kiln.samples.hello.HelloJdk"], workingDirectory: "/", appDirectory: nil, port: 0,
                    memoryLimitBytes: 512 << 20)
                let request = BakeRequest(
                    name: "pod", sandbox: sandbox, readiness: ReadinessCheck(path: "/health"), compact: false, replace: true, image: reference)
                let first = try await host.kiln.bake(request)
                #expect(first.sandbox.command.suffix(2) == ["-Duser.dir=/tmp", "dev.kiln.samples.hello.HelloJdk"])
                #expect(first.image?.reference == "podman:\(specifier)localhost/kiln-hello:1")
                let second = try await host.kiln.bake(request)
                #expect(try FileManager.default.contentsOfDirectory(atPath: "\(host.paths.store)/rootfs").count == 1, "a re-bake drops the old root")

                let copy = try #require(try await host.kiln.restore(host.kiln.loadVerified("pod").0, count: 1).first)
                let seen = try await runtime(host, copy, env: "HELLO_IMAGE_GREETING")
                #expect(seen["cwd"] as? String == "/tmp", "the arguments after -- replaced the image's Cmd")
                #expect(seen["env"] as? String == "from-the-image")
                try await host.kiln.stop(copy)
                _ = second
                try host.kiln.removeSnapshot("pod")
                #expect(try FileManager.default.contentsOfDirectory(atPath: "\(host.paths.store)/rootfs") == [])
                try await expectNoLeftovers(host)
            }
        }

        /// Each image a bake cannot use: the error names it and the fix, the exit code says what
        /// kind it is, and nothing is left in the store.
        @Test func imagesKilnCannotUseAreRefusedClearly() async throws {
            let layout = try HelloImage.layout()
            try await withTestHost { host in
                let arm = try HelloImage.variant(of: layout, in: host.scratch, tag: "arm", ["--architecture", "arm64"])
                let bare = try HelloImage.variant(
                    of: layout, in: host.scratch, tag: "bare", ["--clear", "config.entrypoint", "--clear", "config.cmd"])
                let named = try HelloImage.variant(of: layout, in: host.scratch, tag: "named", ["--config.user", "app"])
                let cases: [(arguments: [String], environment: [String: String], exit: Int32, code: String, says: String)] = [
                    (["--image", "oci:\(layout):nope"], [:], 2, "image-not-found", "was not found in the OCI layout"),
                    (["--image", "oci:\(host.scratch)/missing"], [:], 2, "image-not-found", "no OCI image layout"),
                    (
                        ["--image", "podman:[vfs@\(host.scratch)/c/root+\(host.scratch)/c/run]localhost/nope:1"], [:], 2, "image-not-found",
                        "not found in containers-storage"
                    ),
                    (["--image", "oci:\(arm):arm"], [:], 1, "image-unsupported", "linux/arm64"),
                    (["--image", "oci:\(bare):bare"], [:], 2, "invalid-argument", "no Entrypoint or Cmd"),
                    (["--image", "oci:\(named):named"], [:], 1, "image-unsupported", "only a numeric user"),
                    (["--image", "oci:\(layout):1"], ["KILN_SKOPEO": "/nonexistent/skopeo"], 3, "tool-missing", "KILN_SKOPEO"),
                    (["--image", "oci:\(layout):1", "--rootfs", "/"], [:], 2, "invalid-argument", "--image and --rootfs"),
                ]
                for item in cases {
                    let output = try runKiln(
                        ["bake", "bad", "--ready", "/health", "--json"] + item.arguments,
                        environment: host.environment.merging(item.environment) { $1 })
                    let error = (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any])?["error"] as? [String: Any]
                    #expect(output.status == .exited(item.exit), "\(item.arguments): \(output.stdout)")
                    #expect(error?["code"] as? String == item.code, "\(item.arguments): \(output.stdout)")
                    // Bound first: inside #expect, `as? String ?? ""` expands into a check that never fails.
                    let message = error?["message"] as? String ?? ""
                    #expect(message.contains(item.says), "\(item.arguments): \(output.stdout)")
                    let hint = error?["hint"] as? String ?? ""
                    #expect(hint.count > 10, "\(item.arguments) has no hint")
                }
                #expect(((try? FileManager.default.contentsOfDirectory(atPath: "\(host.paths.store)/rootfs")) ?? []) == [])
                try await expectNoLeftovers(host)
            }
        }
    }
}
