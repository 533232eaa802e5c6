import Foundation
import KilnBench
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Integration {
    /// Standby copies for real (runc, CRIU, a JVM with kiln's CRaC agent: Fixtures/CracService.java):
    /// frozen in their cgroup, they get no CPU and no request; thawed, each gets its own identity;
    /// `kiln stop`, `kiln gc` and a gateway's SIGTERM leave no frozen cgroup and no process.
    @Suite("standby copies", .serialized)
    struct StandbyTests {
        /// The CPU time the cgroup's tasks used so far (ns), from cgroup v1's cpuacct.
        static func cpuUsage(_ record: InstanceRecord) -> UInt64? {
            (try? String(contentsOfFile: "/sys/fs/cgroup/cpuacct\(record.cgroupPath)/cpuacct.usage", encoding: .utf8))
                .flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }

        /// Every frozen cgroup under the test host's parent (freezer.state not THAWED).
        static func frozenCgroups(_ host: TestHost) -> [String] {
            let parent = "/sys/fs/cgroup/freezer\(host.paths.cgroupParent)"
            return ((try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []).filter { entry in
                let state = (try? String(contentsOfFile: "\(parent)/\(entry)/freezer.state", encoding: .utf8)) ?? ""
                return !state.hasPrefix("THAWED") && !state.isEmpty
            }
        }

        @Test func frozenCopiesUseNoCPUGetNoRequestAndThawIntoTheirOwnIdentity() async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(try CRaCAgentTests.request(host, mode: "ok", name: "crac"))
                let standbys = try await host.kiln.restore(manifest, count: 3, parallel: 3, standby: .thaw)
                for copy in standbys {
                    #expect(copy.standby == true)
                    #expect(CgroupFreezer(path: copy.cgroupPath).isFrozen, "\(copy.id) should be frozen")
                    print(
                        "standby \(copy.id): restored in \(String(format: "%.1f", copy.restoreMs)) ms, frozen \(String(format: "%.2f", copy.frozenAfterMs ?? -1)) ms after runc returned"
                    )
                    // Its agent was told nothing yet: no identity before the thaw.
                    #expect(!FileManager.default.fileExists(atPath: "\(host.kiln.instanceDirectory(copy.id))/agent/control/restore.done"))
                    // CRIU left it stopped until it was frozen: it ran nothing after its restore, so
                    // it maps only what the restore touched (~1 MiB; copies that ran until their
                    // freeze had 3-49 MiB of the snapshot mapped).
                    let rss = MemoryUsage.of(pids: [copy.pid]).rssBytes
                    #expect(rss > 0 && rss < 2 << 20, "standby \(copy.id) maps \(rss) bytes")
                }
                let states = Dictionary(try await host.kiln.status().map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
                for copy in standbys {
                    #expect(states[copy.id]?.state == "standby" && states[copy.id]?.frozen == true, "kiln ps: \(String(describing: states[copy.id]))")
                }

                // No CPU while frozen: the cgroup's CPU time does not move over a second.
                let before = standbys.map(Self.cpuUsage)
                try await Task.sleep(for: .seconds(1))
                let after = standbys.map(Self.cpuUsage)
                #expect(before.allSatisfy { $0 != nil } && before == after, "cpuacct.usage moved while frozen: \(before) -> \(after)")

                // No request is answered: the kernel may queue the connection, the service never sees it.
                let frozenOne = standbys[2]
                do {
                    let reply = try await InstanceHTTPClient.send(.GET, "/state", to: frozenOne.endpoint, timeout: .milliseconds(500))
                    Issue.record("a frozen copy answered \(reply.status)")
                } catch {}
                // A frozen copy stops cleanly (thawed first, then killed).
                try await host.kiln.stop(frozenOne)
                #expect(!ProcessInspector.isAlive(frozenOne.pid))

                var randoms: Set<String> = []
                var thawed: [InstanceRecord] = []
                for _ in 0..<2 {
                    let claimed = try #require(host.kiln.claimStandby(of: "crac"))
                    let copy = try await host.kiln.thaw(claimed, manifest: manifest)
                    thawed.append(copy)
                    #expect(copy.standby == nil)
                    let state = try await CRaCAgentTests.state(host, copy)
                    #expect(state["instance"] == copy.id, "kiln.instance of \(copy.id): \(state)")
                    #expect(state["host"] == copy.id, "InetAddress.getLocalHost() should name the copy: \(state)")
                    #expect(state["after"] == "2", "afterRestore ran once at the thaw (after the bake's rehearsal in the original): \(state)")
                    randoms.insert(state["random"] ?? "")
                    print(
                        "thawed \(copy.id): thaw to first response \(String(format: "%.2f", copy.thawMs ?? -1)) ms (afterRestore \(String(format: "%.2f", copy.afterRestoreMs ?? -1)) ms)"
                    )
                }
                #expect(randoms.count == 2, "two thawed copies drew the same SecureRandom bytes: \(randoms)")
                #expect(host.kiln.claimStandby(of: "crac") == nil, "every standby copy was handed out")
                #expect(Self.frozenCgroups(host).isEmpty)
                for copy in thawed { try await host.kiln.stop(copy) }
                try await expectNoLeftovers(host)
            }
        }

        /// The first copy of a snapshot to answer teaches kiln which image pages its copies write
        /// first; a standby copy restored afterwards has them copied while it is frozen (its own
        /// pages then, no longer the image's), still thaws into its own identity, and `kiln rm`
        /// forgets what was learned.
        @Test func standbyCopiesHaveWhatCopiesWriteFirstCopiedAhead() async throws {
            try await withTestHost { host in
                try #require(host.kiln.criu.mapsPageImages, "kiln's CRIU maps page images (patch 0001, installed by make setup)")
                let manifest = try await host.kiln.bake(try CRaCAgentTests.request(host, mode: "ok", name: "crac"))
                #expect(host.kiln.knownFirstWrites(of: manifest) == nil)
                let first = try await host.kiln.restoreOne(manifest)
                // A copy's compilers wait at SCHED_IDLE only until its first response.
                let firstCompilers = Self.compilerThreads(first)
                #expect(!firstCompilers.isEmpty && !firstCompilers.contains(where: CompilerScheduling.isIdle), "compilers of a running copy")
                let learned = try #require(host.kiln.knownFirstWrites(of: manifest), "the first copy to answer should teach what copies write first")
                #expect(learned.pageCount > 0)
                try await host.kiln.stop(first)

                let standby = try #require(try await host.kiln.restore(manifest, count: 1, parallel: 1, standby: .thaw).first)
                let copied = standby.copiedAheadPages ?? 0
                #expect(copied > 0 && copied <= learned.pageCount, "copied \(copied) of \(learned.pageCount) pages ahead")
                #expect(CgroupFreezer(path: standby.cgroupPath).isFrozen)
                let waiting = Self.compilerThreads(standby)
                #expect(!waiting.isEmpty && waiting.allSatisfy(CompilerScheduling.isIdle), "a frozen copy's compilers wait at SCHED_IDLE")
                #expect(try FirstWrites.read(ofProcess: standby.pid).pageCount >= copied, "the copied pages should be the frozen copy's own")
                #expect(!FileManager.default.fileExists(atPath: "\(host.kiln.instanceDirectory(standby.id))/agent/control/restore.done"))

                let claimed = try #require(host.kiln.claimStandby(of: "crac"))
                let copy = try await host.kiln.thaw(claimed, manifest: manifest)
                #expect(!Self.compilerThreads(copy).contains(where: CompilerScheduling.isIdle), "its compilers are back to normal once thawed")
                let state = try await CRaCAgentTests.state(host, copy)
                #expect(state["instance"] == copy.id && state["host"] == copy.id, "identity of \(copy.id): \(state)")
                #expect(state["after"] == "2", "afterRestore ran once, at the thaw: \(state)")
                print("thawed \(copy.id) with \(copied) pages copied ahead: thaw to first response \(String(format: "%.2f", copy.thawMs ?? -1)) ms")
                try await host.kiln.stop(copy)

                try host.kiln.removeSnapshot("crac")
                #expect(!FileManager.default.fileExists(atPath: host.kiln.firstWritesPath(of: "crac")))
                try await expectNoLeftovers(host)
            }
        }

        /// `--standby-mode ready`: each copy gets its identity and runs its afterRestore at its
        /// restore, then waits frozen (no CPU, no request); a thaw only resumes it, and two thawed
        /// copies still have their own identities. `kiln serve` hands one out at zero the same way.
        @Test func readyStandbyCopiesRunTheirAfterRestoreAheadAndKeepTheirOwnIdentity() async throws {
            try await withTestHost { host in
                let manifest = try await host.kiln.bake(try CRaCAgentTests.request(host, mode: "ok", name: "crac"))
                let standbys = try await host.kiln.restore(manifest, count: 2, parallel: 2, standby: .ready)
                for copy in standbys {
                    #expect(copy.standby == true && copy.standbyMode == .ready)
                    #expect(CgroupFreezer(path: copy.cgroupPath).isFrozen, "\(copy.id) should be frozen")
                    #expect(copy.afterRestoreMs != nil, "\(copy.id) should have run its afterRestore before its freeze")
                    #expect(FileManager.default.fileExists(atPath: "\(host.kiln.instanceDirectory(copy.id))/agent/control/restore.done"))
                    let compilers = Self.compilerThreads(copy)
                    #expect(!compilers.isEmpty && compilers.allSatisfy(CompilerScheduling.isIdle), "\(copy.id)'s compilers wait at SCHED_IDLE")
                    // Its agent answered trim.request: the JVM reported what it gave back.
                    #expect(copy.nativeHeapTrimmedBytes != nil, "\(copy.id)'s native heap was not trimmed before its freeze")
                    #expect(!FileManager.default.fileExists(atPath: "\(host.kiln.instanceDirectory(copy.id))/agent/control/trim.request"))
                }
                let before = standbys.map(Self.cpuUsage)
                try await Task.sleep(for: .seconds(1))
                let after = standbys.map(Self.cpuUsage)
                #expect(before.allSatisfy { $0 != nil } && before == after, "cpuacct.usage moved while frozen: \(before) -> \(after)")
                do {
                    let reply = try await InstanceHTTPClient.send(.GET, "/state", to: standbys[0].endpoint, timeout: .milliseconds(500))
                    Issue.record("a frozen ready copy answered \(reply.status)")
                } catch {}

                var randoms: Set<String> = []
                for _ in standbys {
                    let claimed = try #require(host.kiln.claimStandby(of: "crac"))
                    let copy = try await host.kiln.thaw(claimed, manifest: manifest)
                    #expect(copy.standby == nil && copy.thawMs != nil)
                    #expect(!Self.compilerThreads(copy).contains(where: CompilerScheduling.isIdle), "its compilers are back to normal once thawed")
                    let state = try await CRaCAgentTests.state(host, copy)
                    #expect(state["instance"] == copy.id && state["host"] == copy.id, "identity of \(copy.id): \(state)")
                    #expect(state["after"] == "2", "afterRestore ran once, at the restore, not again at the thaw: \(state)")
                    randoms.insert(state["random"] ?? "")
                    print("thawed ready copy \(copy.id): thaw to first response \(String(format: "%.2f", copy.thawMs ?? -1)) ms")
                    try await host.kiln.stop(copy)
                }
                #expect(randoms.count == 2, "two ready copies drew the same SecureRandom bytes: \(randoms)")

                // The mode belongs to standby copies only.
                let misuse = try runKiln(["run", "crac", "--standby-mode", "ready"], environment: host.environment)
                #expect(misuse.status != .exited(0) && misuse.stderr.contains("--standby-mode"), "\(misuse.stderr)")
                // `kiln run --standby` says what each ready copy's trim gave back.
                let cli = try runKiln(["run", "crac", "--standby", "1", "--standby-mode", "ready"], environment: host.environment)
                #expect(cli.status == .exited(0), "\(cli.stderr)")
                #expect(cli.stdout.contains("NATIVE HEAP TRIMMED"), "\(cli.stdout)")
                let trimmed = try #require(host.kiln.instanceRecords().first { $0.standby == true })
                let shown = ReportText.bytes(try #require(trimmed.nativeHeapTrimmedBytes, "\(trimmed.id) was frozen untrimmed"))
                #expect(cli.stdout.contains("\(trimmed.id) ") && cli.stdout.contains(" \(shown)"), "\(shown) for \(trimmed.id):\n\(cli.stdout)")
                #expect(try runKiln(["stop", trimmed.id], environment: host.environment).status == .exited(0))

                // kiln serve --standby-mode ready: the request at zero is answered by the ready copy.
                let gateway = try Self.serve(host, ["--standby", "crac=1", "--standby-mode", "ready"])
                let waiting = try await Self.waitForStandbys(host, count: 1)
                #expect(waiting.allSatisfy { $0.standbyMode == .ready && $0.afterRestoreMs != nil })
                try await Self.waitForGatewayStandby(admin: gateway.admin, function: "crac")
                let curl = try await Subprocess.run(
                    "curl", ["-s", "-D", "-", "-o", "/dev/null", "--max-time", "60", "http://127.0.0.1:\(gateway.port)/crac/state"])
                #expect(curl.stdout.lowercased().hasPrefix("http/1.1 200"), "\(curl.stdout)")
                #expect(curl.stdout.lowercased().contains("x-kiln-served-by: standby"), "\(curl.stdout)")
                // Handed out frozen, its request sent first: unfrozen and recorded as running
                // beside the request, not before it.
                let handedOut = try #require(waiting.first)
                var record = try host.kiln.instance(handedOut.id)
                for _ in 0..<100 where record.standby != nil {
                    try await Task.sleep(for: .milliseconds(20))
                    record = try host.kiln.instance(handedOut.id)
                }
                #expect(record.standby == nil && record.thawedAt != nil && record.thawMs != nil, "\(record)")
                #expect(!CgroupFreezer(path: record.cgroupPath).isFrozen)
                let compilers = Self.compilerThreads(record)
                #expect(
                    !compilers.isEmpty && !compilers.contains(where: CompilerScheduling.isIdle), "compilers back to normal after the first request")
                kill(gateway.pid, SIGTERM)
                #expect(Subprocess.wait(gateway.pid) == .exited(0))
                #expect(host.kiln.instanceRecords().isEmpty)
                #expect(Self.frozenCgroups(host).isEmpty)
                try await expectNoLeftovers(host)
            }
        }

        /// The thread ids of a copy's JIT compiler threads.
        static func compilerThreads(_ copy: InstanceRecord) -> [Int32] {
            CompilerActivity.compilerThreads(ofProcesses: ProcessInspector.pids(inCgroup: copy.cgroupPath)).map(\.tid)
        }

        /// `kiln serve` as a separate process with `args`; its pid and public port.
        static func serve(_ host: TestHost, _ args: [String]) throws -> (pid: Int32, port: Int, admin: Int) {
            let port = Int.random(in: 20000...30000)
            let admin = Int.random(in: 30001...40000)
            let pid = try Subprocess.spawn(
                kilnBinary, ["serve", "--listen", "127.0.0.1:\(port)", "--admin", "127.0.0.1:\(admin)"] + args,
                environment: host.environment, stdout: .null, stderr: .null)
            return (pid, port, admin)
        }

        /// Waits until the gateway on `admin` counts a standby copy of `function` ready (its admin
        /// API): a copy's record says standby before the gateway's pool has taken it in.
        static func waitForGatewayStandby(admin: Int, function: String, timeout: Duration = .seconds(90)) async throws {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                let reply = try await Subprocess.run("curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(admin)/functions/\(function)"])
                if let document = try? JSONSerialization.jsonObject(with: Data(reply.stdout.utf8)) as? [String: Any],
                    let standby = document["standby"] as? [String: Any], (standby["ready"] as? Int ?? 0) >= 1
                {
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            Issue.record("the gateway counted no standby copy of \(function) within \(timeout)")
        }

        /// Waits until `count` standby copies of the host are frozen (or the time is up).
        static func waitForStandbys(_ host: TestHost, count: Int, timeout: Duration = .seconds(90)) async throws -> [InstanceRecord] {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                let ready = host.kiln.instanceRecords().filter { $0.standby == true && CgroupFreezer(path: $0.cgroupPath).isFrozen }
                if ready.count >= count { return ready }
                try await Task.sleep(for: .milliseconds(100))
            }
            Issue.record("no \(count) standby copies within \(timeout)")
            return []
        }

        @Test func cliStandbyCopiesAndAKilledOrStoppedGatewayLeaveNoFrozenCgroup() async throws {
            try await withTestHost { host in
                _ = try await host.kiln.bake(try CRaCAgentTests.request(host, mode: "ok", name: "crac"))

                // The CLI: two standby copies, `kiln ps` shows them, `kiln thaw` hands one out.
                let run = try runKiln(["run", "crac", "--standby", "2", "--json"], environment: host.environment)
                #expect(run.status == .exited(0), "\(run.stderr)")
                let ps = try runKiln(["ps"], environment: host.environment)
                #expect(ps.stdout.components(separatedBy: "standby").count - 1 == 2, "kiln ps:\n\(ps.stdout)")
                let thaw = try runKiln(["thaw", "crac", "--json"], environment: host.environment)
                #expect(thaw.status == .exited(0), "\(thaw.stderr)")
                let handedOut = try SnapshotManifest.decoder.decode(InstanceRecord.self, from: Data(thaw.stdout.utf8))
                #expect(try await CRaCAgentTests.state(host, handedOut)["instance"] == handedOut.id)
                // gc keeps a live standby copy (runc calls it paused).
                let gc = try runKiln(["gc"], environment: host.environment)
                #expect(gc.status == .exited(0), "\(gc.stderr)")
                #expect(host.kiln.instanceRecords().count == 2)
                // `kiln stop` of the frozen one leaves no frozen cgroup.
                let frozen = try #require(host.kiln.instanceRecords().first { $0.standby == true })
                #expect(try runKiln(["stop", frozen.id], environment: host.environment).status == .exited(0))
                try await host.kiln.stop(handedOut)
                #expect(Self.frozenCgroups(host).isEmpty)

                // A gateway keeping one standby copy, SIGKILLed: its frozen copy is an orphan, which gc removes.
                let killed = try Self.serve(host, ["--standby", "crac=1"])
                let orphans = try await Self.waitForStandbys(host, count: 1)
                kill(killed.pid, SIGKILL)
                _ = Subprocess.wait(killed.pid)
                #expect(orphans.allSatisfy { ProcessInspector.isAlive($0.pid) })
                let collected = try runKiln(["gc"], environment: host.environment)
                #expect(collected.status == .exited(0), "\(collected.stderr)")
                #expect(orphans.allSatisfy { !ProcessInspector.isAlive($0.pid) }, "the killed gateway's standby copy should be gone")
                #expect(Self.frozenCgroups(host).isEmpty)
                try await expectNoLeftovers(host)

                // A gateway with one standby copy answers its first request at zero from it, labelled so; SIGTERM leaves nothing.
                let gateway = try Self.serve(host, ["--standby", "crac=1"])
                _ = try await Self.waitForStandbys(host, count: 1)
                try await Self.waitForGatewayStandby(admin: gateway.admin, function: "crac")
                let curl = try await Subprocess.run(
                    "curl", ["-s", "-D", "-", "-o", "/dev/null", "--max-time", "60", "http://127.0.0.1:\(gateway.port)/crac/state"])
                let headers = curl.stdout.lowercased()
                #expect(headers.hasPrefix("http/1.1 200"), "\(curl.stdout)")
                #expect(headers.contains("x-kiln-served-by: standby"), "\(curl.stdout)")
                // A replacement standby copy comes back in the background.
                _ = try await Self.waitForStandbys(host, count: 1)
                kill(gateway.pid, SIGTERM)
                #expect(Subprocess.wait(gateway.pid) == .exited(0))
                #expect(host.kiln.instanceRecords().isEmpty)
                #expect(Self.frozenCgroups(host).isEmpty)
                try await expectNoLeftovers(host)
            }
        }
    }
}
