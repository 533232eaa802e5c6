import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

extension Kiln {
    /// Starts a snapshot's command from scratch in a fresh sandbox, as `kiln bake` does before
    /// its checkpoint, and records it as an instance (so `kiln ps` and `kiln stop` see it). The
    /// gateway's fallback when a restore fails: seconds instead of milliseconds, but an answer.
    /// On failure nothing of it is left behind but its output, kept in the logs directory.
    public func startColdInstance(_ manifest: SnapshotManifest) async throws -> InstanceRecord {
        let id = makeInstanceID(for: manifest.name)
        var sandbox = makeSandbox(id: id, directory: instanceDirectory(id), purpose: "cold-starting '\(manifest.name)' as \(id)")
        let keptLog = "\(paths.logs)/\(id)-console.log"
        do {
            try sandbox.prepare(manifest.sandbox, ownerMark: ownsInstances)
            let started = ContinuousClock.now
            let container = try await sandbox.start()
            let coldStartMs = try await sandbox.waitUntilReady(
                port: manifest.sandbox.port, readiness: manifest.readiness, interval: .milliseconds(25),
                appDirectory: manifest.sandbox.appDirectory, keptLogPath: keptLog, since: started)
            let record = InstanceRecord(
                id: id, snapshot: manifest.name, pid: container.pid, shimPid: container.shimPid, port: manifest.sandbox.port,
                createdAt: Date(), networkNamespacePath: sandbox.instance.networkNamespacePath, cgroupPath: sandbox.instance.cgroupPath,
                logPath: sandbox.logPath, restoreMs: coldStartMs, firstResponseMs: coldStartMs, sharesMemory: false)
            try save(record)
            return record
        } catch {
            _ = sandbox.keep(sandbox.logPath, at: keptLog)
            await sandbox.tearDown()
            throw KilnError.wrapping(error, as: .serviceExited).during(sandbox.purpose)
        }
    }
}
