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
        let directory = instanceDirectory(id)
        let instance = sandboxInstance(id: id, directory: directory)
        let logPath = "\(directory)/console.log"
        let keptLog = "\(paths.logs)/\(id)-console.log"
        var shimPid: Int32?
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            if ownsInstances { try OwnerMark.write(into: directory) }
            try NetworkNamespace.create(at: instance.networkNamespacePath)
            try SandboxBundle.create(spec: manifest.sandbox, instance: instance)
            let (container, coldStartMs) = try await coldStart(
                manifest.sandbox, instance: instance, readiness: manifest.readiness, logPath: logPath, keptLogPath: keptLog, shimPid: &shimPid)
            let record = InstanceRecord(
                id: id, snapshot: manifest.name, pid: container.pid, shimPid: container.shimPid, port: manifest.sandbox.port,
                createdAt: Date(), networkNamespacePath: instance.networkNamespacePath, cgroupPath: instance.cgroupPath,
                logPath: logPath, restoreMs: coldStartMs, firstResponseMs: coldStartMs, sharesMemory: false)
            try save(record)
            return record
        } catch {
            try? FileManager.default.moveItem(atPath: logPath, toPath: keptLog)
            await tearDown(instance, directory: directory, shimPid: shimPid)
            let failure = (error as? KilnError) ?? KilnError(.serviceExited, "\(error)")
            throw failure.during("cold-starting '\(manifest.name)' as \(id)")
        }
    }
}
