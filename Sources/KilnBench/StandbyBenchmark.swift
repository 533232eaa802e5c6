import Foundation
import HTTPTypes
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

/// What `kiln bench standby` measures, side by side in one run: a standby copy's thaw against a
/// restore, a first request through the gateway at zero instances with one standby copy against
/// a request to a warm instance, and what frozen copies cost in memory.
public struct StandbyBenchmarkReport: Codable, Sendable {
    public var snapshot: String
    /// When the standby copies ran their afterRestore (nil in reports older than the choice: at the thaw).
    public var standbyMode: StandbyMode?
    /// Thaw (hostname, thaw, afterRestore, readiness; in ``StandbyMode/ready``, thaw and
    /// readiness) to first response, per run (ms).
    public var thawMs: [Double]
    public var thaw: SampleSummary
    /// Per thaw, the pages of the copy copied on write ahead of it, while it was frozen (what
    /// an earlier copy wrote first, ``FirstWrites``; 0 before any copy taught it, and in
    /// ``StandbyMode/ready``). Nil in reports older than the copying.
    public var copiedAheadPages: [Int]?
    /// The whole restore (prepare, runc restore, identity, afterRestore, readiness) to first response (ms).
    public var restoreMs: [Double]
    public var restore: SampleSummary
    /// restore p50 / thaw p50.
    public var restoreOverThaw: Double
    /// How long a standby copy ran between the end of `runc restore` and its freeze (ms).
    public var frozenAfter: SampleSummary
    /// Of ``frozenAfter``, the wait of a ``StandbyMode/ready`` copy for HotSpot's chunk-pool
    /// cleaner before its native-heap trim (ms), when its agent trimmed; nil otherwise (and in
    /// reports older than it). Off every request's path: it delays the replacement, not a thaw.
    public var trimWaitMs: Double? = nil
    /// Through `kiln serve`: the first request at zero running instances with one standby copy,
    /// and a request to the warm instance, each on a new connection (ms).
    public var gatewayAtZeroMs: [Double]
    public var gatewayAtZero: SampleSummary?
    public var gatewayWarmMs: [Double]
    public var gatewayWarm: SampleSummary?
    /// gatewayAtZero p50 / gatewayWarm p50 (target: at most 2).
    public var atZeroOverWarm: Double?
    /// Through `kiln serve`: a request to the warm instance after it sat idle as long as each
    /// standby copy waited frozen before its request (``Kiln/standbyWait``), on a new
    /// connection (ms). A request at zero always follows a pause; an instance that had been
    /// running all along would meet the request after the same pause, with its caches, TLB and
    /// the idle CPUs as cold (nil in reports older than it).
    public var gatewayIdleWarmMs: [Double]?
    public var gatewayIdleWarm: SampleSummary?
    /// gatewayAtZero p50 / gatewayIdleWarm p50.
    public var atZeroOverIdleWarm: Double?
    /// How far ``atZeroOverWarm`` and ``atZeroOverIdleWarm`` can be trusted from this run's
    /// samples: whether the run decides the target (nil in reports older than the intervals).
    public var atZeroOverWarmInterval: RatioInterval? = nil
    public var atZeroOverIdleWarmInterval: RatioInterval? = nil
    /// How the gateway said each request at zero was answered (`X-Kiln-Served-By`).
    public var atZeroServedBy: [String]
    /// One cold-started instance after the snapshot's warmup, settled.
    public var coldInstance: MemoryUsage
    /// Each of `copies` standby copies (no KSM), read once the last was frozen.
    public var copies: Int
    public var standbyCopies: [MemoryUsage]
    /// Mean PSS of one standby copy over the cold instance's PSS (target: at most 0.15).
    public var standbyPssOverCold: Double
    /// The load average when the run began: the machine is shared.
    public var loadAverage: String

    /// The standby issue's target for ``atZeroOverWarm``: at most this.
    public static let atZeroOverWarmTarget = 2.0

    /// The report as text.
    public var summary: String {
        func ms(_ value: Double) -> String { String(format: "%.1f ms", value) }
        func mib(_ bytes: Int64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        /// "p50 X (min Y, p90 Z, n=N[; note])": a machine this noisy needs the spread beside the median.
        func spread(_ sample: SampleSummary, _ note: String? = nil) -> String {
            "p50 \(ms(sample.p50)) (min \(ms(sample.min)), p90 \(ms(sample.p90)), n=\(sample.count)\(note.map { "; \($0)" } ?? ""))"
        }
        var ranBeforeFreeze = String(
            format: "  restore / thaw: %.1fx; a standby copy ran %.2f ms (p50) between runc restore and its freeze", restoreOverThaw,
            frozenAfter.p50)
        if let trimWaitMs {
            ranBeforeFreeze +=
                " (its afterRestore, warm-up requests and compilers settling, then "
                + String(format: "%.0f ms for HotSpot's chunk-pool cleaner before the native-heap trim)", trimWaitMs)
        }
        var lines = [
            "standby copies of '\(snapshot)', afterRestore \(standbyMode == .ready ? "ahead (--standby-mode ready)" : "at the thaw") (load average at start: \(loadAverage); a shared machine)",
            "  thaw -> first response:    \(spread(thaw))",
            "  restore -> first response: \(spread(restore))",
            ranBeforeFreeze,
        ]
        if let copied = copiedAheadPages, copied.contains(where: { $0 > 0 }) {
            let ahead = copied.filter { $0 > 0 }
            lines.append(
                "  \(ahead.count) of \(copied.count) thawed copies had \(ahead.max() ?? 0) pages (\(mib(Int64(ahead.max() ?? 0) * 4096))) copied on write ahead of their thaw, while frozen"
            )
        }
        if let atZero = gatewayAtZero, let warm = gatewayWarm, let ratio = atZeroOverWarm {
            lines.append(
                "  kiln serve, first request at zero with 1 standby: \(spread(atZero, "served by \(Set(atZeroServedBy).sorted().joined(separator: ", "))"))"
            )
            lines.append("  kiln serve, request to the warm instance:        \(spread(warm, "compiled, right after another"))")
            if let idle = gatewayIdleWarm {
                lines.append(
                    "  kiln serve, request to the warm instance idle:   p50 \(ms(idle.p50)) (after \(Int(Kiln.standbyWait.milliseconds)) ms without a request, as long as the standby copy waited)"
                )
            }
            var ratios = String(format: "  at zero / warm: %.2fx (target <= %g)", ratio, Self.atZeroOverWarmTarget)
            if let idleRatio = atZeroOverIdleWarm { ratios += String(format: "; at zero / warm after the same idle: %.2fx", idleRatio) }
            lines.append(ratios)
            if let interval = atZeroOverWarmInterval {
                var trust =
                    "  resampling the runs (\(interval.levelPercent) intervals): at zero / warm \(interval.range), "
                    + interval.verdict(atMost: Self.atZeroOverWarmTarget).words
                if let idle = atZeroOverIdleWarmInterval { trust += "; after the same idle \(idle.range)" }
                lines.append(trust)
            }
        }
        let mean = standbyCopies.isEmpty ? 0 : standbyCopies.reduce(Int64(0)) { $0 + $1.pssBytes } / Int64(standbyCopies.count)
        lines.append(
            "  memory: one cold-started instance PSS \(mib(coldInstance.pssBytes)); \(copies) standby copies PSS \(mib(mean)) each on average"
                + String(format: " = %.1f%% of it (target <= 15%%)", standbyPssOverCold * 100))
        return lines.joined(separator: "\n")
    }
}

extension Kiln {
    /// Runs the standby benchmark on a baked snapshot: `runs` thaws and restores in turn, `runs`
    /// first requests through an in-process gateway at zero instances with one standby copy,
    /// then a cold start and `copies` standby copies for their memory.
    public func benchmarkStandby(
        _ manifest: SnapshotManifest, runs: Int = 10, copies: Int = 8, path: String? = nil, gateway withGateway: Bool = true,
        mode: StandbyMode = .thaw, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> StandbyBenchmarkReport {
        guard (1...100).contains(runs), (1...64).contains(copies) else {
            throw KilnError(
                .invalidArgument, "bench standby takes runs 1-100 and copies 1-64", hint: "e.g. kiln bench standby hello --runs 10 --copies 8")
        }
        let load = ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
        var thawMs: [Double] = []
        var restoreMs: [Double] = []
        var frozenAfter: [Double] = []
        var trimmed = false
        var copiedAhead: [Int] = []
        progress("\(runs) thaws and \(runs) restores, alternating...")
        for _ in 0..<runs {
            let standby = try await restoreOne(manifest, shareMemory: false, standby: mode)
            frozenAfter.append(standby.frozenAfterMs ?? 0)
            trimmed = trimmed || standby.nativeHeapTrimmedBytes != nil
            copiedAhead.append(standby.copiedAheadPages ?? 0)
            do {
                // A standby copy waits for its request; it is not thawed the moment it froze.
                try await Task.sleep(for: Self.standbyWait)
                let thawed = try await thaw(standby, manifest: manifest)
                thawMs.append(thawed.thawMs ?? 0)
                try await stop(thawed)
            } catch {
                try? await stop(standby)
                throw error
            }
            let restored = try await restoreOne(manifest, pollInterval: .milliseconds(1), shareMemory: false)
            restoreMs.append(restored.firstResponseMs)
            try await stop(restored)
        }
        let thaw = SampleSummary(thawMs)
        let restore = SampleSummary(restoreMs)
        progress(String(format: "thaw p50 %.1f ms, restore p50 %.1f ms", thaw.p50, restore.p50))

        var atZero: [Double] = []
        var warm: [Double] = []
        var idleWarm: [Double] = []
        var servedBy: [String] = []
        if withGateway {
            (atZero, warm, idleWarm, servedBy) = try await measureGatewayAtZero(
                manifest, runs: runs, path: path ?? manifest.readiness.path, mode: mode, progress: progress)
        }

        progress("cold-starting one instance for the memory baseline...")
        let cold = try await measureColdInstance(manifest)
        progress("restoring \(copies) standby copies...")
        let records = try await restoreCopies(manifest, count: copies, shareMemory: false, standby: mode)
        let usages = records.map { MemoryUsage.of(pids: ProcessInspector.pids(inCgroup: $0.cgroupPath)) }
        for record in records { try await stop(record) }
        let meanPss = Double(usages.reduce(Int64(0)) { $0 + $1.pssBytes }) / Double(max(usages.count, 1))
        let atZeroSummary = atZero.isEmpty ? nil : SampleSummary(atZero)
        let warmSummary = warm.isEmpty ? nil : SampleSummary(warm)
        let idleWarmSummary = idleWarm.isEmpty ? nil : SampleSummary(idleWarm)
        return StandbyBenchmarkReport(
            snapshot: manifest.name, standbyMode: mode, thawMs: thawMs, thaw: thaw, copiedAheadPages: copiedAhead, restoreMs: restoreMs,
            restore: restore,
            restoreOverThaw: restore.p50 / max(thaw.p50, 0.001), frozenAfter: SampleSummary(frozenAfter),
            trimWaitMs: trimmed ? readyStandbyTrimWait.milliseconds : nil, gatewayAtZeroMs: atZero,
            gatewayAtZero: atZeroSummary, gatewayWarmMs: warm, gatewayWarm: warmSummary,
            atZeroOverWarm: atZeroSummary.flatMap { zero in warmSummary.map { zero.p50 / max($0.p50, 0.001) } },
            gatewayIdleWarmMs: idleWarm, gatewayIdleWarm: idleWarmSummary,
            atZeroOverIdleWarm: atZeroSummary.flatMap { zero in idleWarmSummary.map { zero.p50 / max($0.p50, 0.001) } },
            atZeroOverWarmInterval: RatioInterval(numerator: atZero, denominator: warm),
            atZeroOverIdleWarmInterval: RatioInterval(numerator: atZero, denominator: idleWarm), atZeroServedBy: servedBy,
            coldInstance: cold, copies: copies, standbyCopies: usages, standbyPssOverCold: meanPss / Double(max(cold.pssBytes, 1)),
            loadAverage: load)
    }

    /// How long each standby copy stays frozen before it is thawed, and the warm instance idle
    /// before the request it is compared with.
    static let standbyWait: Duration = .milliseconds(500)

    /// An in-process gateway keeping one standby copy and no running instance: each round waits
    /// until the standby copy is frozen and nothing runs, sends one request (which thaws it),
    /// waits until the replacement standby copy is frozen (its restore would otherwise compete
    /// with the warm requests for the CPU) and the thawed copy's JIT compilers are quiet, sends a
    /// few to the now warm instance, each on a new connection, and one more after the instance
    /// sat idle as long as the standby copy waited, and drains back to zero.
    private func measureGatewayAtZero(
        _ manifest: SnapshotManifest, runs: Int, path: String, mode: StandbyMode, progress: @escaping @Sendable (String) -> Void
    ) async throws -> (atZero: [Double], warm: [Double], idleWarm: [Double], servedBy: [String]) {
        let policy = ScalingPolicy(minInstances: 0, maxInstances: 1, concurrency: 8, keepAliveSeconds: 3600, standby: 1)
        // The standby policy for the measured function only: as the default policy it would have
        // the gateway keep a standby copy of every snapshot in the store from its start.
        let configuration = GatewayConfiguration(
            listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
            policies: [manifest.name: policy], maintenanceInterval: .milliseconds(20), standbyMode: mode)
        let server = buildGateway(kiln: self, configuration: configuration, stopsOnSignals: false, logger: logger)
        let gateway = server.gateway
        return try await withThrowingTaskGroup(of: (atZero: [Double], warm: [Double], idleWarm: [Double], servedBy: [String])?.self) { group in
            group.addTask {
                try await server.run()
                return nil
            }
            do {
                let port = await server.boundPorts().listen
                let target = "/\(manifest.name)\(path)"
                var atZero: [Double] = []
                var warm: [Double] = []
                var idleWarm: [Double] = []
                var servedBy: [String] = []
                progress("kiln serve: \(runs) first requests at zero instances with one standby copy...")
                for _ in 0..<runs {
                    try await waitForStandbyOnly(gateway, manifest.name)
                    try await Task.sleep(for: Self.standbyWait)
                    let (elapsed, way) = try await timedRequest(port: port, path: target)
                    atZero.append(elapsed)
                    servedBy.append(way)
                    try await waitForReplacement(gateway, manifest.name)
                    // Warm means compiled: the thawed copy's first requests set off compilations,
                    // which would otherwise slow the requests it is compared with.
                    if let id = try? gateway.function(manifest.name).instances.first?.id, let record = try? instance(id) {
                        _ = try await waitForIdleCompilers(inCgroup: record.cgroupPath)
                    }
                    for _ in 0..<3 { warm.append(try await timedRequest(port: port, path: target).ms) }
                    try await Task.sleep(for: Self.standbyWait)
                    idleWarm.append(try await timedRequest(port: port, path: target).ms)
                    _ = try gateway.drain(manifest.name)
                }
                await server.shutdown()
                try await group.waitForAll()
                return (atZero, warm, idleWarm, servedBy)
            } catch {
                await server.shutdown()
                try? await group.waitForAll()
                throw error
            }
        }
    }

    /// Until the function has no instance and one standby copy ready.
    private func waitForStandbyOnly(_ gateway: Gateway, _ function: String) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if let status = try? gateway.function(function), status.instances.isEmpty, status.stopping == 0, status.starting == 0,
                status.standby.ready == 1
            {
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw KilnError(.runtimeFailed, "the gateway had no standby copy of '\(function)' and no instance within 120 s")
    }

    /// Until the function's replacement standby copy is frozen and nothing else starts.
    private func waitForReplacement(_ gateway: Gateway, _ function: String) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if let status = try? gateway.function(function), status.starting == 0, status.standby.ready == 1, status.standby.starting == 0 {
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw KilnError(.runtimeFailed, "the gateway restored no replacement standby copy of '\(function)' within 120 s")
    }

    /// One GET on a new connection: how long it took (ms) and the `X-Kiln-Served-By` it came with.
    ///
    /// Connected, sent and read with blocking calls on a thread of its own, and timed there: what
    /// is measured is the gateway and the copy, not the client. The NIO client this used before
    /// hopped between threads on the way (the cooperative pool, an event loop, back), and a hop
    /// to a CPU that has been idle costs more on this VM (docs/restore-path.md, stop 31): in
    /// three runs in a row it added 0.3-0.9 ms to a request at zero, which always follows a
    /// pause, and at most 0.3 ms to a warm one (stop 34).
    private func timedRequest(port: Int, path: String) async throws -> (ms: Double, servedBy: String) {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        let (elapsed, reply) = try await onDedicatedThread { () throws -> (Double, InstanceHTTPClient.ReplyHead?) in
            let sent = ContinuousClock.now
            let fd = try LoadTarget.loopback(port: port).connectedSocket()
            defer { close(fd) }
            let reply = try InstanceHTTPClient.quickExchange(request, on: fd, until: sent + .seconds(60))
            return (sent.duration(to: .now).milliseconds, reply)
        }
        guard let reply else { throw KilnError(.requestFailed, "GET \(path) through the gateway got no answer within 60 s") }
        guard (200..<300).contains(reply.status) else {
            throw KilnError(.requestFailed, "GET \(path) through the gateway answered \(reply.status)")
        }
        return (elapsed, reply.fields[Gateway.servedByHeader.canonicalName] ?? "?")
    }
}
