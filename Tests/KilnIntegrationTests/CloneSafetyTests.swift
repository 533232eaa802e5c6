import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

extension Integration {
    /// Snapshots are secrets and clones are not identical twins.
    @Suite("snapshots are secrets, clones are not twins", .serialized)
    struct CloneSafetyTests {
        /// Two copies of one snapshot must not hand out the same "random" values. The JDK's
        /// default SecureRandom on Linux (NativePRNG) mixes fresh /dev/urandom bytes into every
        /// call, and UUID.randomUUID() draws from it, so copies differ without help from kiln.
        @Test func copiesGenerateDifferentRandomValues() async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(
                    BakeRequest(
                        name: "random", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"),
                        warmup: [WarmupStep(count: 5, path: "/random")]))
                let copies = try await host.kiln.restore(manifest, count: 2)
                var uuids: Set<String> = []
                var secure: Set<String> = []
                for copy in copies {
                    let reply = try await host.kiln.request(copy, path: "/random")
                    let values = try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])
                    uuids.insert(try #require(values["uuid"] as? String))
                    secure.insert(try #require(values["secureRandom"] as? String))
                }
                #expect(uuids.count == 2, "UUID.randomUUID() must differ between copies")
                #expect(secure.count == 2, "SecureRandom output must differ between copies")
                for copy in copies { try await host.kiln.stop(copy) }
                try await expectNoLeftovers(host)
            }
        }

        /// A generator that never reseeds itself (DRBG) hands every copy the same "random" bytes:
        /// the snapshot holds its state. kiln's restore hook (`bake --on-restore`) tells each copy
        /// it was restored, and who it is, before any request reaches it; the sample reseeds there.
        @Test func restoreHookLetsCopiesReseedWhatNeverReseedsItself() async throws {
            try await withTestHost { host in
                func secureRandomOfTwoCopies(hook: String?) async throws -> (values: Set<String>, restoredAs: [String]) {
                    let manifest = try await host.kiln.bake(
                        BakeRequest(
                            name: "drbg", sandbox: host.sandbox([helloJdk], environment: ["SECURE_RANDOM_ALGORITHM": "DRBG"]),
                            readiness: ReadinessCheck(path: "/health"), warmup: [WarmupStep(count: 3, path: "/random")], compact: false,
                            replace: true, restoreHook: hook))
                    #expect(manifest.restoreHook == hook)
                    var values: Set<String> = []
                    var restoredAs: [String] = []
                    for copy in try await host.kiln.restore(manifest, count: 2) {
                        let random =
                            try JSONSerialization.jsonObject(with: Data(try await host.kiln.request(copy, path: "/random").body)) as? [String: Any]
                        values.insert(try #require(random?["secureRandom"] as? String))
                        let id = try JSONSerialization.jsonObject(with: Data(try await host.kiln.request(copy, path: "/id").body)) as? [String: Any]
                        restoredAs.append(id?["restoredAs"] as? String ?? "")
                        try await host.kiln.stop(copy)
                    }
                    return (values, restoredAs)
                }
                let without = try await secureRandomOfTwoCopies(hook: nil)
                #expect(
                    without.values.count == 1, "without the hook, two copies of a DRBG snapshot repeat each other (the hazard this guards against)")
                let with = try await secureRandomOfTwoCopies(hook: "/kiln/restored")
                #expect(with.values.count == 2, "with the hook, each copy reseeds")
                #expect(
                    with.restoredAs.allSatisfy { $0.contains("\"instance\":\"drbg-") && $0.contains("\"snapshot\":\"drbg\"") }, "\(with.restoredAs)")

                // A hook that does not answer 2xx fails the restore, and leaves nothing.
                let broken = try await host.kiln.bake(
                    BakeRequest(
                        name: "nohook", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"), compact: false,
                        restoreHook: "/no-such-hook"))
                let error = try await #require(throws: KilnError.self) { _ = try await host.kiln.restoreOne(broken) }
                #expect(error.code == .restoreFailed && error.message.contains("/no-such-hook") && error.message.contains("HTTP 4"), "\(error)")
                try await expectNoLeftovers(host)
            }
        }

        /// One flipped byte in any image file is caught before anything is restored, naming the file.
        @Test func aFlippedByteInAnyImageFileIsCaught() async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(
                    BakeRequest(
                        name: "tamper", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"), compact: false))
                let images = host.kiln.store.dumpDirectory(of: "tamper")
                for file in manifest.files where file.size > 0 {
                    let path = "\(images)/\(file.path)"
                    let original = try Data(contentsOf: URL(fileURLWithPath: path))
                    var tampered = original
                    tampered[tampered.count / 2] ^= 0x01
                    try tampered.write(to: URL(fileURLWithPath: path))
                    do {
                        _ = try host.kiln.loadVerified("tamper")
                        Issue.record("a flipped byte in \(file.path) was not caught")
                    } catch let error as KilnError {
                        #expect(error.code == .snapshotCorrupt)
                        #expect(error.message.contains(file.path), "\(error.message)")
                    }
                    try original.write(to: URL(fileURLWithPath: path))
                }
                _ = try host.kiln.loadVerified("tamper")
                // Snapshots are private to root.
                let attributes = try FileManager.default.attributesOfItem(atPath: host.paths.store)
                #expect(attributes[.posixPermissions] as? Int == 0o700)
                for file in manifest.files {
                    let mode = try FileManager.default.attributesOfItem(atPath: "\(images)/\(file.path)")[.posixPermissions] as? Int
                    #expect(mode == 0o600, "\(file.path) has mode \(String(mode ?? 0, radix: 8))")
                }
                try await expectNoLeftovers(host)
            }
        }
    }
}
