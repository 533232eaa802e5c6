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

/// Watches /proc for a process and SIGKILLs it a little after it appears: a CRIU or runc killed
/// in the middle of its work, at a moment chosen by the test rather than by luck.
struct ProcessAssassin {
    /// The process to kill: its name (`comm`) and words its command line (or its parent's, for
    /// a CRIU that runc started as `criu swrk`) must contain.
    var name: String
    var markers: [String]

    func commandLine(_ pid: Int32) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").replacingOccurrences(of: "\0", with: " ")
    }

    func parent(of pid: Int32) -> Int32? {
        ProcessInspector.statFields(of: pid).flatMap { $0.count > 1 ? Int32($0[1]) : nil }
    }

    func find() -> Int32? {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), ProcessInspector.isAlive(pid),
                let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                comm.trimmingCharacters(in: .whitespacesAndNewlines) == name
            else { continue }
            let lines = commandLine(pid) + " " + (parent(of: pid).map(commandLine) ?? "")
            if markers.allSatisfy(lines.contains) { return pid }
        }
        return nil
    }

    /// Kills the process `delay` after it is first seen; returns its pid, or nil if it did not
    /// appear within `timeout`. One that is gone before `delay` (runc asks a short-lived CRIU for
    /// its version first) is skipped. Polls on a thread of its own, every millisecond.
    func kill(after delay: Duration, timeout: Duration = .seconds(90)) async -> Int32? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let deadline = ContinuousClock.now + timeout
                var skipped = Set<Int32>()
                while ContinuousClock.now < deadline {
                    if let pid = find(), !skipped.contains(pid) {
                        usleep(UInt32(delay.milliseconds * 1000))
                        if ProcessInspector.isAlive(pid), find() == pid {
                            Glibc.kill(pid, SIGKILL)
                            continuation.resume(returning: pid)
                            return
                        }
                        skipped.insert(pid)
                    }
                    usleep(1000)
                }
                continuation.resume(returning: nil)
            }
        }
    }
}

extension Integration {
    /// Faults injected while kiln works: a clear error each time, the last good snapshot still
    /// restores, and nothing is left behind.
    @Suite("faults: killed CRIU and runc, crashes, a full disk, a vanished snapshot, a killed gateway", .serialized)
    struct FaultInjectionTests {
        func bakeRequest(_ host: TestHost, name: String, replace: Bool = false, environment: [String: String] = [:], warmup: [WarmupStep] = [])
            -> BakeRequest
        {
            BakeRequest(
                name: name, sandbox: host.sandbox([helloJdk], environment: environment),
                readiness: ReadinessCheck(path: "/health", timeoutSeconds: 30),
                warmup: warmup, compact: false, replace: replace)
        }

        /// Restores `name`, checks it answers, and stops it.
        func expectRestores(_ host: TestHost, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let (manifest, _) = try host.kiln.loadVerified(name)
            let record = try await host.kiln.restoreOne(manifest)
            #expect(try await host.kiln.request(record, path: "/greet").status == 200, sourceLocation: sourceLocation)
            try await host.kiln.stop(record)
        }

        @Test(arguments: ["criu", "runc"])
        func killedMidCheckpointKeepsThePreviousSnapshot(victim: String) async throws {
            try await withTestHost { host in
                let good = try await host.kiln.bake(bakeRequest(host, name: "svc"))
                // CRIU is runc's child (`criu swrk`): both are found through runc's command line.
                let assassin = ProcessAssassin(name: victim, markers: [host.paths.runcRoot, "checkpoint"])
                // CRIU's dump of this small service can be over within 40 ms of its start (a CI run
                // of stop 29: the bake succeeded); 10 ms still outlives runc's short version probe.
                async let killed = assassin.kill(after: .milliseconds(victim == "criu" ? 10 : 40))
                do {
                    _ = try await host.kiln.bake(bakeRequest(host, name: "svc", replace: true))
                    Issue.record("the bake succeeded although \(victim) was killed")
                } catch let error as KilnError {
                    #expect([.checkpointFailed, .runtimeFailed].contains(error.code), "\(error)")
                    #expect(error.message.contains("checkpoint"), "\(error)")
                }
                #expect(await killed != nil, "no \(victim) was seen during the checkpoint")
                // The snapshot that was there before is untouched and restores.
                #expect(try host.kiln.store.load("svc").files == good.files)
                try await expectRestores(host, "svc")
                try await expectNoLeftovers(host)
            }
        }

        @Test(arguments: ["criu", "runc"])
        func killedMidRestoreLeavesNothingAndTheNextRestoreWorks(victim: String) async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(bakeRequest(host, name: "svc"))
                // A CRIU killed half-way leaves runc waiting for ever: kiln gives up on it (60 s by
                // default, less here) and kills what is left.
                var kiln = host.kiln
                var runc = try #require(kiln.runtime as? Runc)
                runc.operationTimeout = .seconds(10)
                kiln.runtime = runc
                let assassin = ProcessAssassin(name: victim, markers: [host.paths.runcRoot, "restore"])
                // CRIU maps the dump and lists tmpfs mounts now: its part of a restore is a few
                // tens of milliseconds, so it is killed 2 ms after it is seen; runc's whole restore
                // is ~55 ms on a quiet machine (and the scan of /proc that finds it takes some of
                // that), so it is killed 15 ms after it is seen, while its CRIU works.
                async let killed = assassin.kill(after: .milliseconds(victim == "criu" ? 2 : 15))
                do {
                    let record = try await kiln.restoreOne(manifest)
                    Issue.record("the restore succeeded although \(victim) was killed")
                    try await kiln.stop(record)
                } catch let error as KilnError {
                    #expect(error.code == .restoreFailed, "\(error)")
                    #expect(error.action.contains("restoring snapshot 'svc'"), "\(error)")
                }
                #expect(await killed != nil, "no \(victim) was seen during the restore")
                #expect(host.kiln.instanceRecords().isEmpty)
                try await expectNoLeftovers(host)
                try await expectRestores(host, "svc")
                try await expectNoLeftovers(host)
            }
        }

        @Test func serviceCrashingDuringWarmupIsReported() async throws {
            try await withTestHost { host in
                let error = try await #require(throws: KilnError.self) {
                    _ = try await host.kiln.bake(
                        bakeRequest(
                            host, name: "crashy", environment: ["HELLO_FAIL": "crash-on-greet"], warmup: [WarmupStep(count: 20, path: "/greet")]))
                }
                #expect(error.code == .warmupFailed, "\(error)")
                #expect(error.details.contains { $0.contains("crash-on-greet") }, "the service's last words should be quoted: \(error)")
                #expect(!host.kiln.store.exists("crashy"))
                try await expectNoLeftovers(host)
            }
        }

        @Test func fullDiskWhileWritingASnapshotKeepsTheOtherOnes() async throws {
            try await withTestHost { host in
                // Room for one snapshot of hello-jdk but not two: a tmpfs sized from a real one.
                let probe = try await host.kiln.bake(bakeRequest(host, name: "measure"))
                let small = "\(host.scratch)/small"
                try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
                let size = probe.sizeBytes + probe.sizeBytes / 2
                let mounted = try await Subprocess.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0700", "tmpfs", small])
                try #require(mounted.status.isSuccess, "\(mounted.stderr)")
                // Unmounted before the leak check; this is for a test that stops half-way.
                defer { umount2(small, Int32(MNT_DETACH)) }
                var logger = host.kiln.logger
                logger.logLevel = .critical
                let kiln = try Kiln.open(
                    paths: KilnPaths(store: "\(small)/store", state: host.paths.state, cgroupParent: host.paths.cgroupParent), logger: logger,
                    toDo: "test")
                let firstBake = try await kiln.bake(bakeRequest(host, name: "first"))
                // Bakes of one service differ in size (the heap and JIT state at the dump): what is
                // left free is made half of this snapshot's size, whatever the first probe's was.
                var fs = statvfs()
                try #require(statvfs(small, &fs) == 0)
                let free = Int64(fs.f_bavail) * Int64(fs.f_frsize)
                let filler = free - firstBake.sizeBytes / 2
                if filler > 0 {
                    let fd = open("\(small)/filler", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
                    try #require(fd >= 0)
                    let allocated = posix_fallocate(fd, 0, off_t(filler))
                    close(fd)
                    try #require(allocated == 0, "posix_fallocate: \(allocated)")
                }

                let error = try await #require(throws: KilnError.self) { _ = try await kiln.bake(bakeRequest(host, name: "second")) }
                #expect(error.code == .storeFull, "\(error)")
                #expect(error.message.contains("\(small)/store") && error.message.contains("free"), "\(error)")
                #expect(error.hint?.contains("KILN_STORE") == true)
                #expect(!kiln.store.exists("second"))
                #expect(
                    ((try? FileManager.default.contentsOfDirectory(atPath: "\(small)/store/staging")) ?? []).isEmpty,
                    "the partial snapshot must be removed")
                // The snapshot already there still restores.
                let (first, _) = try kiln.loadVerified("first")
                let record = try await kiln.restoreOne(first)
                #expect(try await kiln.request(record, path: "/greet").status == 200)
                try await kiln.stop(record)
                #expect(umount2(small, 0) == 0)
                try await expectNoLeftovers(host)
            }
        }

        @Test func snapshotDeletedWhileARestoreReadsIt() async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(bakeRequest(host, name: "doomed"))
                let directory = "\(host.paths.store)/snapshots/doomed"
                // As soon as CRIU starts reading the images, the snapshot goes away under it.
                let remover = Task.detached {
                    let criu = ProcessAssassin(name: "criu", markers: [host.paths.runcRoot, "restore"])
                    let deadline = ContinuousClock.now + .seconds(60)
                    while ContinuousClock.now < deadline, criu.find() == nil { usleep(500) }
                    try? FileManager.default.removeItem(atPath: directory)
                }
                do {
                    // Either CRIU had every image open already (a restore needs no more than
                    // that) or the restore fails cleanly; both are fine, a leak is not.
                    let record = try await host.kiln.restoreOne(manifest)
                    #expect(try await host.kiln.request(record, path: "/greet").status == 200)
                    try await host.kiln.stop(record)
                } catch let error as KilnError {
                    #expect(error.code == .restoreFailed, "\(error)")
                }
                await remover.value
                #expect(!FileManager.default.fileExists(atPath: directory))
                let gone = try #require(throws: KilnError.self) { _ = try host.kiln.loadVerified("doomed") }
                #expect(gone.code == .snapshotNotFound)
                try await expectNoLeftovers(host)
            }
        }

        /// `kiln serve` as a separate process on a free loopback port.
        struct ServeProcess {
            var pid: Int32
            var port: Int

            static func start(_ host: TestHost) throws -> ServeProcess {
                let port = Int.random(in: 20000...40000)
                let pid = try Subprocess.spawn(
                    kilnBinary, ["serve", "--listen", "127.0.0.1:\(port)", "--admin", "127.0.0.1:0", "--keep-alive", "300"],
                    environment: host.environment, stdout: .null, stderr: .null)
                return ServeProcess(pid: pid, port: port)
            }

            /// GET through the gateway with curl; the HTTP status, or nil when nothing answered.
            func get(_ path: String) -> Int? {
                let output = try? Subprocess.run(
                    "curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", "http://127.0.0.1:\(port)\(path)"])
                return output.flatMap { Int($0.stdout) }.flatMap { $0 == 0 ? nil : $0 }
            }

            /// Waits for the gateway to answer at all (404 for an unknown function is an answer).
            func waitUntilListening() async throws {
                let deadline = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < deadline {
                    if get("/no-such-function/") != nil { return }
                    try await Task.sleep(for: .milliseconds(100))
                }
                Issue.record("kiln serve did not listen on \(port)")
            }
        }

        @Test func killedGatewayIsCleanedUpWhenItIsRestarted() async throws {
            try await withTestHost { host in
                _ = try await host.kiln.bake(bakeRequest(host, name: "fn"))
                let first = try ServeProcess.start(host)
                try await first.waitUntilListening()
                #expect(first.get("/fn/greet") == 200)
                let orphan = try #require(host.kiln.instanceRecords().first)

                kill(first.pid, SIGKILL)
                _ = Subprocess.wait(first.pid)
                // Its instance runs on with nobody to route to it or stop it.
                #expect(ProcessInspector.isAlive(orphan.pid))

                // The next gateway removes it before it starts, and serves.
                let second = try ServeProcess.start(host)
                try await second.waitUntilListening()
                #expect(!ProcessInspector.isAlive(orphan.pid), "the killed gateway's instance should be gone")
                #expect(!host.kiln.instanceRecords().contains { $0.id == orphan.id })
                #expect(second.get("/fn/greet") == 200)
                #expect(host.kiln.instanceRecords().count == 1)

                // SIGTERM drains and stops everything.
                kill(second.pid, SIGTERM)
                #expect(Subprocess.wait(second.pid) == .exited(0))
                #expect(host.kiln.instanceRecords().isEmpty)
                try await expectNoLeftovers(host)
            }
        }
    }
}
