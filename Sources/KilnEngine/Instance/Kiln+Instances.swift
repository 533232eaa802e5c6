import CKilnShims
import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

/// Timing of one restored copy.
public struct RestoredInstance: Sendable {
    public var record: InstanceRecord
}

extension Kiln {
    package func instanceDirectory(_ id: String) -> String { "\(paths.instances)/\(id)" }

    /// Loads a snapshot and verifies every image file against its manifest.
    /// Returns the manifest and how long verification took (ms).
    ///
    /// For an encrypted snapshot, the key it needs is looked up first (``keys``), so a missing
    /// or wrong key fails at once, naming the key id, before any file is read.
    public func loadVerified(_ name: String) throws -> (SnapshotManifest, Double) {
        let manifest = try store.load(name)
        _ = try keys.key(for: manifest)
        let start = ContinuousClock.now
        try store.verify(manifest)
        return (manifest, start.duration(to: .now).milliseconds)
    }

    /// Restores `count` copies of a verified snapshot one after another, each in its own
    /// namespaces with its own hostname (its instance id), and waits for each to answer.
    /// If one fails, the copies already running are left running and the error is thrown.
    public func restore(
        _ manifest: SnapshotManifest, count: Int, readinessTimeout: Duration = .seconds(30), shareMemory: Bool? = nil,
        progress: @Sendable (InstanceRecord) -> Void = { _ in }
    ) async throws -> [InstanceRecord] {
        guard count >= 1, count <= 256 else {
            throw KilnError(.invalidArgument, "cannot restore \(count) copies", hint: "pass --count between 1 and 256")
        }
        var records: [InstanceRecord] = []
        for _ in 0..<count {
            let record = try await restoreOne(manifest, readinessTimeout: readinessTimeout, shareMemory: shareMemory)
            progress(record)
            records.append(record)
        }
        return records
    }

    /// Restores one copy; on failure nothing of it is left behind (the CRIU log is kept).
    /// `shareMemory` overrides the snapshot's own setting.
    public func restoreOne(
        _ manifest: SnapshotManifest, readinessTimeout: Duration = .seconds(30), pollInterval: Duration = .milliseconds(2),
        shareMemory: Bool? = nil
    ) async throws -> InstanceRecord {
        let sharing = shareMemory ?? manifest.shareMemory
        if sharing {
            // Copies are marked mergeable by kiln-shim whatever happens here; without ksmd they
            // just share nothing until it runs. Refusing the restore for that (kiln in a container,
            // where /sys is read-only, cannot start ksmd) would trade a memory saving for an outage.
            do {
                try PageMerging.enable()
            } catch let error as KilnError {
                logger.warning("copies will not share memory until ksmd runs", metadata: ["reason": "\(error.message)", "fix": "\(error.hint ?? "")"])
            }
        }
        InstanceHTTPClient.prepare()
        let id = makeInstanceID(for: manifest.name)
        var sandbox = makeSandbox(id: id, directory: instanceDirectory(id), purpose: "restoring snapshot '\(manifest.name)' as \(id)")
        do {
            let start = ContinuousClock.now
            try sandbox.prepare(manifest.sandbox, ownerMark: ownsInstances)
            // Only the first restore of a compressed or encrypted snapshot unpacks it (into tmpfs).
            let images = try ImageCache(root: paths.imageCache, store: store).directory(for: manifest, key: try keys.key(for: manifest))
            let prepared = ContinuousClock.now
            let container = try await sandbox.restore(images: images, mergeMemory: sharing)
            let restored = ContinuousClock.now
            try sandbox.assumeIdentity(hostname: id)
            // The copy's CRaC afterRestore, in its new identity, before anything can reach it.
            var afterRestoreMs: Double?
            if manifest.sandbox.agent != nil, let jvm = manifest.agentProcess {
                let agent = try await sandbox.afterRestore(namespacePid: jvm, instance: id, hostname: id, timeout: readinessTimeout)
                afterRestoreMs = agent.elapsedMs
                for warning in agent.warnings { logger.warning("\(id): the agent says: \(warning)") }
            }
            let outcome = try await sandbox.probe(port: manifest.sandbox.port, path: manifest.readiness.path, timeout: readinessTimeout, interval: pollInterval)
            guard outcome == .ready else {
                throw KilnError(
                    .restoreFailed, "the restored service did not answer \(manifest.readiness.path) (\(outcome))",
                    details: ProcessInspector.lastLines(ofFile: sandbox.logPath, count: 15), logPath: sandbox.logPath)
            }
            let endpoint = sandbox.endpoint(port: manifest.sandbox.port)
            if let hook = manifest.restoreHook { try await notifyRestored(hook, id: id, manifest: manifest, endpoint: endpoint, logPath: sandbox.logPath) }
            let answered = ContinuousClock.now
            logger.debug("\(id): sandbox prepared in \(start.duration(to: prepared).milliseconds) ms, runc restore took \(prepared.duration(to: restored).milliseconds) ms, first response \(restored.duration(to: answered).milliseconds) ms later (afterRestore \(afterRestoreMs.map { String(format: "%.1f", $0) } ?? "-") ms)")
            let record = InstanceRecord(
                id: id, snapshot: manifest.name, pid: container.pid, shimPid: container.shimPid, port: manifest.sandbox.port,
                createdAt: Date(), networkNamespacePath: sandbox.instance.networkNamespacePath, cgroupPath: sandbox.instance.cgroupPath,
                logPath: sandbox.logPath, restoreMs: start.duration(to: restored).milliseconds, firstResponseMs: start.duration(to: answered).milliseconds,
                sharesMemory: sharing, afterRestoreMs: afterRestoreMs)
            try save(record)
            return record
        } catch {
            var failure = KilnError.wrapping(error, as: .restoreFailed)
            if let log = failure.logPath {
                failure.logPath = sandbox.keep(log, at: "\(paths.logs)/\(id)-\((log as NSString).lastPathComponent)")
            }
            await sandbox.tearDown()
            throw failure.during(sandbox.purpose)
        }
    }

    /// Tells a restored copy who it is now, through its restore hook, before anything else
    /// reaches it.
    private func notifyRestored(_ hook: String, id: String, manifest: SnapshotManifest, endpoint: ServiceEndpoint, logPath: String) async throws {
        let body = try JSONSerialization.data(withJSONObject: ["instance": id, "snapshot": manifest.name, "hostname": id], options: [.sortedKeys])
        let reply: HTTPReply
        do {
            reply = try await InstanceHTTPClient.send(.POST, hook, to: endpoint, body: Array(body), headers: [("Content-Type", "application/json")])
        } catch {
            throw KilnError(.restoreFailed, "the restored service's restore hook POST \(hook) failed: \(error)", details: ProcessInspector.lastLines(ofFile: logPath, count: 15), logPath: logPath)
        }
        guard (200..<300).contains(reply.status) else {
            throw KilnError(
                .restoreFailed, "the restored service's restore hook POST \(hook) answered HTTP \(reply.status)",
                hint: "the path given to 'kiln bake --on-restore' must answer POST with a 2xx", details: [reply.bodyText.prefix(300).description])
        }
    }

    package func save(_ record: InstanceRecord) throws {
        let data = try SnapshotManifest.encoder.encode(record)
        try data.write(to: URL(fileURLWithPath: "\(instanceDirectory(record.id))/instance.json"), options: .atomic)
    }

    /// Every instance kiln has a valid record of. A record that does not decode, or names an id
    /// other than its directory's, is skipped (and logged): `kiln gc` removes its directory.
    public func instanceRecords() -> [InstanceRecord] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: paths.instances)) ?? []
        return ids.sorted().compactMap { id in
            let path = "\(instanceDirectory(id))/instance.json"
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
                matches.isEmpty ? "no instance '\(idOrPrefix)'" : "'\(idOrPrefix)' matches \(matches.count) instances: \(matches.map(\.id).joined(separator: ", "))",
                hint: "'kiln ps' lists the running instances")
        }
        return matches[0]
    }

    /// `kiln ps`: each instance's state and memory.
    public func status() async throws -> [InstanceStatus] {
        let containers = Dictionary(try await runtime.list().map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let now = Date()
        return instanceRecords().map { record in
            let state = containers[record.id]?.status ?? "gone"
            let pids = ProcessInspector.pids(inCgroup: record.cgroupPath)
            return InstanceStatus(
                id: record.id, snapshot: record.snapshot, pid: record.pid, state: state, createdAt: record.createdAt,
                ageSeconds: now.timeIntervalSince(record.createdAt), memory: MemoryUsage.of(pids: pids.isEmpty ? [record.pid] : pids),
                restoreMs: record.restoreMs, firstResponseMs: record.firstResponseMs, sharesMemory: record.sharesMemory)
        }
    }

    /// Stops an instance and removes everything it had: container, cgroup, netns, directory.
    public func stop(_ record: InstanceRecord) async throws {
        var sandbox = adoptSandbox(id: record.id, directory: instanceDirectory(record.id), shimPid: record.shimPid)
        await sandbox.tearDown()
        if try await runtime.list().contains(where: { $0.id == record.id }) {
            throw KilnError(.runtimeFailed, "instance \(record.id) is still known to runc after delete", hint: "see 'runc --root \(paths.runcRoot) list'")
        }
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
            throw KilnError(.requestFailed, "\(method.uppercased()) \(path) to \(record.id) failed: \(error)", hint: "is it running? 'kiln ps' shows its state; its output is in \(record.logPath)")
        }
    }
}
