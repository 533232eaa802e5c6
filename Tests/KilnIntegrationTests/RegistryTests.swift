import Foundation
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Integration {
    /// `kiln push` and `kiln pull` through a real registry (CNCF distribution 2.8 on loopback, TLS
    /// and basic auth), between two kiln hosts with stores of their own: the pulled snapshot
    /// restores and answers; a wrong signature, a missing one, a host without a CPU feature and
    /// a tampered blob are each refused with nothing left in the store.
    @Suite(
        "snapshots through an OCI registry", .serialized, .enabled(if: TestRegistry.isInstalled, "needs docker-registry and htpasswd (make setup)"))
    struct RegistryTests {
        @Test func pushPullRestoreAndEveryRefusal() async throws {
            try await withTestHost { baker in
                try await withTestHost { puller in
                    let registry = try await TestRegistry.start(in: "\(baker.scratch)/registry")
                    defer { registry.stop() }
                    try await run(baker: baker, puller: puller, registry: registry)
                    try await expectNoLeftovers(puller)
                }
                try await expectNoLeftovers(baker)
            }
        }

        func run(baker: TestHost, puller: TestHost, registry: TestRegistry) async throws {
            let manifest = try await baker.kiln.bake(
                BakeRequest(
                    name: "jdk", sandbox: baker.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 60),
                    warmup: [WarmupStep(count: 20, path: "/greet")]))
            // The bake recorded what a restore depends on.
            let facts = manifest.host
            #expect(facts.architecture != nil && facts.pageSize != nil && facts.cgroupVersion != nil && facts.glibc != nil)
            #expect(facts.cpuFlags?.isEmpty == false, "\(facts)")
            #expect(facts.kernelFeatures?.contains("mnt_id") == true, "\(facts)")
            #expect(facts.jdk?.home.hasPrefix("/usr/lib/jvm/") == true, "\(facts)")

            // Two signing keys: the publisher's and someone else's.
            let key = "\(baker.scratch)/publisher.key", other = "\(baker.scratch)/other.key"
            let keygen = try runKiln(["keygen", "--signing", key, "--json"], environment: baker.environment)
            #expect(keygen.status == .exited(0), "\(keygen.stderr)")
            let keyID = try #require(try jsonObject(keygen.stdout)["keyID"] as? String)
            #expect(try runKiln(["keygen", "--signing", other], environment: baker.environment).status == .exited(0))
            let otherID = try SnapshotSigningKey(contentsOf: other).id

            // Without credentials the registry refuses the push.
            let anonymous = try runKiln(
                ["push", "jdk", "\(registry.address)/kiln/jdk:v1", "--cert-dir", registry.certificateDirectory], environment: baker.environment)
            #expect(anonymous.status != .exited(0))
            #expect(anonymous.stderr.contains("credentials"), "\(anonymous.stderr)")
            // --insecure is for loopback only.
            let remote = try runKiln(["push", "jdk", "registry.example.com/kiln/jdk:v1", "--insecure"], environment: baker.environment)
            #expect(remote.status == .exited(2) && remote.stderr.contains("loopback"), "\(remote.stderr)")

            let reference = "\(registry.address)/kiln/jdk:v1"
            let push = try runKiln(["push", "jdk", reference, "--sign", key, "--json"] + registry.accessArguments, environment: baker.environment)
            #expect(push.status == .exited(0), "\(push.stderr)")
            let pushed = try jsonObject(push.stdout)
            let digest = try #require(pushed["digest"] as? String)
            #expect(pushed["keyID"] as? String == keyID)
            #expect(pushed["signatureTag"] as? String == digest.replacingOccurrences(of: "sha256:", with: "sha256-") + ".sig")
            print("kiln push: \(manifest.files.count) files, \(manifest.sizeBytes) bytes in \(pushed["pushMs"] ?? "?") ms")
            // The registry holds each image file as a blob under the digest the manifest records.
            for file in manifest.files { #expect(FileManager.default.fileExists(atPath: registry.blobPath("sha256:\(file.sha256)")), "\(file.path)") }

            // The other host pulls it, checking the publisher's signature, and restores it.
            let pull = try runKiln(
                ["pull", reference, "--name", "jdkcopy", "--verify", "\(key).pub", "--json"] + registry.accessArguments,
                environment: puller.environment)
            #expect(pull.status == .exited(0), "\(pull.stderr)")
            let pulled = try jsonObject(pull.stdout)
            #expect(pulled["digest"] as? String == digest)
            #expect(pulled["signedBy"] as? String == keyID)
            print("kiln pull: \(pulled["sizeBytes"] ?? "?") bytes in \(pulled["pullMs"] ?? "?") ms (verified in \(pulled["verifyMs"] ?? "?") ms)")
            let stored = try puller.kiln.store.load("jdkcopy")
            #expect(stored.files == manifest.files)
            #expect(stored.host == manifest.host, "the pulled snapshot keeps the facts of the host it was baked on")
            let run = try runKiln(["run", "jdkcopy", "--json"], environment: puller.environment)
            #expect(run.status == .exited(0), "\(run.stderr)")
            let records = puller.kiln.instanceRecords()
            #expect(records.count == 1)
            for record in records {
                let reply = try await puller.kiln.request(record, path: "/id")
                #expect(reply.status == 200)
                #expect((try jsonObject(reply.bodyText)["requests"] as? Int ?? 0) > 20, "the pulled copy remembers its warmup")
                try await puller.kiln.stop(record)
            }

            // Verified with someone else's key: refused, naming both key ids.
            let wrong = try runKiln(
                ["pull", reference, "--name", "wrongkey", "--verify", "\(other).pub"] + registry.accessArguments, environment: puller.environment)
            #expect(wrong.status != .exited(0))
            #expect(wrong.stderr.contains(keyID) && wrong.stderr.contains(otherID), "\(wrong.stderr)")
            #expect(!puller.kiln.store.exists("wrongkey"))

            // An unsigned push, pulled with --verify: refused.
            let unsignedReference = "\(registry.address)/kiln/unsigned:v1"
            let unsignedPush = try runKiln(["push", "jdk", unsignedReference] + registry.accessArguments, environment: baker.environment)
            #expect(unsignedPush.status == .exited(0), "\(unsignedPush.stderr)")
            let unsigned = try runKiln(
                ["pull", unsignedReference, "--name", "unsigned", "--verify", "\(key).pub", "--json"] + registry.accessArguments,
                environment: puller.environment)
            #expect(unsigned.status != .exited(0))
            let unsignedError = try jsonObject(unsigned.stdout)["error"] as? [String: Any]
            #expect(unsignedError?["code"] as? String == "signature-invalid")
            #expect((unsignedError?["message"] as? String)?.contains("not signed") == true, "\(unsigned.stdout)")
            #expect(!puller.kiln.store.exists("unsigned"))

            // A host without one of the CPU features the snapshot's JIT code may use: the pull and
            // a restore are refused with the table; --ignore-host-check waives it.
            let missing = try #require(facts.cpuFlags?.first)
            let hostFacts = "\(puller.scratch)/host-facts.json"
            try Data(#"{"removeCPUFlags":["\#(missing)"]}"#.utf8).write(to: URL(fileURLWithPath: hostFacts))
            var otherCPU = puller.environment
            otherCPU["KILN_HOST_FACTS"] = hostFacts
            let refusedPull = try runKiln(["pull", reference, "--name", "othercpu"] + registry.accessArguments, environment: otherCPU)
            #expect(refusedPull.status != .exited(0))
            #expect(
                refusedPull.stderr.contains("cpu-flags") && refusedPull.stderr.contains("lacks \(missing)") && refusedPull.stderr.contains("SIGILL"),
                "\(refusedPull.stderr)")
            #expect(!puller.kiln.store.exists("othercpu"))
            let refusedRun = try runKiln(["run", "jdkcopy", "--json"], environment: otherCPU)
            #expect(refusedRun.status != .exited(0))
            #expect((try jsonObject(refusedRun.stdout)["error"] as? [String: Any])?["code"] as? String == "host-mismatch", "\(refusedRun.stdout)")
            #expect(puller.kiln.instanceRecords().isEmpty)
            let waived = try runKiln(
                ["pull", reference, "--name", "othercpu", "--ignore-host-check", "cpu-flags"] + registry.accessArguments, environment: otherCPU)
            #expect(waived.status == .exited(0), "\(waived.stderr)")
            #expect(waived.stderr.contains("ignored"), "\(waived.stderr)")
            try puller.kiln.removeSnapshot("othercpu")

            // A tampered blob in the registry's storage (same size, one byte changed): refused,
            // nothing stored, no staging left behind.
            let largest = try #require(manifest.files.max { $0.size < $1.size })
            let blob = registry.blobPath("sha256:\(largest.sha256)")
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: blob))
            try handle.seek(toOffset: UInt64(largest.size / 2))
            let byte = try #require(try handle.read(upToCount: 1)?.first)
            try handle.seek(toOffset: UInt64(largest.size / 2))
            try handle.write(contentsOf: [byte ^ 0xFF])
            try handle.close()
            let tampered = try runKiln(
                ["pull", reference, "--name", "tampered", "--verify", "\(key).pub"] + registry.accessArguments, environment: puller.environment)
            #expect(tampered.status != .exited(0))
            #expect(tampered.stderr.contains("does not match its digest") || tampered.stderr.contains("failed verification"), "\(tampered.stderr)")
            #expect(!puller.kiln.store.exists("tampered"))
            #expect(try puller.kiln.store.list().map(\.name) == ["jdkcopy"])
            try puller.kiln.removeSnapshot("jdkcopy")
            try baker.kiln.removeSnapshot("jdk")
        }

        /// An encrypted (and compressed) snapshot travels as ciphertext only: no blob in the
        /// registry holds the service's memory in plain text; the pulling host restores it with
        /// the key, and cannot rename it (each file is bound to the snapshot's name).
        @Test func anEncryptedSnapshotTravelsAsCiphertextOnly() async throws {
            try await withTestHost { baker in
                try await withTestHost { puller in
                    let registry = try await TestRegistry.start(in: "\(baker.scratch)/registry")
                    defer { registry.stop() }
                    let keyPath = "\(baker.scratch)/snapshot.key"
                    let key = try SnapshotKey.generate(at: keyPath)
                    let marker = "kiln-registry-marker-\(UInt64.random(in: 0...UInt64.max))"
                    let manifest = try await baker.kiln.bake(
                        BakeRequest(
                            name: "sealed", sandbox: baker.sandbox([helloJdk], environment: ["KILN_TEST_MARKER": marker]),
                            readiness: ReadinessCheck(path: "/health"), warmup: [WarmupStep(count: 20, path: "/greet")], compress: true,
                            encryptionKey: key))
                    #expect(manifest.encryption?.keyID == key.id)
                    let reference = "\(registry.address)/kiln/sealed:v1"
                    let push = try runKiln(["push", "sealed", reference] + registry.accessArguments, environment: baker.environment)
                    #expect(push.status == .exited(0), "\(push.stderr)")

                    // Every blob the registry stored: the kiln manifest (key id only) and ciphertext.
                    let blobs = FileManager.default.enumerator(atPath: "\(registry.storage)/docker/registry/v2/blobs")
                    var count = 0
                    while let path = blobs?.nextObject() as? String {
                        guard path.hasSuffix("/data") else { continue }
                        count += 1
                        let data = try Data(contentsOf: URL(fileURLWithPath: "\(registry.storage)/docker/registry/v2/blobs/\(path)"))
                        #expect(
                            data.range(of: Data("dev/kiln/samples/hello/HelloJdk".utf8)) == nil, "\(path) holds the JVM's class names in plain text")
                        #expect(data.range(of: Data(key.id.utf8)) == nil || data.count < 1 << 16, "only the manifest names the key")
                    }
                    #expect(count == manifest.files.count + 2, "the files, the kiln manifest and the OCI manifest")

                    let renamed = try runKiln(["pull", reference, "--name", "other"] + registry.accessArguments, environment: puller.environment)
                    #expect(renamed.status == .exited(2) && renamed.stderr.contains("bound to the snapshot's name"), "\(renamed.stderr)")
                    let pull = try runKiln(["pull", reference] + registry.accessArguments, environment: puller.environment)
                    #expect(pull.status == .exited(0), "\(pull.stderr)")
                    let noKey = try runKiln(["run", "sealed"], environment: puller.environment)
                    #expect(noKey.status != .exited(0) && noKey.stderr.contains(key.id), "\(noKey.stderr)")
                    let run = try runKiln(["run", "sealed", "--key", keyPath], environment: puller.environment)
                    #expect(run.status == .exited(0), "\(run.stderr)")
                    for record in puller.kiln.instanceRecords() {
                        #expect(try await puller.kiln.request(record, path: "/health").status == 200)
                        try await puller.kiln.stop(record)
                    }
                    try puller.kiln.removeSnapshot("sealed")
                    try baker.kiln.removeSnapshot("sealed")
                    try await expectNoLeftovers(puller)
                }
                try await expectNoLeftovers(baker)
            }
        }

        /// `kiln serve --pull NAME=REF --verify KEY.pub`: a host that has never seen the function
        /// pulls it on its first request (signature checked), restores and answers; later
        /// requests use the stored copy; an unsigned one is refused and never stored.
        @Test func servePullsASignedFunctionOnItsFirstRequest() async throws {
            try await withTestHost { baker in
                try await withTestHost { server in
                    let registry = try await TestRegistry.start(in: "\(baker.scratch)/registry")
                    defer { registry.stop() }
                    _ = try await baker.kiln.bake(
                        BakeRequest(
                            name: "jdk", sandbox: baker.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"),
                            warmup: [WarmupStep(count: 20, path: "/greet")]))
                    let key = "\(baker.scratch)/publisher.key"
                    #expect(try runKiln(["keygen", "--signing", key], environment: baker.environment).status == .exited(0))
                    let signed = "\(registry.address)/kiln/jdk:v1", unsigned = "\(registry.address)/kiln/unsigned:v1"
                    #expect(
                        try runKiln(["push", "jdk", signed, "--sign", key] + registry.accessArguments, environment: baker.environment).status
                            == .exited(0))
                    #expect(try runKiln(["push", "jdk", unsigned] + registry.accessArguments, environment: baker.environment).status == .exited(0))

                    let output = "\(server.scratch)/serve.out", errors = "\(server.scratch)/serve.err"
                    let out = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600),
                        err = open(errors, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
                    let pid = try Subprocess.spawn(
                        kilnBinary,
                        [
                            "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--json", "--pull", "hello=\(signed)", "--pull",
                            "unsigned=\(unsigned)",
                            "--verify", "\(key).pub",
                        ] + registry.accessArguments,
                        environment: server.environment, stdout: .descriptor(out), stderr: .descriptor(err))
                    close(out)
                    close(err)
                    var stopped = false
                    defer {
                        if !stopped {
                            kill(pid, SIGTERM)
                            _ = Subprocess.wait(pid)
                        }
                    }
                    var port: String?
                    for _ in 0..<200 where port == nil {
                        if let text = try? String(contentsOfFile: output, encoding: .utf8), let object = try? jsonObject(text),
                            let listen = object["listen"] as? String
                        {
                            port = listen.split(separator: ":").last.map(String.init)
                        } else {
                            try await Task.sleep(for: .milliseconds(50))
                        }
                    }
                    let listen = try #require(
                        port, "kiln serve did not report its port: \((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")")
                    #expect(!server.kiln.store.exists("hello"))

                    func get(_ path: String) async throws -> (status: String, ms: Double) {
                        let start = ContinuousClock.now
                        let reply = try await Subprocess.run(
                            "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", "http://127.0.0.1:\(listen)\(path)"])
                        return (reply.stdout, start.duration(to: .now).milliseconds)
                    }
                    let first = try await get("/hello/greet")
                    #expect(first.status == "200", "\((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")")
                    #expect(server.kiln.store.exists("hello"), "the pulled snapshot is kept in the store")
                    let second = try await get("/hello/greet")
                    #expect(second.status == "200")
                    print("kiln serve --pull: first request (pull + verify + restore) \(Int(first.ms)) ms, second \(Int(second.ms)) ms")

                    let refused = try await get("/unsigned/greet")
                    #expect(refused.status != "200")
                    #expect(!server.kiln.store.exists("unsigned"), "an unsigned snapshot is never stored")
                    #expect(((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "").contains("not signed"))
                    #expect(try await get("/nope/greet").status == "404")

                    kill(pid, SIGTERM)
                    stopped = true
                    #expect(Subprocess.wait(pid) == .exited(0))
                    try server.kiln.removeSnapshot("hello")
                    try baker.kiln.removeSnapshot("jdk")
                    try await expectNoLeftovers(server)
                }
                try await expectNoLeftovers(baker)
            }
        }

        func jsonObject(_ text: String) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
        }
    }
}
