import CKilnShims
import Foundation
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

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
        network: String? = nil, standby: StandbyMode? = nil,
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
                    group.addTask {
                        try await restoreOne(
                            manifest, readinessTimeout: readinessTimeout, shareMemory: shareMemory, network: network, standby: standby)
                    }
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
    ///
    /// With `standby`, the copy is recorded as a standby copy (``InstanceRecord/standby``) and
    /// frozen in its cgroup: in ``StandbyMode/thaw``, right after the runtime's restore, before
    /// its identity, afterRestore and readiness steps; in ``StandbyMode/ready``, after them.
    /// ``thaw(_:manifest:readinessTimeout:pollInterval:savingRecord:)`` takes it from there.
    public func restoreOne(
        _ manifest: SnapshotManifest, readinessTimeout: Duration = .seconds(30), pollInterval: Duration = .milliseconds(2),
        shareMemory: Bool? = nil, network: String? = nil, pool: PreparedNamespacePool? = nil, standby: StandbyMode? = nil
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
        let purpose = standby != nil ? "restoring a standby copy of '\(manifest.name)' as \(id)" : "restoring snapshot '\(manifest.name)' as \(id)"
        // Only a copy frozen before its identity step is left stopped by CRIU (and continued into
        // the freezer): a ready one runs its steps first, like any copy.
        var sandbox = makeSandbox(id: id, directory: instanceDirectory(id), purpose: purpose, standby: standby == .thaw)
        do {
            let start = ContinuousClock.now
            if manifest.network != nil { sandbox.keepResolvConfMount() } else { sandbox.mountsNetworkResolvConf = false }
            let (spec, dump) = try sandboxToRun(manifest)
            try await sandbox.prepare(
                // Marked as this process's while it is made (``handOver(_:)``).
                spec, ownerMark: true, network: try networkPlan(network ?? manifest.network, snapshot: manifest.name, pool: pool),
                // A standby copy is frozen the moment runc returns, not after a network still
                // being attached: it runs no longer than it must with the bake's identity.
                attachDuringRestore: standby != .thaw)
            let prepared = ContinuousClock.now
            let container: ContainerProcess
            do {
                container = try await sandbox.restore(dump: dump, mergeMemory: sharing)
            } catch {
                throw RestoreAddressCheck.explain(error, attachment: sandbox.attachment)
            }
            let restored = ContinuousClock.now
            // The copy's JIT compilers wait at SCHED_IDLE until its first response (a standby
            // copy's: until its first response after the thaw, ``recordThawed(_:)``). Some bakes
            // leave a method to compile the moment a copy runs; on two CPUs that compile took
            // the CPU from the copy's afterRestore (docs/restore-path.md, stop 28).
            let copyProcesses = ProcessInspector.pids(inCgroup: sandbox.instance.cgroupPath)
            CompilerScheduling.yieldToRequests(ofProcesses: copyProcesses)
            let criu = try? CRIURestoreStatistics.read(fromWorkDirectory: sandbox.workDirectory)
            var record = InstanceRecord(
                id: id, snapshot: manifest.name, pid: container.pid, shimPid: container.shimPid, port: manifest.sandbox.port,
                createdAt: Date(), networkNamespacePath: sandbox.instance.networkNamespacePath, cgroupPath: sandbox.instance.cgroupPath,
                logPath: sandbox.logPath, restoreMs: start.duration(to: restored).milliseconds, firstResponseMs: 0, sharesMemory: sharing,
                network: sandbox.attachment,
                phases: RestorePhases(
                    prepareMs: start.duration(to: prepared).milliseconds, runtimeMs: prepared.duration(to: restored).milliseconds,
                    criuRestoreMs: criu?.restoreMs, identityMs: 0, afterRestoreMs: nil, firstResponseMs: 0))
            if standby == .thaw {
                try sandbox.freeze()
                let frozen = ContinuousClock.now
                // Its sockets cannot change while it is frozen: checked now, off the thaw's path.
                try checkSockets(of: sandbox, pid: container.pid)
                record.standby = true
                record.frozenAfterMs = restored.duration(to: frozen).milliseconds
                // Off the thaw's path: the pages an earlier copy wrote first are copied now,
                // while no thread runs (each would otherwise cost the thaw a copy and, for a
                // page the kernel had mapped read-only, a TLB shoot-down of the other CPU).
                let copying = ContinuousClock.now
                record.copiedAheadPages = copyFirstWritesAhead(of: manifest, inProcess: container.pid)
                logger.debug(
                    "\(id): standby copy restored in \(record.restoreMs) ms, frozen \(String(format: "%.2f", record.frozenAfterMs ?? 0)) ms after runc returned, \(record.copiedAheadPages ?? 0) pages copied ahead in \(String(format: "%.1f", copying.duration(to: .now).milliseconds)) ms"
                )
                try save(record)
                handOver(id)
                return record
            }
            let activation = try await activate(&sandbox, container: container, manifest: manifest, timeout: readinessTimeout, interval: pollInterval)
            let answered = ContinuousClock.now
            CompilerScheduling.restore(ofProcesses: copyProcesses)
            learnFirstWrites(of: manifest, fromProcess: container.pid)
            if standby == .ready {
                // Identity, afterRestore, readiness and restore hook done. A restored copy's first
                // requests on its other paths are still slow (the Spring sample's first two
                // /greet after a restore: 12.5 and 9.3 ms, then 2 ms: Tomcat's restarted worker
                // threads and the path's pages are cold), so a ready copy takes a few of each
                // warm-up path, in the bake's shapes of request, waits for its compilers to go
                // quiet and gives the memory they used back; then it is frozen ready to answer.
                let paths = (manifest.warmup.isEmpty ? [manifest.readiness.path] : manifest.warmup.map(\.path)).flatMap {
                    Array(repeating: $0, count: Self.readyStandbyRequestsPerPath)
                }
                try await sandbox.warmUp(
                    paths: paths, port: manifest.sandbox.port, perConnection: Self.warmupRequestsPerConnection,
                    shapes: RequestShape.warmUp(function: manifest.name))
                let settling = try await waitForIdleCompilers(inCgroup: sandbox.instance.cgroupPath)
                if activation.answersTrim, let jvm = manifest.agentProcess {
                    record.nativeHeapTrimmedBytes = try await trimNativeHeap(of: sandbox, jvm: jvm)
                }
                // Its compilers wait at SCHED_IDLE until its first request after the thaw is
                // over (``recordThawed(_:)``): what that request sets off to compile no longer
                // takes the CPU from it.
                CompilerScheduling.yieldToRequests(ofProcesses: ProcessInspector.pids(inCgroup: sandbox.instance.cgroupPath))
                try sandbox.freeze()
                record.standby = true
                record.standbyMode = .ready
                record.frozenAfterMs = restored.duration(to: .now).milliseconds
                logger.debug(
                    "\(id): ready standby copy frozen \(String(format: "%.1f", record.frozenAfterMs ?? 0)) ms after runc returned; its JIT compilers \(settling.settled ? "went quiet" : "were still busy") after \(String(format: "%.0f", settling.ms)) ms"
                )
            }
            logger.debug(
                "\(id): sandbox prepared in \(start.duration(to: prepared).milliseconds) ms, runc restore took \(prepared.duration(to: restored).milliseconds) ms, first response \(restored.duration(to: answered).milliseconds) ms later (afterRestore \(activation.afterRestoreMs.map { String(format: "%.1f", $0) } ?? "-") ms)"
            )
            record.firstResponseMs = start.duration(to: answered).milliseconds
            record.afterRestoreMs = activation.afterRestoreMs
            record.phases?.identityMs = activation.identityMs
            record.phases?.afterRestoreMs = activation.afterRestoreMs
            record.phases?.firstResponseMs = activation.firstResponseMs
            try save(record)
            handOver(id)
            return record
        } catch {
            throw await failed(&sandbox, error, id: id)
        }
    }

    /// The sandbox a restored copy of `manifest` runs in, and the directory of its
    /// images: only the first restore of a compressed or encrypted snapshot unpacks them (into
    /// tmpfs). The agent's jar is the snapshot's own copy among them (``CRaCAgent/fromSnapshot(images:)``).
    package func sandboxToRun(_ manifest: SnapshotManifest) throws -> (spec: SandboxSpec, images: String) {
        let images = try DumpCache(root: paths.dumpCache, store: store).directory(for: manifest, key: try keys.key(for: manifest))
        var spec = manifest.sandbox
        spec.agent = spec.agent?.fromSnapshot(images: images)
        return (spec, images)
    }

    /// The sandbox a cold start of `manifest` runs in. A JVM that starts from scratch takes any
    /// agent jar, and a cold start (the gateway's fallback when a restore failed) must not depend
    /// on unpacking the dump it stands in for: the snapshot's stored copy of the jar when it can
    /// be read as stored (not encrypted), else kiln's own.
    package func sandboxToColdStart(_ manifest: SnapshotManifest) -> SandboxSpec {
        var spec = manifest.sandbox
        guard let agent = spec.agent, agent.mountsOneDirectory else { return spec }
        let stored = agent.fromSnapshot(images: store.dumpDirectory(of: manifest.name))
        if FileManager.default.fileExists(atPath: stored.jarPath) {
            spec.agent = stored
        } else if let jar = try? CRaCAgent.locate() {
            spec.agent?.jarPath = jar
        }
        return spec
    }

    /// Thaws a standby copy (``restoreOne(_:readinessTimeout:pollInterval:shareMemory:network:pool:standby:)``
    /// with `standby`). A ``StandbyMode/thaw`` copy then gets its identity: hostname, the agent's
    /// afterRestore (instance id, DNS, reseed, clock), readiness, restore hook; a
    /// ``StandbyMode/ready`` one had them at its restore and is only unfrozen and probed. The
    /// record then says it is running; without `savingRecord` the caller saves it
    /// (``recordThawed(_:)``: the gateway does once the request the copy was thawed for is over). The
    /// caller must own the copy (``claimStandby(of:)``: no two thaw one copy). On failure the
    /// copy is removed, as a failed restore is.
    public func thaw(
        _ standby: InstanceRecord, manifest: SnapshotManifest, readinessTimeout: Duration = .seconds(30), pollInterval: Duration = .milliseconds(1),
        savingRecord: Bool = true
    ) async throws -> InstanceRecord {
        guard standby.standby == true else {
            throw KilnError(.invalidArgument, "instance \(standby.id) is no standby copy", hint: "'kiln ps' shows standby copies as such")
        }
        var sandbox = adoptSandbox(
            id: standby.id, directory: instanceDirectory(standby.id), shimPid: standby.shimPid, containerPid: standby.pid,
            purpose: "thawing standby copy \(standby.id) of '\(manifest.name)'")
        adoptNetwork(of: standby, into: &sandbox)
        sandbox.useAgentLayout(manifest.sandbox.agent)
        InstanceHTTPClient.prepare()
        do {
            let start = ContinuousClock.now
            let container = ContainerProcess(pid: standby.pid, shimPid: standby.shimPid)
            var record = standby
            let activation: Activation
            if standby.standbyMode == .ready {
                try sandbox.thaw()
                let thawed = ContinuousClock.now
                try await probeReadiness(of: sandbox, manifest: manifest, timeout: readinessTimeout, interval: pollInterval)
                activation = Activation(
                    identityMs: start.duration(to: thawed).milliseconds, afterRestoreMs: nil, firstResponseMs: thawed.duration(to: .now).milliseconds)
            } else {
                activation = try await activate(
                    &sandbox, container: container, manifest: manifest, timeout: readinessTimeout, interval: pollInterval, thawing: true)
                record.afterRestoreMs = activation.afterRestoreMs
                record.phases?.identityMs = activation.identityMs
                record.phases?.afterRestoreMs = activation.afterRestoreMs
                record.phases?.firstResponseMs = activation.firstResponseMs
            }
            let thawMs = start.duration(to: .now).milliseconds
            if standby.standbyMode != .ready { learnFirstWrites(of: manifest, fromProcess: standby.pid) }
            record.standby = nil
            record.thawedAt = Date()
            record.thawMs = thawMs
            // A ready copy answered before it was frozen: that stays its first response.
            if standby.standbyMode != .ready { record.firstResponseMs = record.restoreMs + (record.frozenAfterMs ?? 0) + thawMs }
            if savingRecord { try recordThawed(record) }
            logger.debug(
                "\(record.id): thawed to first response in \(String(format: "%.2f", record.thawMs ?? 0)) ms (\(standby.standbyMode == .ready ? "thaw" : "hostname and thaw") \(String(format: "%.2f", activation.identityMs)) ms, afterRestore \(activation.afterRestoreMs.map { String(format: "%.2f", $0) } ?? "-") ms, readiness \(String(format: "%.2f", activation.firstResponseMs)) ms)"
            )
            return record
        } catch {
            throw await failed(&sandbox, error, id: standby.id)
        }
    }

    /// Saves the record of a copy ``thaw(_:manifest:readinessTimeout:pollInterval:savingRecord:)``
    /// thawed without saving it, or ``unfreezeHandedOut(_:)`` unfroze (the gateway: its request
    /// goes first), and drops its thaw claim. Creates nothing when the copy's directory is gone.
    /// The copy's JIT compilers, kept at `SCHED_IDLE` since its restore (a ``StandbyMode/thaw``
    /// copy) or its freeze (a ``StandbyMode/ready`` one) so that its afterRestore and first
    /// request had the CPU, get their ordinary scheduling back.
    public func recordThawed(_ record: InstanceRecord) throws {
        // Its compilers waited at SCHED_IDLE for this (``CompilerScheduling``).
        CompilerScheduling.restore(ofProcesses: ProcessInspector.pids(inCgroup: record.cgroupPath))
        try save(record)
        try? FileManager.default.removeItem(atPath: "\(instanceDirectory(record.id))/\(Self.thawClaimFile)")
    }

    /// Hands out a ``StandbyMode/ready`` copy the gateway's way: its record as a running copy
    /// while it is still frozen, so the request it is for can be sent first (the kernel accepts
    /// the connection and queues the request for the frozen service);
    /// ``unfreezeHandedOut(_:)`` then lets it run (and ``recordThawed(_:)`` saves the record). Unlike
    /// ``thaw(_:manifest:readinessTimeout:pollInterval:savingRecord:)`` nothing asks its
    /// readiness path again: it answered it, and its warm-up requests, before its freeze, and a
    /// request it cannot take is retried elsewhere by the gateway.
    public func handOutFrozen(_ standby: InstanceRecord) throws -> InstanceRecord {
        guard standby.standby == true, standby.standbyMode == .ready else {
            throw KilnError(.invalidArgument, "instance \(standby.id) is no ready standby copy", hint: "thaw it instead")
        }
        var record = standby
        record.standby = nil
        record.thawedAt = Date()
        return record
    }

    /// Lets a copy ``handOutFrozen(_:)`` handed out run. Returns its record with its thaw (from
    /// the hand-out to the unfreeze) for the caller to save with ``recordThawed(_:)``: the
    /// gateway does once the copy's first request is over, so the write takes no CPU from it.
    public func unfreezeHandedOut(_ record: InstanceRecord) throws -> InstanceRecord {
        try host.setFrozen(false, cgroupPath: record.cgroupPath)
        var record = record
        record.thawMs = record.thawedAt.map { Date().timeIntervalSince($0) * 1000 }
        return record
    }

    /// Requests a ``StandbyMode/ready`` copy sends to each of its snapshot's warm-up paths
    /// before its freeze: one connection of ``warmupRequestsPerConnection``, each path on a new,
    /// a kept and a closing connection. Every request writes more of the copy's own memory
    /// (the Spring sample: allocation fills the young generation, 15 MiB here): four connections
    /// per path took 8 ready copies from 14.2% to 17.8% of a cold instance's PSS each, and
    /// their first request at zero was no faster (`kiln bench standby boot --standby-mode ready`,
    /// one bake, 10 runs each).
    static let readyStandbyRequestsPerPath = warmupRequestsPerConnection

    /// How long a ready standby copy waits after its warm-up requests for its JVM's JIT compilers
    /// to go quiet, before its freeze: a copy frozen while they still compiled what its restore
    /// and warm-up set off goes on compiling at its thaw, beside its first request (a trace of
    /// one: C1 and C2 busy on both CPUs for 8 ms after the unfreeze, the request's thread waiting
    /// behind them). Waiting until they used at most 2% of a CPU for 200 ms took 206-415 ms per
    /// copy, off any request's path; the Spring sample's first request through `kiln serve` at
    /// zero went from 7.2 and 9.4 ms to 4.8 and 4.7 ms (`kiln bench standby boot --standby-mode
    /// ready`, two runs each, interleaved). At most ``readyStandbySettleLimit``, then it is
    /// frozen anyway.
    static let readyStandbySettleWindow = Duration.milliseconds(200)
    static let readyStandbySettleLimit = Duration.seconds(2)

    /// Waits until the JIT compilers of the processes in `cgroupPath` have been (nearly) idle for
    /// ``readyStandbySettleWindow``, at most ``readyStandbySettleLimit``. Returns how long it
    /// waited and whether they went quiet; a service without compiler threads (no JVM) returns
    /// at once.
    package func waitForIdleCompilers(inCgroup cgroupPath: String) async throws -> (ms: Double, settled: Bool) {
        let start = ContinuousClock.now
        var settling = CompilerSettling(window: Self.readyStandbySettleWindow, quietShare: 0.02, limit: Self.readyStandbySettleLimit)
        while let cpu = CompilerActivity.cpuNanoseconds(ofProcesses: ProcessInspector.pids(inCgroup: cgroupPath)) {
            switch settling.sample(cpuNanoseconds: cpu, at: .now) {
            case .goOn: try await Task.sleep(for: .milliseconds(20))
            case .settled: return (start.duration(to: .now).milliseconds, true)
            case .gaveUp: return (start.duration(to: .now).milliseconds, false)
            }
        }
        return (start.duration(to: .now).milliseconds, true)
    }

    /// The claim file that makes one caller the owner of a standby copy it thaws.
    static let thawClaimFile = "thaw.claim"

    /// Takes the oldest standby copy of `snapshot` that nobody else is thawing (an `O_EXCL`
    /// claim file in its directory, so two `kiln thaw` never hand out the same copy), or nil
    /// when there is none. Copies a `kiln serve` keeps are not handed out.
    public func claimStandby(of snapshot: String) -> InstanceRecord? {
        // A gateway's standby copies (marked with their owner) are its own to thaw.
        let candidates = instanceRecords().filter {
            $0.snapshot == snapshot && $0.standby == true && !OwnerMark.isMarked(instanceDirectory($0.id))
        }.sorted { $0.createdAt < $1.createdAt }
        for record in candidates {
            let fd = Glibc.open("\(instanceDirectory(record.id))/\(Self.thawClaimFile)", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { continue }
            _ = "\(getpid())".withCString { Glibc.write(fd, $0, strlen($0)) }
            Glibc.close(fd)
            return record
        }
        return nil
    }

    /// What a copy's activation took (ms): its identity, the agent's afterRestore, the probe;
    /// and whether its agent answers `trim.request`.
    struct Activation {
        var identityMs: Double
        var afterRestoreMs: Double?
        var firstResponseMs: Double
        var answersTrim = false
    }

    /// Gives a ``StandbyMode/ready`` copy's free malloc memory back to the kernel before its
    /// freeze, and returns how many bytes its JVM reported (nil when the trim failed: the copy
    /// is frozen as it is, with a warning). The compilers' scratch memory from the copy's restart
    /// and warm-up sits in HotSpot's chunk pool until its cleaner hands it to malloc (every 5 s),
    /// so the trim waits for that first: on the Spring sample 0.7-3 MiB less per frozen copy,
    /// depending on the bake, 2-3 times what a trim at once finds (docs/restore-path.md). The
    /// copy is not yet a standby meanwhile: its replacement takes that much longer, its thaw
    /// nothing more.
    private func trimNativeHeap(of sandbox: SandboxLifecycle, jvm: Int32) async throws -> Int64? {
        try await Task.sleep(for: readyStandbyTrimWait)
        do {
            let trim = try await sandbox.trimNativeHeap(namespacePid: jvm, timeout: readyStandbyTrimTimeout)
            logger.debug("\(sandbox.id): \(trim.report) (\(String(format: "%.1f", trim.elapsedMs)) ms)")
            return trim.returnedBytes ?? 0
        } catch {
            // Each of the trim's errors says the copy is frozen untrimmed (its hint).
            logger.warning("\(sandbox.id): \(error)")
            return nil
        }
    }

    /// The steps of a restored (or thawed) copy before it counts as running: hostname, no socket
    /// left on the bake-time address, the agent's afterRestore in its new identity (before
    /// anything can reach it), readiness, the restore hook.
    ///
    /// With `thawing`, the copy is a frozen standby copy: its hostname is set while it is still
    /// frozen (so it never runs under the bake's name once thawed), then it is thawed; its
    /// sockets were checked before it was frozen.
    private func activate(
        _ sandbox: inout SandboxLifecycle, container: ContainerProcess, manifest: SnapshotManifest, timeout: Duration, interval: Duration,
        thawing: Bool = false
    ) async throws -> Activation {
        let id = sandbox.id
        let start = ContinuousClock.now
        try sandbox.assumeIdentity(hostname: id)
        if thawing {
            try sandbox.thaw()
        } else {
            try checkSockets(of: sandbox, pid: container.pid)
        }
        let identified = ContinuousClock.now
        var afterRestoreMs: Double?
        var answersTrim = false
        if manifest.sandbox.agent != nil, let jvm = manifest.agentProcess {
            let agent = try await sandbox.afterRestore(namespacePid: jvm, instance: id, hostname: id, timeout: timeout)
            afterRestoreMs = agent.elapsedMs
            answersTrim = agent.answersTrim
            logger.debug(
                "\(id): afterRestore \(String(format: "%.2f", agent.elapsedMs)) ms as kiln saw it: the agent woke \(agent.deliveryMs(clockOffsetNanos: ProcessInspector.monotonicOffsetNanos(of: container.pid)).map { String(format: "%.2f", $0) } ?? "?") ms after kiln's wake and took \(agent.agentMs.map { String(format: "%.2f", $0) } ?? "?") ms (its identity refreshed at \(agent.identityMs.map { String(format: "%.2f", $0) } ?? "?") ms)"
            )
            for warning in agent.warnings { logger.warning("\(id): the agent says: \(warning)") }
        }
        let probing = ContinuousClock.now
        try await probeReadiness(of: sandbox, manifest: manifest, timeout: timeout, interval: interval)
        if let hook = manifest.restoreHook {
            try await notifyRestored(
                hook, id: id, manifest: manifest, endpoint: sandbox.endpoint(port: manifest.sandbox.port), logPath: sandbox.logPath)
        }
        return Activation(
            identityMs: start.duration(to: identified).milliseconds, afterRestoreMs: afterRestoreMs,
            firstResponseMs: probing.duration(to: .now).milliseconds, answersTrim: answersTrim)
    }

    /// Waits until the copy answers its readiness path.
    private func probeReadiness(of sandbox: SandboxLifecycle, manifest: SnapshotManifest, timeout: Duration, interval: Duration) async throws {
        let outcome = try await sandbox.probe(port: manifest.sandbox.port, path: manifest.readiness.path, timeout: timeout, interval: interval)
        guard outcome == .ready else {
            throw KilnError(
                .restoreFailed, "the restored service did not answer \(manifest.readiness.path) (\(outcome))",
                details: ProcessInspector.lastLines(ofFile: sandbox.logPath, count: 15), logPath: sandbox.logPath)
        }
    }

    /// No socket of the restored copy may still listen on the bake-time address.
    private func checkSockets(of sandbox: SandboxLifecycle, pid: Int32) throws {
        if let attachment = sandbox.attachment, let socket = RestoreAddressCheck.strandedListeners(ofProcess: pid, address: attachment.ip).first {
            throw RestoreAddressCheck.stranded(("", socket.port, socket.address), attachment: attachment, details: [], logPath: sandbox.logPath)
        }
    }

    /// A copy that failed: its log kept under the logs directory, everything else removed.
    private func failed(_ sandbox: inout SandboxLifecycle, _ error: any Error, id: String) async -> KilnError {
        var failure = KilnError.wrapping(error, as: .restoreFailed)
        if let log = failure.logPath {
            failure.logPath = sandbox.keep(log, at: "\(paths.logs)/\(id)-\((log as NSString).lastPathComponent)")
        }
        await sandbox.tearDown()
        return failure.during(sandbox.purpose)
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
        try RuntimeFile.replace("\(instanceDirectory(record.id))/instance.json", with: data)
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
