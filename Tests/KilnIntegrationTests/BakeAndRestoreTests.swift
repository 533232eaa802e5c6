import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

extension Integration {
    @Suite("bake and restore real JVM services", .serialized)
    struct BakeAndRestoreTests {
        /// `make setup` (which every test run follows) leaves a cgroup mount with favordynmods,
        /// and `kiln doctor` sees it: without it each restore waits an RCU grace period when runc
        /// moves CRIU into the container's cgroups. It also installs kiln's CRIU, whose patches'
        /// options the doctor finds in use, and leaves kiln's default state directory on tmpfs.
        @Test func theSetupLeavesRestoresFastAndDoctorSaysSo() async throws {
            try await withTestHost { host in
                let doctor = try runKiln(["doctor", "--json"], environment: host.environment)
                let report = try JSONSerialization.jsonObject(with: Data(doctor.stdout.utf8)) as? [String: Any]
                let checks = try #require(report?["checks"] as? [[String: Any]], "\(doctor.stdout)")
                let moves = try #require(checks.first { $0["name"] as? String == "cgroup moves" }, "\(checks)")
                #expect(moves["status"] as? String == "ok", "\(moves)")
                #expect(CgroupMount.current().contains { $0.favorsDynamicModifications })
                // And its CRIU is kiln's, every patch's option in use.
                let options = try #require(checks.first { $0["name"] as? String == "criu options" }, "\(checks)")
                #expect(options["status"] as? String == "ok", "\(options)")

                // The default state directory is on tmpfs (make setup mounts one where /run is on
                // a disk), and the doctor tells a state directory on tmpfs from one that is not:
                // this test's own, under /tmp, is on whatever /tmp is.
                #expect(
                    DumpCache.isInMemory("/run/kiln"),
                    "make setup mounts a tmpfs over an empty /run/kiln; if it warned that /run/kiln holds state, stop kiln's instances, remove it and run make setup again"
                )
                var defaultState = host.environment
                defaultState["KILN_STATE"] = nil
                let defaultReport = try runKiln(["doctor", "--json"], environment: defaultState)
                let defaultChecks = try #require(
                    (try JSONSerialization.jsonObject(with: Data(defaultReport.stdout.utf8)) as? [String: Any])?["checks"] as? [[String: Any]])
                for (checks, directory) in [(defaultChecks, "/run/kiln"), (checks, host.paths.state)] {
                    let state = try #require(checks.first { $0["name"] as? String == "state directory" }, "\(checks)")
                    #expect(state["status"] as? String == (DumpCache.isInMemory(directory) ? "ok" : "warning"), "\(directory): \(state)")
                    #expect((state["detail"] as? String)?.hasPrefix(directory) == true, "\(state)")
                }
            }
        }

        /// The dependency-free sample: bake, restore two copies, check they answer as themselves.
        @Test func jdkSampleBakesAndRestoresTwoDistinctCopies() async throws {
            try await withTestHost { host in
                // CRIU mounts cgroup2 to read cgroups at the dump; without kiln's patch 0004 that
                // mount turned the host's cgroup2 options (favordynmods, nsdelegate...) off.
                let cgroup2Before = CgroupMount.current().filter { $0.type == "cgroup2" }
                let manifest = try await host.kiln.bake(
                    BakeRequest(
                        name: "jdk", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 60),
                        warmup: [WarmupStep(count: 20, path: "/greet")]))
                #expect(manifest.compacted, "a full GC should run in the JVM before the dump")
                #expect(manifest.sizeBytes > 1 << 20)
                #expect(manifest.files.contains { $0.path.hasPrefix("pages-") })
                #expect(manifest.host.criuVersion == "4.2.1")
                // The warm-up went on past its 20 requests until the JIT compilers were idle
                // (BakeRequest.warmupSettleLimit, 90 s by default: hello-jdk's settle in ~7 s).
                let settleRequests = try #require(manifest.timings.jitSettleRequests, "a JVM's warm-up should settle its JIT compilers")
                #expect(settleRequests > 0)
                #expect(manifest.timings.jitSettled == true, "hello-jdk's compilers should be idle within the default 90 s")

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
                    // The warmup requests happened before the dump: the restored copy remembers
                    // them, the ones sent while its compilers settled too.
                    #expect((id?["requests"] as? Int ?? 0) > 20 + settleRequests)
                }
                #expect(hostnames.count == 2)
                // The JVM options kiln adds reached the baked JVM and live on in its copies: the
                // code cache sweeper's threshold, which a restore's deoptimizations must not cross.
                let jvm = try #require(copies.first)
                let jcmd =
                    (try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(jvm.pid)/exe") as NSString)
                    .deletingLastPathComponent + "/jcmd"
                let flags = try await Subprocess.run(jcmd, [String(jvm.pid), "VM.flags"])
                #expect(flags.stdout.contains("-XX:SweeperThreshold=10"), "\(flags.stdout)\n\(flags.stderr)")
                // kiln's CRIU patch 0005: each restore caught the copy's threads leaving the
                // restorer by tracing their system calls, not with hardware breakpoints (perf
                // events, the first of which after a quiet second waits for an RCU grace period).
                #expect(host.kiln.criu.avoidsBreakpoints, "make setup installs kiln's CRIU with patch 0005 (--no-breakpoints)")
                for copy in copies {
                    let log = try String(contentsOfFile: "\(host.kiln.paths.instances)/\(copy.id)/work/restore.log", encoding: .utf8)
                    #expect(log.contains("Force no-breakpoints restore"), "\(copy.id)'s restore should not set breakpoints")
                }
                #expect(
                    CgroupMount.current().filter { $0.type == "cgroup2" } == cgroup2Before,
                    "a bake and a restore leave the host's cgroup2 options as they were")
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
                let manifest = try await host.kiln.bake(
                    BakeRequest(
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
                let created = try await host.kiln.request(
                    copies[0], method: "POST", path: "/owners",
                    body: Array(#"{"firstName":"Kiln","lastName":"Zzyzx","city":"Madison","telephone":"6085551023","address":"1 Oven St"}"#.utf8))
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
}

extension Integration {
    @Suite("copies share memory", .serialized, .enabled(if: PageMerging.isAvailable, "needs a kernel with KSM"))
    struct MemorySharingTests {
        /// KSM merging is on for copies of a snapshot baked with it (every mapping offered to KSM),
        /// off when a run switches it off, and off by default (copies share the mapped page images).
        @Test func mergingIsOffByDefaultAndOnWhenAsked() async throws {
            try await withTestHost { host in
                let shared = try await host.kiln.bake(
                    BakeRequest(
                        name: "shared", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"),
                        warmup: [WarmupStep(count: 20, path: "/greet")], shareMemory: true))
                #expect(shared.shareMemory)
                let copies = try await host.kiln.restore(shared, count: 2)
                for copy in copies {
                    #expect(copy.sharesMemory)
                    #expect(PageMerging.mergesAll(pid: copy.pid), "the restored JVM should have ksm_merge_any set")
                }
                #expect(PageMerging.stats().running)
                let unshared = try await host.kiln.restoreOne(shared, shareMemory: false)
                #expect(!unshared.sharesMemory)
                #expect(!PageMerging.mergesAll(pid: unshared.pid))

                let isolated = try await host.kiln.bake(
                    BakeRequest(
                        name: "isolated", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health")))
                #expect(!isolated.shareMemory)
                let loner = try await host.kiln.restoreOne(isolated)
                #expect(!PageMerging.mergesAll(pid: loner.pid))
                #expect(try await host.kiln.request(loner, path: "/health").status == 200)

                // Two copies with identical memory converge to sharing most of it. With the page
                // images mapped (kiln's CRIU patch), what a copy has not written is shared through
                // the page cache from the first instant, and KSM has only the pages written since
                // the restore left to merge.
                let mapped = host.kiln.criu.mapsPageImages
                let wanted: Int64 = mapped ? 1 << 20 : 8 << 20
                let deadline = ContinuousClock.now + .seconds(60)
                var merged: Int64 = 0
                while ContinuousClock.now < deadline {
                    merged = copies.map { PageMerging.mergedBytes(pid: $0.pid) }.min() ?? 0
                    if merged > wanted { break }
                    try await Task.sleep(for: .milliseconds(500))
                }
                #expect(merged > wanted, "each copy should have more than \(wanted >> 20) MiB merged within a minute, had \(merged >> 20) MiB")
                if mapped {
                    for copy in copies {
                        let usage = MemoryUsage.of(pids: [copy.pid])
                        #expect(
                            usage.pssBytes * 4 < usage.rssBytes * 3,
                            "a mapped copy shares its untouched pages: PSS \(usage.pssBytes >> 20) MiB of RSS \(usage.rssBytes >> 20) MiB")
                    }
                }
                for record in host.kiln.instanceRecords() { try await host.kiln.stop(record) }
                try await expectNoLeftovers(host)
            }
        }

        /// A compressed snapshot is smaller at rest, restores (decompressing once into the tmpfs
        /// cache, then from the cache) and answers; removing it drops the cache.
        @Test func compressedSnapshotIsSmallerAndRestores() async throws {
            try await withTestHost { host in
                let compressed = try await host.kiln.bake(
                    BakeRequest(
                        name: "zst", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"), compress: true))
                #expect(compressed.compression == .zstd)
                #expect(compressed.files.contains { $0.path.hasPrefix("pages-") && $0.path.hasSuffix(".img.zst") })
                #expect(!compressed.files.contains { $0.path.hasPrefix("pages-") && $0.path.hasSuffix(".img") })
                let plain = try await host.kiln.bake(
                    BakeRequest(
                        name: "plain", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health")))
                #expect(
                    compressed.sizeBytes * 2 < plain.sizeBytes,
                    "zstd should at least halve a JVM's pages: \(compressed.sizeBytes) vs \(plain.sizeBytes)")
                let (verified, _) = try host.kiln.loadVerified("zst")
                let copies = try await host.kiln.restore(verified, count: 2)
                for copy in copies {
                    #expect(try await host.kiln.request(copy, path: "/greet").status == 200)
                    try await host.kiln.stop(copy)
                }
                let cached = (try? FileManager.default.contentsOfDirectory(atPath: host.paths.dumpCache)) ?? []
                #expect(cached.contains { $0.hasPrefix("zst-") })
                try host.kiln.removeSnapshot("zst")
                let afterRemove = (try? FileManager.default.contentsOfDirectory(atPath: host.paths.dumpCache)) ?? []
                #expect(!afterRemove.contains { $0.hasPrefix("zst-") })
                try await expectNoLeftovers(host)
            }
        }

        /// A compacted snapshot (full GC, heap shrink, malloc trim before the dump) still restores
        /// and answers. How much smaller it is varies with the heap and malloc state at the dump,
        /// so the sizes are compared by `kiln bench memory`, not asserted here.
        @Test func compactedSnapshotStillRestoresAndAnswers() async throws {
            try await withTestHost { host in
                var request = BakeRequest(
                    name: "compacted", sandbox: host.sandbox([helloSpring]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 120),
                    warmup: [WarmupStep(count: 200, path: "/greet"), WarmupStep(count: 100, path: "/owners/1")], compact: true)
                // `--warmup-settle 0`: the warm-up ends with its steps.
                request.warmupSettleLimit = .zero
                let compacted = try await host.kiln.bake(request)
                #expect(compacted.timings.jitSettleMs == nil && compacted.timings.jitSettleRequests == nil)
                #expect(compacted.compacted, "kiln should have found the JVM and compacted it")
                #expect(compacted.timings.compactMs > 0)
                // Its periodic tasks had their first runs in the original (Kiln.minimumTimeReady).
                let uptime = try #require(compacted.timings.serviceUptimeMs)
                let floor = compacted.timings.coldStartMs + Kiln.minimumTimeReady.milliseconds
                #expect(uptime >= floor, "dumped \(uptime) ms after the service started, ready after \(compacted.timings.coldStartMs) ms")
                let copy = try await host.kiln.restoreOne(compacted)
                let reply = try await host.kiln.request(copy, path: "/owners/2")
                #expect(reply.status == 200)
                #expect(reply.bodyText.contains("pets"))
                try await host.kiln.stop(copy)
                try await expectNoLeftovers(host)
            }
        }
    }
}
