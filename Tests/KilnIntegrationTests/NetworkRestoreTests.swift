import Foundation
import KilnEngine
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

extension Integration {
    /// A real restored JVM on kiln's network, its namespace attached by the test itself after a
    /// loopback-only restore (the engine's own wiring, attached before the restore, is
    /// `NetworkWiringTests`).
    @Suite("network: a restored JVM on the kiln network", .serialized)
    struct NetworkRestoreTests {
        @Test func aRestoredServiceAnswersItsPeersOnItsNewAddressAndNotOtherSnapshots() async throws {
            try await withTestHost { host in
                try await withNetwork { bed in
                    _ = try await host.kiln.bake(
                        BakeRequest(
                            name: "jdk", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 90),
                            warmup: [WarmupStep(count: 10, path: "/greet")]))
                    let (verified, _) = try host.kiln.loadVerified("jdk")
                    let copies = try await host.kiln.restore(verified, count: 2)
                    var attachments: [NetworkAttachment] = []
                    for copy in copies {
                        attachments.append(try await bed.network.attach(namespacePath: copy.networkNamespacePath, id: copy.id, tag: "jdk"))
                    }
                    let peer = try await bed.sandbox("jdk-peer", tag: "jdk")
                    let stranger = try await bed.sandbox("other-1", tag: "other")
                    let curl = ["/usr/bin/curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}"]
                    for (copy, attachment) in zip(copies, attachments) {
                        // The JVM listened on 0.0.0.0 in a namespace with only lo when it was dumped;
                        // restored, it answers on the address its copy was given.
                        let answer = try await inNamespace(peer.namespacePath, curl + ["http://\(attachment.ip):8080/health"])
                        #expect(answer.stdout == "200", "\(copy.id) at \(attachment.ip): \(answer.stderr)")
                        let blocked = try await inNamespace(stranger.namespacePath, curl + ["http://\(attachment.ip):8080/health"])
                        #expect(blocked.stdout == "000", "another snapshot's sandbox must not reach \(copy.id)")
                    }
                    // The two copies reach each other: same snapshot.
                    let across = try await inNamespace(copies[0].networkNamespacePath, curl + ["http://\(attachments[1].ip):8080/health"])
                    #expect(across.stdout == "200")
                    #expect(Set(attachments.map(\.address)).count == 2)

                    for attachment in attachments { try await bed.network.detach(attachment) }
                    try await bed.remove(peer)
                    try await bed.remove(stranger)
                    for copy in copies { try await host.kiln.stop(copy) }
                    #expect(try await bed.network.usage().isEmpty)
                    try await expectNoLeftovers(host)
                }
            }
        }
    }
}
