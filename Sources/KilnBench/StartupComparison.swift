import Foundation
import KilnEngine
import KilnGateway
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
            try sandbox.prepare(manifest.sandbox, ownerMark: true)
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
    public func compareStartup(_ manifest: SnapshotManifest, runs: Int, progress: @Sendable (String) -> Void = { _ in }) async throws -> StartupComparison {
        guard (1...100).contains(runs) else {
            throw KilnError(.invalidArgument, "cannot measure \(runs) runs", hint: "pass --runs between 1 and 100")
        }
        var cold: [Double] = []
        var restored: [Double] = []
        for run in 1...runs {
            cold.append(try await withColdInstance(manifest, pollInterval: .milliseconds(5)) { _, coldStartMs in coldStartMs })
            progress("run \(run)/\(runs): cold start \(String(format: "%.0f", cold.last!)) ms")

            let record = try await restoreOne(manifest, pollInterval: .milliseconds(5))
            restored.append(record.firstResponseMs)
            try await stop(record)
            progress("run \(run)/\(runs): restore    \(String(format: "%.0f", record.firstResponseMs)) ms")
        }
        let coldSummary = SampleSummary(cold)
        let restoreSummary = SampleSummary(restored)
        return StartupComparison(
            snapshot: manifest.name, command: manifest.sandbox.command, coldStartMs: cold, restoreMs: restored,
            cold: coldSummary, restore: restoreSummary,
            speedup: restoreSummary.median > 0 ? coldSummary.median / restoreSummary.median : 0,
            notes: "warm page cache for both (the JDK, the app and the snapshot images were read moments before); same sandbox, same readiness check, same client")
    }
}
