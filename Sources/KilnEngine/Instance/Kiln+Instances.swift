import CKilnShims
import Foundation
import KilnNetwork
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
        let (manifest, ms, _) = try loadVerifiedSaying(name)
        return (manifest, ms)
    }

    /// ``loadVerified(_:)``, also saying whether the files were hashed or trusted unchanged
    /// since an earlier verification (``VerificationRecord``).
    public func loadVerifiedSaying(_ name: String) throws -> (manifest: SnapshotManifest, ms: Double, trusted: Bool) {
        let manifest = try store.load(name)
        try checkHost(manifest)
        _ = try keys.key(for: manifest)
        let start = ContinuousClock.now
        let verification = try store.verifyAndSay(manifest)
        return (manifest, start.duration(to: .now).milliseconds, verification == .trusted)
    }

    /// Restores `count` copies of a verified snapshot, each in its own namespaces with its own
    /// hostname (its instance id), at most `parallel` at a time, and waits for each to answer.
    /// Copies are restored side by side because a restore mostly waits (on CRIU, the kernel, the
    /// first response): on two cores, 8 copies take a fraction of 8 restores in a row. If any
    /// fails, the copies that came up are left running and the first failure is thrown.
    /// `progress` sees each copy as it comes up; the result is in the order they came up.
    public func restore(
        _ manifest: SnapshotManifest, count: Int, parallel: Int = 4, readinessTimeout: Duration = .seconds(30), shareMemory: Bool? = nil,
        network: String? = nil,
        progress: @Sendable (InstanceRecord) -> Void = { _ in }
    ) async throws -> [InstanceRecord] {
        guard count >= 1, count <= 256 else {
            throw KilnError(.invalidArgument, "cannot restore \(count) copies", hint: "pass --count between 1 and 256")
        }
        let width = max(1, min(parallel, count))
        return try await withoutActuallyEscaping(progress) { progress in
            try await withThrowingTaskGroup(of: InstanceRecord.self) { group in
                var started = 0
                var records: [InstanceRecord] = []
                var firstFailure: (any Error)?
                func startOne() {
                    started += 1
                    group.addTask { try await restoreOne(manifest, readinessTimeout: readinessTimeout, shareMemory: shareMemory, network: network) }
                }
                while started < width { startOne() }
                while let result = await group.nextResult() {
                    switch result {
                    case .success(let record):
                        progress(record)
                        records.append(record)
                    case .failure(let error):
                        firstFailure = firstFailure ?? error
                    }
                    if started < count, firstFailure == nil { startOne() }
                }
                if let firstFailure { throw firstFailure }
                return records.sorted { $0.createdAt < $1.createdAt }
            }
        }
    }

    /// Restores one copy; on failure nothing of it is left behind (the CRIU log is kept).
    /// `shareMemory` overrides the snapshot's own setting; `network` the network it was baked on
    /// (`none` for loopback only); `pool` gives a namespace already on the network.
    public func restoreOne(
        _ manifest: SnapshotManifest, readinessTimeout: Duration = .seconds(30), pollInterval: Duration = .milliseconds(2),
        shareMemory: Bool? = nil, network: String? = nil, pool: PreparedNamespacePool? = nil
    ) async throws -> InstanceRecord {
        let sharing = shareMemory ?? manifest.shareMemory
        if sharing {
            // Copies are marked mergeable by kiln-shim whatever happens here; without ksmd they
            // just share nothing until it runs. Refusing the restore for that (kiln in a container,
            // where /sys is read-only, cannot start ksmd) would trade a memory saving for an outage.
            do {
                try PageMerging.enable()
            } catch let error as KilnError {
                logger.warning(
                    "copies will not share memory until ksmd runs", metadata: ["reason": "\(error.message)", "fix": "\(error.hint ?? "")"])
            }
        }
        InstanceHTTPClient.prepare()
        let id = makeInstanceID(for: manifest.name)
        var sandbox = makeSandbox(id: id, directory: instanceDirectory(id), purpose: "restoring snapshot '\(manifest.name)' as \(id)")
        do {
            let start = ContinuousClock.now
            if manifest.network != nil { sandbox.keepResolvConfMount() } else { sandbox.mountsNetworkResolvConf = false }
            try await sandbox.prepare(
                manifest.sandbox, ownerMark: ownsInstances, network: try networkPlan(network ?? manifest.network, snapshot: manifest.name, pool: pool)
            )
            // Only the first restore of a compressed or encrypted snapshot unpacks it (into tmpfs).
            let dump = try DumpCache(root: paths.dumpCache, store: store).directory(for: manifest, key: try keys.key(for: manifest))
            let prepared = ContinuousClock.now
            let container: ContainerProcess
            do {
                container = try await sandbox.restore(dump: dump, mergeMemory: sharing)
            } catch {
                throw RestoreAddressCheck.explain(error, attachment: sandbox.attachment)
            }
            let restored = ContinuousClock.now
            let criu = try? CRIURestoreStatistics.read(fromWorkDirectory: sandbox.workDirectory)
            try sandbox.assumeIdentity(hostname: id)
            if let attachment = sandbox.attachment,
                let socket = RestoreAddressCheck.strandedListeners(ofProcess: container.pid, address: attachment.ip).first
            {
                throw RestoreAddressCheck.stranded(("", socket.port, socket.address), attachment: attachment, details: [], logPath: sandbox.logPath)
            }
            let identified = ContinuousClock.now
            // The copy's CRaC afterRestore, in its new identity, before anything can reach it.
            var afterRestoreMs: Double?
            if manifest.sandbox.agent != nil, let jvm = manifest.agentProcess {
                let agent = try await sandbox.afterRestore(namespacePid: jvm, instance: id, hostname: id, timeout: readinessTimeout)
                afterRestoreMs = agent.elapsedMs
                for warning in agent.warnings { logger.warning("\(id): the agent says: \(warning)") }
            }
            let probing = ContinuousClock.now
            let outcome = try await sandbox.probe(
                port: manifest.sandbox.port, path: manifest.readiness.path, timeout: readinessTimeout, interval: pollInterval)
            guard outcome == .ready else {
                throw KilnError(
                    .restoreFailed, "the restored service did not answer \(manifest.readiness.path) (\(outcome))",
                    details: ProcessInspector.lastLines(ofFile: sandbox.logPath, count: 15), logPath: sandbox.logPath)
            }
            let endpoint = sandbox.endpoint(port: manifest.sandbox.port)
            if let hook = manifest.restoreHook {
                try await notifyRestored(hook, id: id, manifest: manifest, endpoint: endpoint, logPath: sandbox.logPath)
            }
            let answered = ContinuousClock.now
            logger.debug(
                "\(id): sandbox prepared in \(start.duration(to: prepared).milliseconds) ms, runc restore took \(prepared.duration(to: restored).milliseconds) ms, first response \(restored.duration(to: answered).milliseconds) ms later (afterRestore \(afterRestoreMs.map { String(format: "%.1f", $0) } ?? "-") ms)"
            )
            let record = InstanceRecord(
                id: id, snapshot: manifest.name, pid: container.pid, shimPid: container.shimPid, port: manifest.sandbox.port,
                createdAt: Date(), networkNamespacePath: sandbox.instance.networkNamespacePath, cgroupPath: sandbox.instance.cgroupPath,
                logPath: sandbox.logPath, restoreMs: start.duration(to: restored).milliseconds,
                firstResponseMs: start.duration(to: answered).milliseconds,
                sharesMemory: sharing, network: sandbox.attachment, afterRestoreMs: afterRestoreMs,
                phases: RestorePhases(
                    prepareMs: start.duration(to: prepared).milliseconds, runtimeMs: prepared.duration(to: restored).milliseconds,
                    criuRestoreMs: criu?.restoreMs, identityMs: restored.duration(to: identified).milliseconds,
                    afterRestoreMs: afterRestoreMs, firstResponseMs: probing.duration(to: answered).milliseconds))
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
            throw KilnError(
                .restoreFailed, "the restored service's restore hook POST \(hook) failed: \(error)",
                details: ProcessInspector.lastLines(ofFile: logPath, count: 15), logPath: logPath)
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

    /// Every instance kiln has a valid record of (``KilnStoreAccess/instanceRecords()``).
    public func instanceRecords() -> [InstanceRecord] { storeAccess.instanceRecords() }
    /// The record of one instance; a unique prefix of its id will do.
    public func instance(_ idOrPrefix: String) throws -> InstanceRecord { try storeAccess.instance(idOrPrefix) }

    /// `kiln ps`: each instance's state and memory (``KilnStoreAccess/status()``).
    public func status() async throws -> [InstanceStatus] { try await storeAccess.status() }

    /// Stops an instance and removes everything it had: container, cgroup, netns, directory.
    public func stop(_ record: InstanceRecord) async throws {
        var sandbox = adoptSandbox(id: record.id, directory: instanceDirectory(record.id), shimPid: record.shimPid)
        adoptNetwork(of: record, into: &sandbox)
        await sandbox.tearDown()
        if try await runtime.list().contains(where: { $0.id == record.id }) {
            throw KilnError(
                .runtimeFailed, "instance \(record.id) is still known to runc after delete", hint: "see 'runc --root \(paths.runcRoot) list'")
        }
    }

    /// Sends one HTTP request to an instance.
    public func request(_ record: InstanceRecord, method: String = "GET", path: String, body: [UInt8]? = nil) async throws -> HTTPReply {
        try await storeAccess.request(record, method: method, path: path, body: body)
    }
}
