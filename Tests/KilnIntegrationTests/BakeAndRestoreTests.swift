import Foundation
import KilnCore
import Testing

@Suite("bake and restore real JVM services", .serialized, .enabled(if: isRoot, "needs root: runc and CRIU create namespaces and cgroups"))
struct BakeAndRestoreTests {
    /// The dependency-free sample: bake, restore two copies, check they answer as themselves.
    @Test func jdkSampleBakesAndRestoresTwoDistinctCopies() async throws {
        try await withTestHost { host in
        let manifest = try await host.kiln.bake(BakeRequest(
            name: "jdk", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 60),
            warmup: [WarmupStep(count: 20, path: "/greet")]))
        #expect(manifest.compacted, "a full GC should run in the JVM before the dump")
        #expect(manifest.sizeBytes > 1 << 20)
        #expect(manifest.files.contains { $0.path.hasPrefix("pages-") })
        #expect(manifest.host.criuVersion == "4.2.1")

        let (verified, _) = try host.kiln.loadVerified("jdk")
        let copies = try await host.kiln.restore(verified, count: 2)
        #expect(copies.count == 2)
        var hostnames: Set<String> = []
        for copy in copies {
            let reply = try await host.kiln.request(copy, path: "/id")
            #expect(reply.status == 200)
            let id = try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any]
            let hostname = id?["hostname"] as? String
            #expect(hostname == copy.id, "each copy's /id should report the hostname kiln gave it")
            hostnames.insert(hostname ?? "")
            // The warmup requests happened before the dump: the restored copy remembers them.
            #expect((id?["requests"] as? Int ?? 0) > 20)
        }
        #expect(hostnames.count == 2)
        let status = try await host.kiln.status()
        #expect(status.count == 2)
        #expect(status.allSatisfy { $0.state == "running" && $0.memory.rssBytes > 10 << 20 && $0.memory.pssBytes > 0 })
        for copy in copies { try await host.kiln.stop(copy) }
        try await expectNoLeftovers(host)
        }
    }

    /// The acceptance test of the foundation: the Spring sample, three copies at once.
    @Test func springSampleRestoresThreeCopiesThatAnswerIndependently() async throws {
        try await withTestHost { host in
        let manifest = try await host.kiln.bake(BakeRequest(
            name: "spring", sandbox: host.sandbox([helloSpring]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 120),
            warmup: [WarmupStep(count: 100, path: "/greet"), WarmupStep(count: 50, path: "/owners/1")]))
        #expect(manifest.timings.coldStartMs > 0)

        let (verified, _) = try host.kiln.loadVerified("spring")
        let copies = try await host.kiln.restore(verified, count: 3)
        // All three run side by side: every one answers after all are up.
        var identities: Set<String> = []
        for copy in copies {
            let health = try await host.kiln.request(copy, path: "/health")
            #expect(health.status == 200)
            let owners = try await host.kiln.request(copy, path: "/owners/1")
            #expect(owners.status == 200)
            #expect(owners.bodyText.contains("\"pets\""))
            let id = try await host.kiln.request(copy, path: "/id")
            #expect(id.status == 200)
            let hostname = (try JSONSerialization.jsonObject(with: Data(id.body)) as? [String: Any])?["hostname"] as? String
            #expect(hostname == copy.id)
            identities.insert(hostname ?? "")
        }
        #expect(identities.count == 3, "copies must report distinct identities")
        // A write to one copy is not seen by another: they are independent processes.
        let created = try await host.kiln.request(copies[0], method: "POST", path: "/owners", body: Array(#"{"firstName":"Kiln","lastName":"Zzyzx","city":"Madison","telephone":"6085551023","address":"1 Oven St"}"#.utf8))
        #expect((200..<300).contains(created.status), "POST /owners answered \(created.status): \(created.bodyText)")
        let seenByFirst = try await host.kiln.request(copies[0], path: "/owners?lastName=Zzyzx")
        let seenBySecond = try await host.kiln.request(copies[1], path: "/owners?lastName=Zzyzx")
        #expect(seenByFirst.bodyText.contains("Kiln"))
        #expect(!seenBySecond.bodyText.contains("Kiln"))

        for copy in copies { try await host.kiln.stop(copy) }
        try await expectNoLeftovers(host)
        }
    }
}
