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

/// Each error a user can hit: a clear message naming the problem and the fix, and nothing left
/// behind afterwards.
extension Integration {
    @Suite("errors a user will hit", .serialized)
    struct ErrorCaseTests {
        @Test func notRootIsRefusedWithAHint() async throws {
            try await withTestHost { host in
                let output = try runKiln(
                    ["ls"], environment: host.environment, prefix: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
                #expect(output.status == .exited(3))
                #expect(output.stderr.contains("must run as root"))
                #expect(output.stderr.contains("sudo"))
            }
        }

        @Test func missingCapabilityIsNamed() async throws {
            try await withTestHost { host in
                // capsh runs its arguments through bash: pass the command as one -c string.
                let viaShell = try Subprocess.run(
                    "/usr/sbin/capsh", ["--drop=cap_sys_admin", "--", "-c", "\(kilnBinary) ls --json"], environment: host.environment)
                #expect(viaShell.status == .exited(3))
                let document = try JSONSerialization.jsonObject(with: Data(viaShell.stdout.utf8)) as? [String: Any]
                let error = document?["error"] as? [String: Any]
                #expect(error?["code"] as? String == "missing-capability")
                let message = error?["message"] as? String ?? ""
                #expect(message.contains("CAP_SYS_ADMIN"))
            }
        }

        @Test func criuMissingOrTooOldPointsAtMakeSetup() async throws {
            var environment = ProcessInfo.processInfo.environment
            environment["KILN_CRIU"] = "/nonexistent/criu"
            let missing = await expectKilnError(.criuMissing) { _ = try CRIU.locate(environment: environment) }
            #expect(missing?.hint?.contains("make setup") == true)

            environment["KILN_CRIU"] = nil
            environment["PATH"] = "/nonexistent"
            // With no criu on PATH, kiln still looks in /usr/local/sbin, where make setup puts it;
            // so simulate "too old" with a stand-in that reports Debian bookworm's 3.17.1.
            let fake = "/tmp/kiln-fake-criu-\(getpid())"
            try "#!/bin/sh\necho 'Version: 3.17.1'\n".write(toFile: fake, atomically: true, encoding: .utf8)
            chmod(fake, 0o755)
            defer { unlink(fake) }
            environment["KILN_CRIU"] = fake
            let old = await expectKilnError(.criuTooOld) { _ = try CRIU.locate(environment: environment) }
            #expect(old?.message.contains("3.17.1") == true)
            #expect(old?.hint?.contains("make setup") == true)

            // The CLI says the same, with its own exit code.
            var cli = environment
            cli["PATH"] = ProcessInfo.processInfo.environment["PATH"]
            let output = try runKiln(["run", "anything"], environment: cli)
            #expect(output.status == .exited(3))
            #expect(output.stderr.contains("too old"))
        }

        @Test func commandNotFoundFailsBeforeAnythingStarts() async throws {
            try await withTestHost { host in
                for command in [["/nonexistent/bin/service"], ["no-such-command-kiln"], ["examples/nope/bin/nope"]] {
                    let error = await expectKilnError(.commandNotFound) {
                        _ = try await host.kiln.bake(
                            BakeRequest(name: "nocmd", sandbox: host.sandbox(command), readiness: ReadinessCheck(path: "/health")))
                    }
                    #expect(error?.message.contains(command[0]) == true)
                }
                // A command outside what the sandbox sees is refused with the fix.
                let outside = await expectKilnError(.commandNotFound) {
                    _ = try await host.kiln.bake(
                        BakeRequest(
                            name: "outside", sandbox: host.sandbox([helloJdk], app: "\(packageRoot)/Sources"),
                            readiness: ReadinessCheck(path: "/health")))
                }
                #expect(outside?.hint?.contains("--app") == true)
                try await expectNoLeftovers(host)
            }
        }

        @Test func serviceThatCrashesShowsItsLastOutput() async throws {
            try await withTestHost { host in
                let error = await expectKilnError(.serviceExited) {
                    _ = try await host.kiln.bake(
                        BakeRequest(
                            name: "crash", sandbox: host.sandbox([helloJdk], environment: ["HELLO_FAIL": "crash"]),
                            readiness: ReadinessCheck(path: "/health", timeoutSeconds: 30)))
                }
                #expect(
                    error?.details.contains { $0.contains("HELLO_FAIL=crash") } == true,
                    "the crash message should be quoted: \(String(describing: error))")
                #expect(error?.logPath.map { FileManager.default.fileExists(atPath: $0) } == true)
                try await expectNoLeftovers(host)
            }
        }

        @Test func serviceNeverReadyTimesOutWithLogAndHint() async throws {
            try await withTestHost { host in
                let error = await expectKilnError(.serviceNeverReady) {
                    _ = try await host.kiln.bake(
                        BakeRequest(
                            name: "never", sandbox: host.sandbox([helloJdk], environment: ["HELLO_FAIL": "never-ready"]),
                            readiness: ReadinessCheck(path: "/health", timeoutSeconds: 3)))
                }
                #expect(error?.message.contains("HTTP 503") == true)
                #expect(error?.details.isEmpty == false)
                try await expectNoLeftovers(host)

                // Listening on another port than --port: the hint names the port it listens on.
                let wrongPort = await expectKilnError(.serviceNeverReady) {
                    _ = try await host.kiln.bake(
                        BakeRequest(
                            name: "wrongport", sandbox: host.sandbox(["/bin/sh", "-c", "PORT=9191 exec \(helloJdk)"], port: 8080),
                            readiness: ReadinessCheck(path: "/health", timeoutSeconds: 4)))
                }
                #expect(wrongPort?.hint?.contains("--port 9191") == true, "\(String(describing: wrongPort))")
                try await expectNoLeftovers(host)
            }
        }

        @Test func portAlreadyInUseIsReportedAsSuch() async throws {
            try await withTestHost { host in
                // Something else in the sandbox holds the port before the service starts.
                let squatter =
                    #"python3 -c 'import socket,time; s=socket.socket(); s.bind(("0.0.0.0", 8080)); s.listen(); time.sleep(120)' & sleep 1; exec "$0""#
                let error = await expectKilnError(.portInUse) {
                    _ = try await host.kiln.bake(
                        BakeRequest(
                            name: "taken", sandbox: host.sandbox(["/bin/sh", "-c", squatter, helloJdk]),
                            readiness: ReadinessCheck(path: "/health", timeoutSeconds: 30)))
                }
                #expect(error?.message.contains("8080") == true)
                try await expectNoLeftovers(host)
            }
        }

        @Test func missingAndCorruptSnapshotsAreRefusedNamingTheFile() async throws {
            try await withTestHost { host in
                let missing = await expectKilnError(.snapshotNotFound) { _ = try host.kiln.loadVerified("nope") }
                #expect(missing?.hint?.contains("kiln bake") == true)

                _ = try await host.kiln.bake(
                    BakeRequest(
                        name: "victim", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"), compact: false))

                // bench serve's options are checked before anything is restored.
                let twice = try runKiln(
                    ["bench", "serve", "victim", "--placement", "shared", "--placement", "shared"], environment: host.environment)
                #expect(twice.status == .exited(2))
                #expect(twice.stderr.contains("each placement at most once"))
                let unknown = try runKiln(["bench", "serve", "victim", "--placement", "nowhere"], environment: host.environment)
                #expect(unknown.status == .exited(64))
                #expect(unknown.stderr.contains("isolated") && unknown.stderr.contains("shared"))
                #expect(host.kiln.instanceRecords().isEmpty)

                let images = host.kiln.store.dumpDirectory(of: "victim")
                let manifest = try host.kiln.store.load("victim")
                let pages = try #require(manifest.files.first { $0.path.hasPrefix("pages-") })
                let handle = try #require(FileHandle(forUpdatingAtPath: "\(images)/\(pages.path)"))
                try handle.seek(toOffset: UInt64(pages.size / 2))
                let original = try #require(try handle.read(upToCount: 1)?.first)
                try handle.seek(toOffset: UInt64(pages.size / 2))
                try handle.write(contentsOf: [original ^ 0xff])
                try handle.close()
                let corrupt = await expectKilnError(.snapshotCorrupt) { _ = try host.kiln.loadVerified("victim") }
                #expect(corrupt?.message.contains(pages.path) == true)

                // The CLI refuses it too, before restoring anything.
                let output = try runKiln(["run", "victim"], environment: host.environment)
                #expect(output.status == .exited(1))
                #expect(output.stderr.contains(pages.path))
                #expect(host.kiln.instanceRecords().isEmpty)

                // A manifest that is not JSON is corrupt, not a crash.
                try "{ not json".write(toFile: "\(host.paths.store)/snapshots/victim/manifest.json", atomically: true, encoding: .utf8)
                _ = await expectKilnError(.snapshotCorrupt) { _ = try host.kiln.loadVerified("victim") }
                try await expectNoLeftovers(host)
            }
        }

        @Test func checkpointFailureQuotesCRIUsLog() async throws {
            try await withTestHost { host in
                // A service holding an established TCP connection: CRIU refuses to dump it unless
                // told to (--tcp-established), which kiln deliberately does not do.
                let holder =
                    #"exec python3 -c 'import http.server,os,socket; s=http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler); c=socket.create_connection(("127.0.0.1", s.server_port)); s.serve_forever()'"#
                var request = BakeRequest(
                    name: "holdsconn", sandbox: host.sandbox(["/bin/sh", "-c", holder]), readiness: ReadinessCheck(path: "/", timeoutSeconds: 30))
                // kiln's preflight names it first (a python service: no JVM, no agent callbacks)...
                let blocked = await expectKilnError(.checkpointBlocked) { _ = try await host.kiln.bake(request) }
                #expect(
                    blocked?.details.contains { $0.contains("tcp-connection: pid 1 (python3): TCP 127.0.0.1:") } == true,
                    "\(String(describing: blocked))")
                try await expectNoLeftovers(host)
                // ...and once allowed, CRIU refuses it itself.
                request.allow = [.tcpConnection]
                let error = await expectKilnError(.checkpointFailed) {
                    _ = try await host.kiln.bake(request)
                }
                #expect(error?.details.contains { $0.contains("Error") } == true, "CRIU's error lines should be quoted: \(String(describing: error))")
                let log = try #require(error?.logPath)
                #expect(FileManager.default.fileExists(atPath: log))
                #expect(!host.kiln.store.exists("holdsconn"))
                try await expectNoLeftovers(host)
            }
        }

        @Test func restoreFailureQuotesCRIUsLogAndLeavesNothing() async throws {
            try await withTestHost { host in
                // The service keeps a file of its app directory open; changing that file after the
                // bake makes CRIU refuse the restore (the file is not the one it checkpointed).
                let app = "\(host.scratch)/app"
                try FileManager.default.createDirectory(atPath: app, withIntermediateDirectories: true)
                try String(repeating: "seed data\n", count: 100).write(toFile: "\(app)/data.txt", atomically: true, encoding: .utf8)
                let server =
                    #"exec python3 -c 'import http.server,os; f=open("data.txt"); http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler).serve_forever()'"#
                _ = try await host.kiln.bake(
                    BakeRequest(
                        name: "openfile", sandbox: host.sandbox(["/bin/sh", "-c", server], app: app),
                        readiness: ReadinessCheck(path: "/", timeoutSeconds: 30)))
                try "changed\n".write(toFile: "\(app)/data.txt", atomically: false, encoding: .utf8)
                let (manifest, _) = try host.kiln.loadVerified("openfile")
                let error = await expectKilnError(.restoreFailed) { _ = try await host.kiln.restoreOne(manifest) }
                #expect(error?.details.contains { $0.contains("data.txt") } == true, "\(String(describing: error))")
                let log = try #require(error?.logPath)
                #expect(FileManager.default.fileExists(atPath: log))
                #expect(host.kiln.instanceRecords().isEmpty)
                try await expectNoLeftovers(host)
            }
        }
    }
}

extension Integration {
    /// kiln killed in the middle of its work leaves things behind; `kiln gc` removes them and
    /// keeps what is still running.
    @Suite("crashed kiln", .serialized)
    struct CrashRecoveryTests {
        /// A copy a live kiln is still making (its directory marked as that process's, no
        /// record yet: a gateway's ready standby copy takes ~6 s to its record) is not a half-made
        /// restore for `kiln gc` to remove; one whose kiln died is.
        @Test func gcLeavesARestoreInProgressAlone() async throws {
            try await withTestHost { host in
                let inProgress = host.kiln.instanceDirectory("svc-inprogress")
                let abandoned = host.kiln.instanceDirectory("svc-abandoned")
                for directory in [inProgress, abandoned] {
                    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                }
                try OwnerMark.write(into: inProgress)
                // The mark of a process that is gone (no such pid).
                try "4194303 1".write(toFile: "\(abandoned)/owner", atomically: true, encoding: .utf8)
                let report = try await host.kiln.collectGarbage()
                #expect(FileManager.default.fileExists(atPath: inProgress), "gc removed a restore in progress: \(report)")
                #expect(!FileManager.default.fileExists(atPath: abandoned))
                #expect(report.directories == [abandoned], "\(report)")
                try FileManager.default.removeItem(atPath: inProgress)
            }
        }

        @Test func gcCleansUpAfterAKilledBakeAndKeepsRunningInstances() async throws {
            try await withTestHost { host in
                // A running instance that gc must keep.
                let manifest = try await host.kiln.bake(
                    BakeRequest(name: "keeper", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health")))
                let keeper = try await host.kiln.restoreOne(manifest)
                // Marked as this process's while it was made, then handed over: `kiln run`'s
                // copies outlive the command.
                #expect(!OwnerMark.isMarked(host.kiln.instanceDirectory(keeper.id)))

                // A bake killed with SIGKILL while it waits for a service that never gets ready.
                let pid = try Subprocess.spawn(
                    kilnBinary,
                    [
                        "bake", "doomed", "--port", "8080", "--ready", "/health", "--ready-timeout", "60", "--env", "HELLO_FAIL=never-ready",
                        "--app", packageRoot, "--", helloJdk,
                    ],
                    environment: host.environment, stdout: .null, stderr: .null)
                let deadline = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < deadline, try await host.kiln.runtime.list().count < 2 {
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await Task.sleep(for: .seconds(1))
                kill(pid, SIGKILL)
                _ = Subprocess.wait(pid)
                let before = try await host.leftovers()
                #expect(before.contains { $0.contains("doomed") }, "the killed bake should have left its container behind: \(before)")

                let report = try await host.kiln.collectGarbage()
                #expect(report.containers.contains { $0.hasPrefix("doomed-") } || report.directories.contains { $0.contains("doomed-") })
                #expect(!report.instances.contains(keeper.id))
                let after = try await host.leftovers()
                #expect(after.allSatisfy { !$0.contains("doomed") }, "gc left: \(after)")
                #expect(try await host.kiln.request(keeper, path: "/health").status == 200, "gc must keep a running instance")

                // An instance whose process died (killed behind kiln's back) is collected too.
                kill(keeper.pid, SIGKILL)
                try await Task.sleep(for: .milliseconds(500))
                let second = try await host.kiln.collectGarbage()
                #expect(second.instances == [keeper.id])
                #expect(host.kiln.instanceRecords().isEmpty)
                try await expectNoLeftovers(host)
            }
        }
    }
}
