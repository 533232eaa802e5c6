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

extension Integration {
    @Suite("encrypted snapshots", .serialized)
    struct EncryptedSnapshotTests {
        /// Every image file of an encrypted snapshot (compressed or not) is ciphertext: neither
        /// the JVM's class names nor an environment value appear in the store. Restoring needs
        /// the key: none or a wrong one is refused up front, naming the key id; with it the
        /// images are decrypted into the tmpfs cache only, and `kiln rm` drops that plaintext.
        @Test func encryptedSnapshotHidesItsMemoryAndRestoresOnlyWithItsKey() async throws {
            try await withTestHost { host in
                let keyPath = "\(host.scratch)/snapshot.key"
                let keygen = try runKiln(["keygen", keyPath], environment: host.environment)
                #expect(keygen.status == .exited(0), "\(keygen.stderr)")
                let key = try SnapshotKey(contentsOf: keyPath)
                #expect(keygen.stdout.contains(key.id))
                let wrongPath = "\(host.scratch)/wrong.key"
                let wrong = try SnapshotKey.generate(at: wrongPath)

                // A key file others may read is refused before any container starts.
                let openKey = "\(host.scratch)/open.key"
                try FileManager.default.copyItem(atPath: keyPath, toPath: openKey)
                chmod(openKey, 0o644)
                let refused = try runKiln(
                    ["bake", "refused", "--port", "8080", "--ready", "/health", "--encrypt", openKey, "--", helloJdk], environment: host.environment)
                #expect(refused.status == .exited(2))
                #expect(refused.stderr.contains("chmod 600 \(openKey)"), "\(refused.stderr)")

                let marker = "kiln-enc-marker-\(UInt64.random(in: 0...UInt64.max))"
                let className = "dev/kiln/samples/hello/HelloJdk"
                for (name, compress) in [("sealed", true), ("sealedraw", false)] {
                    let manifest = try await host.kiln.bake(
                        BakeRequest(
                            name: name, sandbox: host.sandbox([helloJdk], environment: ["KILN_TEST_MARKER": marker]),
                            readiness: ReadinessCheck(path: "/health"), warmup: [WarmupStep(count: 20, path: "/greet")], compress: compress,
                            encryptionKey: key))
                    #expect(manifest.encryption?.keyID == key.id)
                    #expect(manifest.encryption?.cipher == "aes-256-gcm")
                    #expect(manifest.files.allSatisfy { $0.path.hasSuffix(".enc") }, "\(manifest.files.map(\.path))")
                    #expect(manifest.files.contains { $0.path.hasSuffix(compress ? ".img.zst.enc" : "pages-1.img.enc") })
                    let images = host.kiln.store.dumpDirectory(of: name)
                    for file in manifest.files {
                        let data = try Data(contentsOf: URL(fileURLWithPath: "\(images)/\(file.path)"))
                        #expect(data.range(of: Data(marker.utf8)) == nil, "\(name)/\(file.path) holds the environment marker in plain text")
                        #expect(data.range(of: Data(className.utf8)) == nil, "\(name)/\(file.path) holds the JVM's class name in plain text")
                    }
                }
                let cache = host.paths.dumpCache
                let entries = { (try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? [] }
                #expect(!entries().contains { $0.hasPrefix(".bake-") }, "the plain dump in tmpfs is removed once encrypted")

                // No key, or the wrong one: refused before anything is decrypted, naming the key ids.
                let noKey = try runKiln(["run", "sealed", "--json"], environment: host.environment)
                #expect(noKey.status == .exited(2))
                let document = try JSONSerialization.jsonObject(with: Data(noKey.stdout.utf8)) as? [String: Any]
                let error = document?["error"] as? [String: Any]
                #expect(error?["code"] as? String == "key-required")
                #expect((error?["message"] as? String)?.contains("snapshot 'sealed' is encrypted (with key \(key.id))") == true, "\(noKey.stdout)")
                #expect((error?["hint"] as? String)?.contains("--key KEYFILE") == true)
                let wrongKey = try runKiln(["run", "sealed", "--key", wrongPath], environment: host.environment)
                #expect(wrongKey.status == .exited(2))
                #expect(
                    wrongKey.stderr.contains("snapshot 'sealed' was encrypted with key \(key.id); \(wrongPath) is key \(wrong.id)"),
                    "\(wrongKey.stderr)")
                let sealed = try host.kiln.store.load("sealed")
                do {
                    _ = try await host.kiln.restoreOne(sealed)
                    Issue.record("restored an encrypted snapshot without its key")
                } catch let error as KilnError {
                    #expect(error.code == .keyRequired, "\(error)")
                }
                // The gateway checks when it first prepares a function, before any restore.
                do {
                    try await KilnInstanceProvider(kiln: host.kiln, coldStartFallback: false).prepare("sealed")
                    Issue.record("the gateway prepared an encrypted snapshot without its key")
                } catch let error as KilnError {
                    #expect(error.code == .keyRequired)
                }
                #expect(!entries().contains { $0.hasPrefix("sealed") }, "nothing was decrypted")

                // With the key: the first restore decrypts into the cache, later ones read it.
                var kiln = host.kiln
                kiln.keys = SnapshotKeyring(keys: [wrong, key])
                for name in ["sealed", "sealedraw"] {
                    let (verified, _) = try kiln.loadVerified(name)
                    let first = try await kiln.restoreOne(verified)
                    let second = try await kiln.restoreOne(verified)
                    print(
                        "encrypted snapshot '\(name)': restore to first response \(Int(first.firstResponseMs)) ms (decrypting into tmpfs), then \(Int(second.firstResponseMs)) ms (from the cache)"
                    )
                    for copy in [first, second] {
                        #expect(try await kiln.request(copy, path: "/greet").status == 200)
                        try await kiln.stop(copy)
                    }
                }
                // The plaintext lives only there, private to root; it does hold what the store hides
                // (so the checks above were not vacuous).
                #expect(try FileManager.default.attributesOfItem(atPath: cache)[.posixPermissions] as? Int == 0o700)
                let plainCopy = try #require(entries().first { $0.hasPrefix("sealedraw-") })
                let pages = (try FileManager.default.contentsOfDirectory(atPath: "\(cache)/\(plainCopy)")).filter { $0.hasPrefix("pages-") }
                let plainPages = try pages.map { try Data(contentsOf: URL(fileURLWithPath: "\(cache)/\(plainCopy)/\($0)")) }
                #expect(plainPages.contains { $0.range(of: Data(className.utf8)) != nil }, "the decrypted pages should hold the class name")
                #expect(plainPages.contains { $0.range(of: Data(marker.utf8)) != nil }, "the decrypted pages should hold the environment")
                #expect(!entries().contains { $0.hasPrefix(".staging-") })

                try kiln.removeSnapshot("sealed")
                try kiln.removeSnapshot("sealedraw")
                #expect(!entries().contains { $0.hasPrefix("sealed") }, "kiln rm drops the decrypted copies")
                try await expectNoLeftovers(host)
            }
        }
    }
}
