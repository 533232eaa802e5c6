import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// What `kiln gc` removed.
public struct GarbageReport: Codable, Sendable, Equatable {
    public var instances: [String] = []
    public var containers: [String] = []
    public var networkNamespaces: [String] = []
    public var directories: [String] = []
    public var cgroups: [String] = []
    /// Addresses, veths and firewall rules of sandboxes that are gone.
    public var network: [String] = []

    public var isEmpty: Bool { self == GarbageReport() }
}

/// Marks a scratch directory with the process that owns it, so a later kiln can tell a bake in
/// progress from one a crashed kiln left behind. The start time guards against pid reuse.
package enum OwnerMark {
    static let fileName = "owner"

    package static func write(into directory: String) throws {
        // A runtime file (on the path of every restore a gateway makes): no fsync.
        try RuntimeFile.replace("\(directory)/\(fileName)", with: Data("\(getpid()) \(startTime(of: getpid()) ?? "?")".utf8))
    }

    /// Takes the mark away: the directory's instance no longer lives only as long as the
    /// process that made it (``Kiln/handOver(_:)``).
    static func remove(from directory: String) {
        unlink("\(directory)/\(fileName)")
    }

    package static func isMarked(_ directory: String) -> Bool {
        FileManager.default.fileExists(atPath: "\(directory)/\(fileName)")
    }

    /// Whether the process that marked `directory` still runs (unmarked counts as dead).
    static func ownerIsAlive(_ directory: String) -> Bool {
        guard let text = try? String(contentsOfFile: "\(directory)/\(fileName)", encoding: .utf8) else { return false }
        let fields = text.split(separator: " ").map(String.init)
        guard fields.count == 2, let pid = Int32(fields[0]), ProcessInspector.isAlive(pid) else { return false }
        return startTime(of: pid) == fields[1]
    }

    /// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
    static func startTime(of pid: Int32) -> String? {
        guard let fields = ProcessInspector.statFields(of: pid) else { return nil }
        return fields.count > 19 ? String(fields[19]) : nil
    }
}

extension Kiln {
    /// Called once a copy's record is saved: a copy is marked as this process's while it is
    /// made (so `kiln gc` leaves a restore in progress alone), and keeps the mark only if this
    /// process owns its instances (``ownsInstances``: a gateway's die with it). `kiln run`'s
    /// copies outlive the command.
    package func handOver(_ id: String) {
        if !ownsInstances { OwnerMark.remove(from: instanceDirectory(id)) }
    }

    /// Removes what a crashed or killed kiln left behind: records of instances whose process is
    /// gone, instances of a gateway that is gone, containers and network namespaces nothing
    /// owns, scratch directories of bakes whose kiln is dead, half-written snapshots, and empty
    /// cgroups. Running instances, and bakes and restores in progress (their kiln is alive), are
    /// left alone.
    public func collectGarbage() async throws -> GarbageReport {
        var report = GarbageReport()
        let containers = try await runtime.list()
        // A standby copy is "paused" (frozen) for runc: alive, and kept like a running one.
        let running = Set(containers.filter { $0.status == "running" || $0.status == "paused" }.map(\.id))

        var keep = Set<String>()
        for record in instanceRecords() {
            let directory = instanceDirectory(record.id)
            // An instance a gateway owned dies with it: nothing would route to it any more.
            let orphaned = OwnerMark.isMarked(directory) && !OwnerMark.ownerIsAlive(directory)
            if running.contains(record.id), ProcessInspector.isAlive(record.pid), !orphaned {
                keep.insert(record.id)
            } else {
                var sandbox = adoptSandbox(id: record.id, directory: directory)
                adoptNetwork(of: record, into: &sandbox)
                await sandbox.tearDown()
                report.instances.append(record.id)
            }
        }
        // Instance directories without a readable record are half-made restores: a killed
        // kiln's, or one still being made by a live kiln (marked as its own until its record is
        // saved, ``Kiln/handOver(_:)``), which is kept.
        for id in (try? FileManager.default.contentsOfDirectory(atPath: paths.instances)) ?? []
        where !keep.contains(id) && !report.instances.contains(id) {
            if OwnerMark.ownerIsAlive(instanceDirectory(id)) {
                keep.insert(id)
                continue
            }
            var sandbox = adoptSandbox(id: id, directory: instanceDirectory(id))
            await sandbox.tearDown()
            report.directories.append(instanceDirectory(id))
        }
        var bakesInProgress = false
        for id in (try? FileManager.default.contentsOfDirectory(atPath: paths.bakes)) ?? [] {
            let directory = "\(paths.bakes)/\(id)"
            if OwnerMark.ownerIsAlive(directory) {
                keep.insert(id)
                bakesInProgress = true
            } else {
                var sandbox = adoptSandbox(id: id, directory: directory)
                await sandbox.tearDown()
                report.directories.append(directory)
            }
        }
        // Image root filesystems no snapshot refers to (a replaced version, a bake that was
        // killed), unless a live bake is unpacking it or a running copy still has it as its root.
        let referenced = Set(((try? store.list()) ?? []).compactMap { store.imageRoot(of: $0) })
        let inUse = Set(
            keep.compactMap { id in
                (try? Data(contentsOf: URL(fileURLWithPath: "\(instanceDirectory(id))/bundle/config.json")))
                    .flatMap { try? JSONDecoder().decode(OCIConfig.self, from: $0).root.path }
            })
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: store.rootfsDirectory)) ?? [] where !keep.contains(entry) {
            let path = "\(store.rootfsDirectory)/\(entry)"
            guard !referenced.contains(path), !inUse.contains(path) else { continue }
            store.removeImageRoot(path)
            report.directories.append(path)
        }
        // Plain dumps of encrypted bakes (`.bake-<id>`) and half-made cache copies, in tmpfs.
        let cache = DumpCache(root: paths.dumpCache, store: store)
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: paths.dumpCache)) ?? [] where entry.hasPrefix(".bake-") {
            guard !keep.contains(String(entry.dropFirst(".bake-".count))) else { continue }
            try? FileManager.default.removeItem(atPath: "\(paths.dumpCache)/\(entry)")
            report.directories.append("\(paths.dumpCache)/\(entry)")
        }
        report.directories += cache.removeAbandonedStaging()
        for container in try await runtime.list() where !keep.contains(container.id) {
            try? await runtime.delete(id: container.id)
            report.containers.append(container.id)
        }
        let pools = sweepNamespacePools()
        report.networkNamespaces += pools.removed
        for pin in (try? FileManager.default.contentsOfDirectory(atPath: paths.networkNamespaces)) ?? []
        where !keep.contains(pin) && !pin.hasPrefix("pool-") {
            NetworkNamespace.remove(at: "\(paths.networkNamespaces)/\(pin)")
            report.networkNamespaces.append(pin)
        }
        report.network = await collectNetworkGarbage(liveIDs: keep.union(pools.live))
        if !bakesInProgress {
            let staging = "\(store.root)/staging"
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: staging)) ?? [] {
                try? FileManager.default.removeItem(atPath: "\(staging)/\(entry)")
                report.directories.append("\(staging)/\(entry)")
            }
        }
        for (hierarchy, entry) in CgroupHierarchy.children(of: paths.cgroupParent) where !keep.contains(entry) {
            // rmdir succeeds only on an empty cgroup, which is exactly the leftover kind.
            if rmdir("\(hierarchy)\(paths.cgroupParent)/\(entry)") == 0 {
                report.cgroups.append("\((hierarchy as NSString).lastPathComponent)\(paths.cgroupParent)/\(entry)")
            }
        }
        // The parent itself, once empty (runc makes it again for the next container).
        for hierarchy in CgroupHierarchy.hierarchies() { rmdir(hierarchy + paths.cgroupParent) }
        return report
    }
}
