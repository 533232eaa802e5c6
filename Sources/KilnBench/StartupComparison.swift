import Foundation
import KilnEngine
import KilnGateway
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem

/// A cold-started instance lent to a benchmark by ``Kiln/withColdInstance(_:pollInterval:_:)``.
struct ColdInstance: Sendable {
    var endpoint: ServiceEndpoint
    var cgroupPath: String
    var logPath: String
}

/// Cold start against restore of the same service, measured the same way in one run.
public struct StartupComparison: Codable, Sendable {
    public var snapshot: String
    public var command: [String]
    /// Start of `runc run` to the first 2xx of the readiness path, per run (ms).
    public var coldStartMs: [Double]
    /// Start of the restore (netns, bundle, `runc restore`) to the first 2xx, per run (ms).
    public var restoreMs: [Double]
    public var cold: SampleSummary
    public var restore: SampleSummary
    /// Median cold start over median restore.
    public var speedup: Double
    /// How far ``speedup`` can be trusted from this run's samples (nil in older reports).
    public var speedupInterval: RatioInterval? = nil
    /// The network the restores of ``restoreMs`` ran on (a namespace from the snapshot's pool
    /// of prepared namespaces each), or nil for a loopback-only snapshot.
    public var network: String?
    /// For a networked snapshot: the same restores with `--network none` (loopback only),
    /// interleaved with the networked ones, to show what the network costs (ms).
    public var restoreLoopbackMs: [Double]?
    public var restoreLoopback: SampleSummary?
    /// Median networked restore minus median loopback-only restore (ms).
    public var networkCostMs: Double?
    /// Another snapshot restored in the same run (`kiln bench startup --versus`), e.g. the same
    /// service baked `--no-agent`: its restores, interleaved with this one's, on its own network.
    public var versus: String?
    public var restoreVersusMs: [Double]?
    public var restoreVersus: SampleSummary?
    /// Median restore minus median restore of ``versus`` (ms): what the agent costs, when the
    /// two differ only in it.
    public var versusDifferenceMs: Double?
    /// The agent's afterRestore in each restore of this snapshot (ms; part of ``restoreMs``), when
    /// it was baked with the agent.
    public var afterRestoreMs: [Double]?
    public var afterRestore: SampleSummary?
    /// Where each restore of ``restoreMs`` and of ``restoreVersusMs`` spent its time, per run:
    /// what a difference between the two is made of.
    public var restorePhases: [RestorePhases]?
    public var restoreVersusPhases: [RestorePhases]?
    /// The caches policy, stated with the figures.
    public var notes: String
}

extension Kiln {
    /// Cold-starts the snapshot's service in a fresh sandbox of its own, waits for it to answer,
    /// runs `body` with its endpoint and cold-start time (ms), and tears it all down again.
    func withColdInstance<T: Sendable>(
        _ manifest: SnapshotManifest, pollInterval: Duration = .milliseconds(25),
        _ body: (_ instance: ColdInstance, _ coldStartMs: Double) async throws -> T
    ) async throws -> T {
        let id = makeInstanceID(for: manifest.name) + "-cold"
        var sandbox = makeSandbox(id: id, directory: "\(paths.bakes)/\(id)", purpose: "cold-starting '\(manifest.name)' to measure it")
        do {
            try sandbox.prepare(sandboxToColdStart(manifest), ownerMark: true)
            let started = ContinuousClock.now
            _ = try await sandbox.start()
            let ms = try await sandbox.waitUntilReady(
                port: manifest.sandbox.port, readiness: manifest.readiness, interval: pollInterval, appDirectory: manifest.sandbox.appDirectory,
                since: started)
            let cold = ColdInstance(
                endpoint: sandbox.endpoint(port: manifest.sandbox.port), cgroupPath: sandbox.instance.cgroupPath, logPath: sandbox.logPath)
            let result = try await body(cold, ms)
            await sandbox.tearDown()
            return result
        } catch {
            await sandbox.tearDown()
            throw error
        }
    }

    /// Measures `runs` cold starts and `runs` restores of a snapshot, interleaved (cold, restore,
    /// cold, ...) so drift on a noisy machine hits both alike. Both are timed to the first 2xx
    /// answer to the snapshot's readiness path, with the same client polling every 5 ms.
    /// Every container is removed before the next run starts.
    public func compareStartup(
        _ manifest: SnapshotManifest, runs: Int, versus other: SnapshotManifest? = nil, progress: @Sendable (String) -> Void = { _ in }
    ) async throws -> StartupComparison {
        guard (1...100).contains(runs) else {
            throw KilnError(.invalidArgument, "cannot measure \(runs) runs", hint: "pass --runs between 1 and 100")
        }
        var cold: [Double] = []
        var restored: [Double] = []
        var loopback: [Double] = []
        var versus: [Double] = []
        var afterRestore: [Double] = []
        var phases: [RestorePhases] = []
        var versusPhases: [RestorePhases] = []
        // A networked snapshot's copies take a namespace prepared ahead of demand, as the gateway's do.
        let pool = try await namespacePool(for: manifest, capacity: 2)
        var otherPool: PreparedNamespacePool?
        func releasePools() async {
            await pool?.drain()
            await otherPool?.drain()
            removePoolNamespaceDirectory()
        }
        do {
            if let other { otherPool = try await namespacePool(for: other, capacity: 2) }
            for run in 1...runs {
                cold.append(try await withColdInstance(manifest, pollInterval: .milliseconds(5)) { _, coldStartMs in coldStartMs })
                progress("run \(run)/\(runs): cold start \(String(format: "%.0f", cold.last!)) ms")
                // The restores of a run take turns going first: the first one after a cold start
                // meets the machine still reclaiming that JVM's memory, and would pay for it alone.
                enum Restore { case networked, loopback, versus }
                var order: [Restore] = pool == nil ? [.networked] : [.networked, .loopback]
                if other != nil { order.append(.versus) }
                let turn = (run - 1) % order.count
                order = Array(order[turn...]) + Array(order[..<turn])
                for kind in order {
                    switch kind {
                    case .networked, .loopback:
                        let networked = kind == .networked
                        if networked, let pool { await Self.waitUntilReady(pool) }
                        let record = try await restoreOne(
                            manifest, pollInterval: .milliseconds(5), network: networked ? nil : NetworkChoice.none,
                            pool: networked ? pool : nil)
                        try await stop(record)
                        if networked {
                            restored.append(record.firstResponseMs)
                            if let ms = record.afterRestoreMs { afterRestore.append(ms) }
                            if let recorded = record.phases { phases.append(recorded) }
                            progress(
                                "run \(run)/\(runs): restore    \(String(format: "%.1f", record.firstResponseMs)) ms\(pool == nil ? "" : " (network \(manifest.network ?? ""), \(record.address ?? "?"))")"
                            )
                        } else {
                            loopback.append(record.firstResponseMs)
                            progress("run \(run)/\(runs): restore    \(String(format: "%.1f", record.firstResponseMs)) ms (network none)")
                        }
                    case .versus:
                        guard let other else { continue }
                        if let otherPool { await Self.waitUntilReady(otherPool) }
                        let record = try await restoreOne(other, pollInterval: .milliseconds(5), pool: otherPool)
                        try await stop(record)
                        versus.append(record.firstResponseMs)
                        if let recorded = record.phases { versusPhases.append(recorded) }
                        progress("run \(run)/\(runs): restore    \(String(format: "%.1f", record.firstResponseMs)) ms (\(other.name))")
                    }
                }
            }
        } catch {
            await releasePools()
            throw error
        }
        await releasePools()
        let versusSummary = other == nil ? nil : SampleSummary(versus)
        let coldSummary = SampleSummary(cold)
        let restoreSummary = SampleSummary(restored)
        let loopbackSummary = pool == nil ? nil : SampleSummary(loopback)
        return StartupComparison(
            snapshot: manifest.name, command: manifest.sandbox.command, coldStartMs: cold, restoreMs: restored,
            cold: coldSummary, restore: restoreSummary,
            speedup: restoreSummary.median > 0 ? coldSummary.median / restoreSummary.median : 0,
            speedupInterval: RatioInterval(numerator: cold, denominator: restored, center: { SampleSummary($0).median }),
            network: pool == nil ? nil : manifest.network, restoreLoopbackMs: pool == nil ? nil : loopback, restoreLoopback: loopbackSummary,
            networkCostMs: loopbackSummary.map { restoreSummary.median - $0.median },
            versus: other?.name, restoreVersusMs: other == nil ? nil : versus, restoreVersus: versusSummary,
            versusDifferenceMs: versusSummary.map { restoreSummary.median - $0.median },
            afterRestoreMs: afterRestore.isEmpty ? nil : afterRestore, afterRestore: afterRestore.isEmpty ? nil : SampleSummary(afterRestore),
            restorePhases: phases, restoreVersusPhases: other == nil ? nil : versusPhases,
            notes:
                "warm page cache for both (the JDK, the app and the snapshot images were read moments before); same sandbox, same readiness check, same client"
                + (pool == nil ? "" : "; networked restores take a namespace prepared ahead of demand (pool of 2)")
                + (CgroupMount.current().contains(where: \.favorsDynamicModifications)
                    ? "; cgroup favordynmods on (make setup)" : "; cgroup favordynmods off: each restore waits ~10 ms more (kiln doctor)"))
    }

    /// Waits (up to 5 s) until `pool` has a namespace ready: the steady state the pool is for.
    static func waitUntilReady(_ pool: PreparedNamespacePool) async {
        let deadline = ContinuousClock.now + .seconds(5)
        while await pool.readyCount == 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
