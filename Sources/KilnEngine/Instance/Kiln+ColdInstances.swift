import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

extension Kiln {
    /// Starts a snapshot's command from scratch in a fresh sandbox, as `kiln bake` does before
    /// its checkpoint, and records it as an instance (so `kiln ps` and `kiln stop` see it). The
    /// gateway's fallback when a restore fails: seconds instead of milliseconds, but an answer.
    /// On failure nothing of it is left behind but its output, kept in the logs directory.
    ///
    /// It joins the network the snapshot was baked on (or `network`; `none` for loopback only),
    /// as a restored copy does: a service that reached a database when it was baked must reach it
    /// when it starts from scratch too, and the gateway finds it at its address.
    public func startColdInstance(_ manifest: SnapshotManifest, network: String? = nil) async throws -> InstanceRecord {
        let id = makeInstanceID(for: manifest.name)
        var sandbox = makeSandbox(id: id, directory: instanceDirectory(id), purpose: "cold-starting '\(manifest.name)' as \(id)")
        let keptLog = "\(paths.logs)/\(id)-console.log"
        do {
            try await sandbox.prepare(
                // Marked as this process's while it is made (``handOver(_:)``).
                sandboxToColdStart(manifest), ownerMark: true,
                network: try networkPlan(network ?? manifest.network, snapshot: manifest.name))
            let started = ContinuousClock.now
            let container = try await sandbox.start()
            let coldStartMs = try await sandbox.waitUntilReady(
                port: manifest.sandbox.port, readiness: manifest.readiness, interval: .milliseconds(25),
                appDirectory: manifest.sandbox.appDirectory, keptLogPath: keptLog, since: started)
            let record = InstanceRecord(
                id: id, snapshot: manifest.name, pid: container.pid, shimPid: container.shimPid, port: manifest.sandbox.port,
                createdAt: Date(), networkNamespacePath: sandbox.instance.networkNamespacePath, cgroupPath: sandbox.instance.cgroupPath,
                logPath: sandbox.logPath, restoreMs: coldStartMs, firstResponseMs: coldStartMs, sharesMemory: false,
                network: sandbox.attachment)
            try save(record)
            handOver(id)
            return record
        } catch {
            _ = sandbox.keep(sandbox.logPath, at: keptLog)
            await sandbox.tearDown()
            throw KilnError.wrapping(error, as: .serviceExited).during(sandbox.purpose)
        }
    }
}
