import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

/// The snapshot store and the instance records, opened without the tools that make and restore
/// containers (``Kiln/openStore(paths:logger:toDo:)``): what `kiln ls`, `ps`, `rm` and `request`
/// need. Nothing here runs CRIU or kiln-shim, and runc only when it is installed (`ps` asks it
/// for each container's state; without it the state comes from /proc). Stopping an instance
/// does need runc: ``stop(_:toDo:)`` opens a whole ``Kiln`` for it, which says what is missing.
public struct KilnStoreAccess: Sendable {
    public var paths: KilnPaths
    public var store: SnapshotStore
    public var logger: Logger
    /// runc, if it is installed; only its container list is used.
    public var runtime: (any ContainerRuntime)?

    public init(paths: KilnPaths, store: SnapshotStore, logger: Logger, runtime: (any ContainerRuntime)?) {
        self.paths = paths
        self.store = store
        self.logger = logger
        self.runtime = runtime
    }

    /// runc as ``Kiln/open(paths:logger:toDo:)`` would find it, or nil when it is not installed
    /// (an explicit `$KILN_RUNC` that is not an executable counts as not installed). It is only
    /// asked for its container list, which needs neither CRIU nor the shim.
    static func installedRunc(paths: KilnPaths, logger: Logger) -> Runc? {
        guard let binary = try? Runc.locate(), FileManager.default.isExecutableFile(atPath: binary) else { return nil }
        return Runc(binary: binary, stateRoot: paths.runcRoot, criuPath: "criu", logDirectory: paths.logs, shimPath: "kiln-shim", logger: logger)
    }

    /// The snapshots in the store, by name.
    public func snapshots() throws -> [SnapshotManifest] { try store.list() }

    /// Removes a snapshot and any decompressed or decrypted copy of it.
    public func removeSnapshot(_ name: String) throws {
        let imageRoot = (try? store.load(name)).flatMap { store.imageRoot(of: $0) }
        try store.remove(name)
        DumpCache(root: paths.dumpCache, store: store).evict(name)
        try? FileManager.default.removeItem(atPath: "\(paths.firstWrites)/\(name)")
        if let imageRoot { store.removeImageRoot(imageRoot) }
    }

    /// Every instance kiln has a valid record of, as ``Kiln/instanceRecords()`` reads them.
    public func instanceRecords() -> [InstanceRecord] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: paths.instances)) ?? []
        return ids.sorted().compactMap { id in
            let path = "\(paths.instances)/\(id)/instance.json"
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            do {
                let record = try InstanceRecord.decode(data, source: path)
                guard record.id == id else {
                    logger.warning("skipping instance record that names another instance", metadata: ["path": "\(path)", "id": "\(record.id)"])
                    return nil
                }
                return record
            } catch {
                logger.warning("skipping unusable instance record", metadata: ["error": "\(error)"])
                return nil
            }
        }
    }

    /// The record of one instance; a unique prefix of its id will do.
    public func instance(_ idOrPrefix: String) throws -> InstanceRecord {
        let records = instanceRecords()
        if let exact = records.first(where: { $0.id == idOrPrefix }) { return exact }
        let matches = records.filter { $0.id.hasPrefix(idOrPrefix) }
        guard matches.count == 1 else {
            throw KilnError(
                .instanceNotFound,
                matches.isEmpty
                    ? "no instance '\(idOrPrefix)'"
                    : "'\(idOrPrefix)' matches \(matches.count) instances: \(matches.map(\.id).joined(separator: ", "))",
                hint: "'kiln ps' lists the running instances")
        }
        return matches[0]
    }

    /// `kiln ps`: each instance's state and memory. The state is runc's when runc is installed;
    /// otherwise "running" while the recorded pid is alive in the instance's cgroup, else "gone".
    public func status() async throws -> [InstanceStatus] {
        var containers: [String: ContainerState]?
        if let runtime {
            containers = Dictionary(try await runtime.list().map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        }
        let now = Date()
        return instanceRecords().map { record in
            let pids = ProcessInspector.pids(inCgroup: record.cgroupPath)
            var state = containers.map { $0[record.id]?.status ?? "gone" } ?? Self.stateFromProc(record, cgroupPids: pids)
            let frozen = CgroupFreezer(path: record.cgroupPath).isFrozen
            // runc calls a frozen container "paused"; kiln's frozen copies are its standby copies.
            if record.standby == true, state == "paused" || (state == "running" && frozen) { state = "standby" }
            return InstanceStatus(
                id: record.id, snapshot: record.snapshot, pid: record.pid, state: state, createdAt: record.createdAt,
                ageSeconds: now.timeIntervalSince(record.createdAt), memory: MemoryUsage.of(pids: pids.isEmpty ? [record.pid] : pids),
                restoreMs: record.restoreMs, firstResponseMs: record.firstResponseMs, sharesMemory: record.sharesMemory, address: record.address,
                frozen: frozen)
        }
    }

    /// An instance's state without runc: its recorded pid must be alive and in its cgroup (a
    /// reused pid elsewhere is not the instance).
    static func stateFromProc(_ record: InstanceRecord, cgroupPids: [Int32]) -> String {
        cgroupPids.contains(record.pid) && ProcessInspector.isAlive(record.pid) ? "running" : "gone"
    }

    /// Sends one HTTP request to an instance.
    public func request(_ record: InstanceRecord, method: String = "GET", path: String, body: [UInt8]? = nil) async throws -> HTTPReply {
        guard path.hasPrefix("/") else {
            throw KilnError(.invalidArgument, "request path '\(path)' must start with '/'", hint: "e.g. kiln request \(record.id) /greet")
        }
        do {
            var headers: [(String, String)] = []
            if body != nil { headers.append(("Content-Type", "application/json")) }
            return try await InstanceHTTPClient.send(.init(rawValue: method.uppercased()), path, to: record.endpoint, body: body, headers: headers)
        } catch {
            throw KilnError(
                .requestFailed, "\(method.uppercased()) \(path) to \(record.id) failed: \(error)",
                hint: "is it running? 'kiln ps' shows its state; its output is in \(record.logPath)")
        }
    }

    /// Stops instances: that takes runc (and the checks of a whole ``Kiln``), so it opens one.
    public func stop(_ records: [InstanceRecord], toDo action: String) async throws {
        guard !records.isEmpty else { return }
        let kiln = try Kiln.open(paths: paths, logger: logger, toDo: action)
        for record in records { try await kiln.stop(record) }
    }
}
