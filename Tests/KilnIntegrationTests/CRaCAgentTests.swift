import Foundation
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

extension Integration {
    /// kiln drives its CRaC agent in a real JVM (Fixtures/CracService.java, compiled here against
    /// the real org.crac jar): beforeCheckpoint before the dump, afterRestore in every copy, the
    /// failures of each, and the preflight that refuses a dump with an open connection.
    @Suite("CRaC agent and checkpoint preflight", .serialized)
    struct CRaCAgentTests {
        static let cracJar = "/var/cache/kiln-setup/spring-boot-3/lib/crac-1.5.0.jar"
        static let jdk = "/usr/lib/jvm/java-17-openjdk-amd64"
        /// Inside the package root, which the sandboxes see read-only at the same path.
        static let fixture = "\(packageRoot)/.build/kiln-crac-fixture"

        /// Builds the agent (agent/build.sh, idempotent) and the fixture service; the command
        /// that runs it.
        static func prepare() throws -> [String] {
            let agent = try Subprocess.run("\(packageRoot)/agent/build.sh", [])
            #expect(agent.status == .exited(0), "agent/build.sh: \(agent.stderr)")
            try? FileManager.default.removeItem(atPath: fixture)
            try FileManager.default.createDirectory(atPath: "\(fixture)/classes", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: cracJar, toPath: "\(fixture)/crac.jar")
            let javac = try Subprocess.run(
                "\(jdk)/bin/javac",
                [
                    "--release", "17", "-cp", "\(fixture)/crac.jar", "-d", "\(fixture)/classes",
                    "\(packageRoot)/Tests/KilnIntegrationTests/Fixtures/CracService.java",
                ])
            #expect(javac.status == .exited(0), "javac: \(javac.stderr)")
            return ["\(jdk)/bin/java", "-XX:-UsePerfData", "-cp", "\(fixture)/classes:\(fixture)/crac.jar", "CracService"]
        }

        static func request(_ host: TestHost, mode: String, name: String, allow: Set<CheckpointPreflight.Kind> = []) throws -> BakeRequest {
            var request = BakeRequest(
                name: name, sandbox: host.sandbox(try prepare(), environment: ["CRAC_MODE": mode]),
                readiness: ReadinessCheck(path: "/health", timeoutSeconds: 60), warmup: [WarmupStep(count: 3, path: "/state")], compact: false)
            request.allow = allow
            return request
        }

        /// `key=value` pairs of the fixture's /state.
        static func state(_ host: TestHost, _ copy: InstanceRecord) async throws -> [String: String] {
            let reply = try await host.kiln.request(copy, path: "/state")
            #expect(reply.status == 200)
            return Dictionary(
                reply.bodyText.split(separator: " ").compactMap { pair -> (String, String)? in
                    guard let equals = pair.firstIndex(of: "=") else { return nil }
                    return (String(pair[..<equals]), String(pair[pair.index(after: equals)...]))
                }, uniquingKeysWith: { first, _ in first })
        }

        @Test func everyCopyRunsAfterRestoreInItsOwnIdentityBeforeItIsReady() async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(try Self.request(host, mode: "ok", name: "crac"))
                #expect(manifest.sandbox.agent != nil)
                #expect(manifest.agentProcess == 1, "the JVM is the container's first process")
                let copies = try await host.kiln.restore(manifest, count: 2)
                var randoms: Set<String> = []
                for copy in copies {
                    // The first request after restoreOne returned: afterRestore had already run.
                    let state = try await Self.state(host, copy)
                    // The bake's restore rehearsal ran each once in the original, then the real
                    // beforeCheckpoint; this copy's afterRestore is the second.
                    #expect(state["before"] == "2", "the rehearsal's beforeCheckpoint and the real one: \(state)")
                    #expect(state["after"] == "2", "afterRestore should have run once in \(copy.id) (after the rehearsal's) before it was ready")
                    #expect(state["instance"] == copy.id)
                    #expect(state["host"] == copy.id, "InetAddress.getLocalHost() should name the copy")
                    randoms.insert(state["random"] ?? "")
                    #expect((copy.afterRestoreMs ?? 0) > 0)
                    print(
                        "afterRestore of \(copy.id): \(String(format: "%.1f", copy.afterRestoreMs ?? -1)) ms (first response \(String(format: "%.1f", copy.firstResponseMs)) ms)"
                    )
                    let log = (try? String(contentsOfFile: copy.logPath, encoding: .utf8)) ?? ""
                    #expect(log.contains("fixture: afterRestore ran as \(copy.id)"))
                }
                #expect(randoms.count == 2, "copies drew the same SecureRandom bytes: \(randoms)")
                for copy in copies { try await host.kiln.stop(copy) }
                try await expectNoLeftovers(host)
            }
        }

        @Test func onRequestTheBakeWaitsForTheApplicationsOwnCheckpoint() async throws {
            try await withTestHost { host in
                var request = try Self.request(host, mode: "on-request", name: "onrequest")
                request.onRequest = true
                let manifest = try await host.kiln.bake(request)
                #expect(manifest.agentProcess == 1)
                let copy = try await host.kiln.restoreOne(manifest)
                let state = try await Self.state(host, copy)
                #expect(state["before"] == "1")
                #expect(state["after"] == "1")
                #expect(state["instance"] == copy.id)
                let log = (try? String(contentsOfFile: copy.logPath, encoding: .utf8)) ?? ""
                #expect(log.contains("fixture: checkpointRestore returned in \(copy.id)"), "\(log)")
                try await host.kiln.stop(copy)
                try await expectNoLeftovers(host)
            }
        }

        @Test func aThrowingBeforeCheckpointAbortsTheBakeAndTheOriginalRunsAfterRestore() async throws {
            try await withTestHost { host in
                let error = await expectKilnError(.checkpointFailed) {
                    _ = try await host.kiln.bake(try Self.request(host, mode: "throw-before", name: "refuses"))
                }
                #expect(
                    error?.message.contains("java.lang.IllegalStateException: fixture refuses the checkpoint") == true, "\(String(describing: error))"
                )
                #expect(error?.details.contains { $0.contains("CracService") } == true, "the Java stack should be in the details")
                let log = error?.logPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
                #expect(log.contains("fixture: beforeCheckpoint ran"), "log at \(error?.logPath ?? "-")")
                #expect(log.contains("fixture: afterRestore ran"), "the original should have run afterRestore: \(log)")
                #expect(!host.kiln.store.exists("refuses"))
                try await expectNoLeftovers(host)
            }
        }

        @Test func aThrowingAfterRestoreFailsThatCopyAndLeavesNothing() async throws {
            try await withTestHost { host in
                // The bake's restore rehearsal runs afterRestore in the original: one that always
                // throws fails the bake, before anything is dumped.
                let rehearsed = await expectKilnError(.restoreFailed) {
                    _ = try await host.kiln.bake(try Self.request(host, mode: "throw-after", name: "restorefails"))
                }
                #expect(rehearsed?.message.contains("fixture refuses the restore") == true, "\(String(describing: rehearsed))")
                #expect(!host.kiln.store.exists("restorefails"))
                try await expectNoLeftovers(host)

                // Without the rehearsal the snapshot is made, and each copy's restore fails.
                var request = try Self.request(host, mode: "throw-after", name: "restorefails")
                request.rehearseRestore = false
                let manifest = try await host.kiln.bake(request)
                let error = await expectKilnError(.restoreFailed) {
                    _ = try await host.kiln.restoreOne(manifest)
                }
                #expect(error?.message.contains("fixture refuses the restore") == true, "\(String(describing: error))")
                #expect(error?.action.contains("afterRestore") == true, "\(String(describing: error?.action))")
                #expect(host.kiln.instanceRecords().isEmpty)
                try await expectNoLeftovers(host)
            }
        }

        @Test func thePreflightNamesAnOpenConnectionAndAllowLetsItThrough() async throws {
            try await withTestHost { host in
                let error = await expectKilnError(.checkpointBlocked) {
                    _ = try await host.kiln.bake(try Self.request(host, mode: "connect", name: "connected"))
                }
                let report = error?.details.joined(separator: "\n") ?? ""
                #expect(report.contains("tcp-connection"), "\(report)")
                #expect(report.contains("127.0.0.1:9099"), "\(report)")
                #expect(report.contains("fix: close the connection"), "\(report)")
                #expect(!host.kiln.store.exists("connected"))
                // The original was told the checkpoint did not happen.
                let log = error?.logPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
                #expect(log.contains("fixture: afterRestore ran"), "\(log)")
                try await expectNoLeftovers(host)

                // --allow tcp-connection: the preflight lets it through to CRIU, which refuses an
                // established connection itself (kiln does not dump them): no longer the preflight.
                do {
                    _ = try await host.kiln.bake(try Self.request(host, mode: "connect", name: "connected", allow: [.tcpConnection]))
                    Issue.record("CRIU dumped an established TCP connection")
                } catch let error as KilnError {
                    #expect(error.code == .checkpointFailed, "\(error)")
                }
                // The original ran afterRestore after the failed dump too (restore.request with
                // checkpoint.error): both kept console logs of the two bakes say so.
                let logs = (try? FileManager.default.contentsOfDirectory(atPath: host.paths.logs)) ?? []
                let told = logs.filter { $0.hasSuffix("-bake.log") }.filter { name in
                    ((try? String(contentsOfFile: "\(host.paths.logs)/\(name)", encoding: .utf8)) ?? "").contains("fixture: afterRestore ran")
                }
                #expect(told.count == 2, "\(logs)")
                try await expectNoLeftovers(host)
            }
        }

        @Test func bakePreflightPrintsTheReportAndStops() async throws {
            try await withTestHost { host in
                let command = try Self.prepare()
                let output = try runKiln(
                    [
                        "bake", "pf", "--port", "8080", "--ready", "/health", "--app", packageRoot, "--env", "CRAC_MODE=connect", "--no-compact",
                        "--preflight", "--",
                    ]
                        + command, environment: host.environment)
                #expect(output.status == .exited(0), "\(output.stderr)")
                #expect(output.stdout.contains("tcp-connection: pid 1 (java): TCP 127.0.0.1:"), "\(output.stdout)")
                #expect(output.stdout.contains("fix: "), "\(output.stdout)")
                #expect(output.stdout.contains("A bake would refuse the dump"), "\(output.stdout)")
                #expect(!host.kiln.store.exists("pf"))
                let allowed = try runKiln(
                    [
                        "bake", "pf", "--port", "8080", "--ready", "/health", "--app", packageRoot, "--env", "CRAC_MODE=connect", "--no-compact",
                        "--preflight",
                        "--allow", "tcp-connection", "--json", "--",
                    ] + command, environment: host.environment)
                #expect(allowed.status == .exited(0), "\(allowed.stderr)")
                let json = try JSONSerialization.jsonObject(with: Data(allowed.stdout.utf8)) as? [String: Any]
                #expect(json?["blocked"] as? Bool == false, "\(allowed.stdout)")
                #expect(
                    (json?["findings"] as? [[String: Any]])?.contains { $0["kind"] as? String == "tcp-connection" && $0["allowed"] as? Bool == true }
                        == true)
                #expect(!host.kiln.store.exists("pf"))
                try await expectNoLeftovers(host)
            }
        }
    }
}
