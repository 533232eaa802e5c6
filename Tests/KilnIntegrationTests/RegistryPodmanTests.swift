import Foundation
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

extension Integration {
    /// Kubernetes' format: `kiln push --format checkpoint-image` writes the checkpoint image that
    /// `podman container checkpoint --create-image` makes (one layer of the checkpoint's files,
    /// Podman's annotations); Podman pulls it from the registry (TLS, basic auth) and restores it.
    @Suite(
        "checkpoint images through a registry", .serialized,
        .enabled(if: TestRegistry.isInstalled && podmanAvailable, "needs docker-registry, htpasswd and podman (make setup)"))
    struct RegistryPodmanTests {
        @Test func podmanRestoresACheckpointImagePulledFromTheRegistry() async throws {
            try await withPodman { host, podman in
                let registry = try await TestRegistry.start(in: "\(host.scratch)/registry")
                defer { registry.stop() }
                _ = try await host.kiln.bake(
                    BakeRequest(
                        name: "hello", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"),
                        warmup: [WarmupStep(count: 20, path: "/greet")], agent: false))
                let reference = "\(registry.address)/kiln/hello-checkpoint:v1"
                let base = "\(host.scratch)/kiln-root-image.tar"
                let push = try runKiln(
                    ["push", "hello", reference, "--format", "checkpoint-image", "--base-image", base, "--json"] + registry.accessArguments,
                    environment: host.environment)
                #expect(push.status == .exited(0), "\(push.stdout) \(push.stderr)")
                let pushed = try #require(try JSONSerialization.jsonObject(with: Data(push.stdout.utf8)) as? [String: Any])
                #expect((pushed["digest"] as? String)?.hasPrefix("sha256:") == true, "\(pushed)")
                // kiln's own pull refuses it: it is not a kiln snapshot.
                let kilnPull = try runKiln(["pull", reference, "--name", "notkiln"] + registry.accessArguments, environment: host.environment)
                #expect(kilnPull.status != .exited(0) && kilnPull.stderr.contains("not a kiln snapshot"), "\(kilnPull.stderr)")

                try podman.check(["load", "-i", base])
                try podman.check(["pull", "--creds", registry.credentials, "--cert-dir", registry.certificateDirectory, reference])
                let inspect = try podman.check([
                    "image", "inspect", "--format", "{{index .Annotations \"io.podman.annotations.checkpoint.name\"}}", reference,
                ])
                #expect(inspect.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "hello")
                let start = ContinuousClock.now
                try podman.check(["container", "restore", reference, "--name", "kiln-image"])
                let pid = try podman.pid(of: "kiln-image")
                let reply = try await waitForOK(ServiceEndpoint(networkNamespacePath: "/proc/\(pid)/ns/net", port: 8080), path: "/greet")
                let restoreMs = start.duration(to: .now).milliseconds
                #expect(reply.status == 200)
                #expect(reply.bodyText.contains("hello-jdk"), "\(reply.bodyText)")
                try podman.check(["rm", "-f", "-t", "0", "kiln-image"])
                print(
                    "kiln push --format checkpoint-image: \(pushed["layerBytes"] ?? "?") bytes in \(pushed["pushMs"] ?? "?") ms; podman container restore IMAGE to first 200: \(Int(restoreMs)) ms"
                )
                try host.kiln.removeSnapshot("hello")
            }
        }
    }
}
