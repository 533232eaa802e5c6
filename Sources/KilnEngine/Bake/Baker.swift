import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Progress of a bake, for a user watching a long step.
public enum BakeEvent: Sendable {
    /// Copying and unpacking the image of `kiln bake --image`.
    case importingImage(ImageReference)
    case importedImage(ImportedImage)
    case starting(command: [String])
    case ready(coldStartMs: Double)
    case warmingUp(WarmupStep)
    case warmedUp(ms: Double, requests: Int)
    /// The warm-up goes on until the JVM's JIT compilers are idle, at most `limit`.
    case settlingCompilers(limit: Duration)
    /// It ended after `ms` and `requests` more requests: `settled` (the compilers were idle) or
    /// not (the limit came first).
    case settledCompilers(ms: Double, requests: Int, settled: Bool)
    /// kiln's CRaC agent ran every resource's beforeCheckpoint (`appRequested`: the application
    /// asked for the checkpoint itself).
    case beforeCheckpoint(ms: Double, resources: Int?, appRequested: Bool)
    /// The restore rehearsal (``BakeRequest/rehearseRestore``): the service ran its
    /// beforeCheckpoint and afterRestore once and answered again, in `ms`.
    case rehearsedRestore(ms: Double)
    /// The preflight's report (one line per finding and its why/fix), and whether it blocks.
    case preflight(lines: [String], blocked: Bool)
    case compacting
    case compacted(ms: Double, didRun: Bool, note: String)
    case checkpointing
    case checkpointed(ms: Double)
    /// Encrypting the images with the key of this id.
    case encrypting(keyID: String)
    case storing
}

extension Kiln {
    /// Cold-starts a service in a sandbox, waits until it answers, warms it up, compacts a JVM,
    /// checkpoints it and stores the verified snapshot.
    ///
    /// Whatever happens, the container, its network namespace, cgroup and scratch directories
    /// are gone when this returns; only the snapshot (on success) or a log (on failure) remains.
    public func bake(_ request: BakeRequest, progress: @Sendable (BakeEvent) -> Void = { _ in }) async throws -> SnapshotManifest {
        guard case .snapshot(let manifest) = try await bake(request, preflightOnly: false, progress: progress) else {
            throw KilnError(.runtimeFailed, "the bake stopped after its preflight")
        }
        return manifest
    }

    /// `kiln bake --preflight`: starts and warms the service as a bake does, runs its CRaC
    /// beforeCheckpoint, reports what would block the checkpoint, and stops (no dump, nothing
    /// stored; the service runs its afterRestore before it is torn down).
    package func preflight(_ request: BakeRequest, progress: @Sendable (BakeEvent) -> Void = { _ in }) async throws -> [CheckpointPreflight.Finding] {
        guard case .preflight(let findings) = try await bake(request, preflightOnly: true, progress: progress) else {
            throw KilnError(.runtimeFailed, "the preflight made a snapshot")
        }
        return findings
    }

    package enum BakeOutcome {
        case snapshot(SnapshotManifest)
        case preflight([CheckpointPreflight.Finding])
    }

    private func bake(_ request: BakeRequest, preflightOnly: Bool, progress: @Sendable (BakeEvent) -> Void) async throws -> BakeOutcome {
        let action = preflightOnly ? "checking what would block a checkpoint of '\(request.name)'" : "baking snapshot '\(request.name)'"
        do {
            if request.image == nil { try request.validate() } else { try SnapshotStore.validate(name: request.name) }
            if store.exists(request.name), !request.replace, !preflightOnly {
                throw KilnError(
                    .snapshotExists, "a snapshot named '\(request.name)' already exists",
                    hint: "pass --replace to bake it again, or choose another name")
            }
            let id = makeInstanceID(for: request.name) + "-bake"
            var sandbox = makeSandbox(id: id, directory: "\(paths.bakes)/\(id)", purpose: action, forCheckpoint: true)
            let previous = try? store.load(request.name)
            var request = request
            var imported: ImportedImage?
            var staging: String?
            do {
                // Marked as this bake's before anything else: `kiln gc` keeps what a live bake owns.
                try sandbox.createDirectory(ownerMark: true)
                if let reference = request.image {
                    progress(.importingImage(reference))
                    var configured = request.sandbox
                    let image = try await importImage(reference, bakeID: id) { image in
                        configured = try image.config.sandbox(applyingTo: configured, rootfs: imageRoot(bakeID: id), reference: reference.description)
                    }
                    imported = image
                    progress(.importedImage(image))
                    request.sandbox = configured
                    try request.validate()
                }
                // The agent needs the JDK's java.instrument module: the host's JDK has it; a JVM in an
                // image or another root may not (a jlink'ed runtime), and would not start with it.
                let withAgent = request.agent && request.sandbox.rootFilesystem == .host
                if request.onRequest, !withAgent {
                    throw KilnError(
                        .invalidArgument, "--on-request needs kiln's CRaC agent, which runs only on kiln's own root (not with --image or --rootfs)",
                        hint: "drop --on-request")
                }
                // --preflight: the agent also records which code opened each socket and file, so
                // the report can show the Java stack of what is still open.
                request.sandbox.agent =
                    withAgent
                    ? CRaCAgent(
                        jarPath: try request.agentJar ?? CRaCAgent.locate(), jarInSnapshot: CRaCAgent.jarName, ioStacks: preflightOnly ? true : nil)
                    : nil
                staging = try store.makeStagingDirectory(for: request.name)
                let outcome = try await bake(
                    request, imported: imported, sandbox: &sandbox, staging: staging!, preflightOnly: preflightOnly, progress: progress)
                guard case .snapshot(let manifest) = outcome else {
                    await sandbox.tearDown()
                    try? FileManager.default.removeItem(atPath: staging!)
                    if request.image != nil { store.removeImageRoot(imageRoot(bakeID: id)) }
                    return outcome
                }
                // A re-bake makes any unpacked copy of the old version stale.
                DumpCache(root: paths.dumpCache, store: store).evict(request.name)
                await sandbox.tearDown()
                // The old version's image root goes too, unless copies restored from it still run
                // in it (then `kiln gc` removes it once they are gone).
                if let previous, let root = store.imageRoot(of: previous), root != store.imageRoot(of: manifest),
                    !instanceRecords().contains(where: { $0.snapshot == request.name })
                {
                    store.removeImageRoot(root)
                }
                return .snapshot(manifest)
            } catch {
                // Keep the service's output where the error says it is; drop everything else.
                let kept = sandbox.keep(sandbox.logPath, at: keptLogPath(bakeID: id))
                var error = error
                if var failure = error as? KilnError, failure.logPath == sandbox.logPath {
                    failure.logPath = kept
                    error = failure
                }
                await sandbox.tearDown()
                if let staging { try? FileManager.default.removeItem(atPath: staging) }
                if request.image != nil { store.removeImageRoot(imageRoot(bakeID: id)) }
                throw StoreSpace(path: store.root).explain(error)
            }
        } catch let error as KilnError {
            throw error.during(action)
        }
    }

    /// Where a failed bake's service output is kept.
    private func keptLogPath(bakeID: String) -> String { "\(paths.logs)/\(bakeID).log" }

    /// Where the image root filesystem of bake `bakeID` lives, for as long as its snapshot does.
    func imageRoot(bakeID: String) -> String { "\(store.rootfsDirectory)/\(bakeID)" }

    /// Copies and unpacks the image of a bake into ``imageRoot(bakeID:)``; the copy of the image
    /// in the store's staging area is gone when this returns, whatever happens.
    private func importImage(
        _ reference: ImageReference, bakeID: String, check: (OCILayout.Image) throws -> Void
    ) async throws -> ImportedImage {
        let importer = try ImageImporter.locate(logger: logger)
        try store.prepare()
        let work = "\(store.stagingDirectory)/image-\(bakeID)"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: work) }
        return try await importer.importImage(reference, work: work, rootfs: imageRoot(bakeID: bakeID), check: check)
    }

    private func bake(
        _ request: BakeRequest, imported: ImportedImage?, sandbox lifecycle: inout SandboxLifecycle, staging: String, preflightOnly: Bool,
        progress: @Sendable (BakeEvent) -> Void
    ) async throws -> BakeOutcome {
        let sandbox = request.sandbox
        let consoleLog = lifecycle.logPath
        let keptLog = keptLogPath(bakeID: lifecycle.id)
        try await lifecycle.prepare(sandbox, ownerMark: true, network: try networkPlan(request.network, snapshot: request.name))
        let endpoint = lifecycle.endpoint(port: sandbox.port)

        progress(.starting(command: sandbox.command))
        let started = ContinuousClock.now
        let container = try await lifecycle.start()
        let readyTimeout = Duration.milliseconds(Int(request.readiness.timeoutSeconds * 1000))
        var timings: BakeTimings
        var agentCheckpoint: AgentCheckpoint?
        if request.onRequest {
            // The application asks for its checkpoint when it is ready (Spring: at the end of its
            // context refresh), and may not answer on its port before it is restored.
            let checkpoint = try await lifecycle.beforeCheckpoint(onRequest: true, timeout: readyTimeout)
            agentCheckpoint = checkpoint
            timings = BakeTimings(coldStartMs: started.duration(to: .now).milliseconds)
            progress(.ready(coldStartMs: timings.coldStartMs))
            progress(.beforeCheckpoint(ms: checkpoint.elapsedMs, resources: checkpoint.resources, appRequested: true))
        } else {
            let coldStartMs = try await lifecycle.waitUntilReady(
                port: sandbox.port, readiness: request.readiness, interval: .milliseconds(25), appDirectory: sandbox.appDirectory,
                keptLogPath: keptLog,
                since: started)
            timings = BakeTimings(coldStartMs: coldStartMs)
            progress(.ready(coldStartMs: timings.coldStartMs))

            let warmupStart = ContinuousClock.now
            let requests = try await warmUp(endpoint, function: request.name, steps: request.warmup, logPath: consoleLog, keptLogPath: keptLog) {
                progress(.warmingUp($0))
            }
            timings.warmupMs = warmupStart.duration(to: .now).milliseconds
            if !request.warmup.isEmpty { progress(.warmedUp(ms: timings.warmupMs, requests: requests)) }
            if !request.warmup.isEmpty, request.warmupSettleLimit > .zero {
                try await settleCompilers(
                    endpoint, request: request, cgroupPath: lifecycle.instance.cgroupPath, timings: &timings, logPath: consoleLog,
                    keptLogPath: keptLog, progress: progress)
            }

            // A service that answers has long started its JVM, whose agent wrote agent.ready at
            // premain; none there: no JVM with the agent (a service that is no JVM), nothing to ask.
            if sandbox.agent != nil, lifecycle.agentStarted {
                // Not for `--preflight`: a report, not a snapshot, and its I/O stacks come from a
                // recording the agent ends at the first beforeCheckpoint.
                if request.rehearseRestore, !preflightOnly {
                    let ms = try await rehearseRestore(
                        &lifecycle, request: request, endpoint: endpoint, timeout: readyTimeout, logPath: consoleLog, keptLogPath: keptLog)
                    timings.rehearsalMs = ms
                    progress(.rehearsedRestore(ms: ms))
                }
                let checkpoint = try await lifecycle.beforeCheckpoint(onRequest: false, timeout: readyTimeout)
                agentCheckpoint = checkpoint
                progress(.beforeCheckpoint(ms: checkpoint.elapsedMs, resources: checkpoint.resources, appRequested: false))
            }
        }

        do {
            return try await checkpoint(
                request, imported: imported, lifecycle: &lifecycle, container: container, serviceStarted: started, staging: staging,
                timings: timings, agentProcess: agentCheckpoint?.namespacePid, preflightOnly: preflightOnly, progress: progress)
        } catch {
            // The service prepared for a checkpoint that did not happen: it runs its afterRestore
            // (as the original, with the reason) before it is torn down.
            if let pid = agentCheckpoint?.namespacePid {
                let reason = preflightOnly ? "kiln bake --preflight: no dump" : "\((error as? KilnError)?.message ?? "\(error)")"
                do {
                    _ = try await lifecycle.afterRestore(
                        namespacePid: pid, instance: lifecycle.id, hostname: lifecycle.id, checkpointError: reason, timeout: .seconds(10))
                } catch {
                    logger.warning("the original's afterRestore after the failed checkpoint: \(error)")
                }
            }
            if preflightOnly, let error = error as? PreflightStop { return .preflight(error.findings) }
            throw error
        }
    }

    /// The restore rehearsal: a checkpoint that is not taken, just before the real one. The
    /// service runs its beforeCheckpoint, then its afterRestore as an original whose dump failed
    /// (CRaC's semantics, which every resource must bear), then answers its readiness path and
    /// each warm-up path once more. Every copy runs exactly that code first after its restore:
    /// Spring's lifecycle restart, Tomcat's new connector, the pool's resume and the first
    /// requests they serve. Code a JVM runs for the first time pays for loading, linking and
    /// resolving classes, call sites and reflection; the rehearsal pays it once in the original,
    /// so the snapshot holds that work and no copy repeats it.
    /// Returns how long it took (ms).
    private func rehearseRestore(
        _ lifecycle: inout SandboxLifecycle, request: BakeRequest, endpoint: ServiceEndpoint, timeout: Duration, logPath: String,
        keptLogPath: String
    ) async throws -> Double {
        let start = ContinuousClock.now
        let checkpoint = try await lifecycle.beforeCheckpoint(onRequest: false, timeout: timeout)
        do {
            _ = try await lifecycle.afterRestore(
                namespacePid: checkpoint.namespacePid, instance: lifecycle.id, hostname: lifecycle.id, checkpointError: Self.rehearsalReason,
                timeout: timeout)
        } catch var error as KilnError where error.code == .restoreFailed {
            // Said as what it is here: not a copy that failed, but every copy that would.
            let said = error.message.replacingOccurrences(of: "the copy's CRaC afterRestore", with: "the service's CRaC afterRestore")
            error.message = said + " in the bake's restore rehearsal (as in the original after a failed dump): every copy would fail the same way"
            error.hint = "fix the resource's afterRestore (its stack is below), or bake with --no-rehearsal to let each copy try"
            throw error
        }
        try await lifecycle.waitUntilReady(
            port: request.sandbox.port, readiness: request.readiness, interval: .milliseconds(1), appDirectory: request.sandbox.appDirectory,
            keptLogPath: keptLogPath)
        // One connection per path (``warmupRequestsPerConnection`` requests): a new, a kept and a
        // closing one through the restarted service.
        _ = try await warmUp(
            endpoint, function: request.name, steps: request.warmup.map { WarmupStep(count: Self.warmupRequestsPerConnection, path: $0.path) },
            logPath: logPath,
            keptLogPath: keptLogPath)
        // What the afterRestore resumed may still be opening connections on its own threads (a
        // pool refilling): one opened after the next beforeCheckpoint suspended its pool would be
        // open at the dump (seen: HikariCP to PostgreSQL, refused by the preflight).
        if try await !lifecycle.settleSockets(quiet: .milliseconds(300), limit: .seconds(5)) {
            logger.warning("the service's TCP connections were still changing 5 s after the restore rehearsal; checkpointing anyway")
        }
        return start.duration(to: .now).milliseconds
    }

    /// What the original's agent is told in place of a dump error after the rehearsal's
    /// beforeCheckpoint (the agent reports it to an application that asked for the checkpoint).
    static let rehearsalReason = "kiln bake: restore rehearsal, no dump (the real checkpoint follows)"

    /// Stops a `--preflight` bake once its report is out.
    private struct PreflightStop: Error {
        var findings: [CheckpointPreflight.Finding]
    }

    /// Compaction, the preflight, the dump and the store: everything after the service is ready
    /// to be checkpointed.
    private func checkpoint(
        _ request: BakeRequest, imported: ImportedImage?, lifecycle: inout SandboxLifecycle, container: ContainerProcess,
        serviceStarted: ContinuousClock.Instant, staging: String, timings: BakeTimings, agentProcess: Int32?, preflightOnly: Bool,
        progress: @Sendable (BakeEvent) -> Void
    ) async throws -> BakeOutcome {
        let sandbox = request.sandbox
        let instance = lifecycle.instance
        var timings = timings
        var compacted = false
        if request.compact {
            progress(.compacting)
            let compactStart = ContinuousClock.now
            let result = await JVMCompactor(runtime: runtime, logger: logger).compact(
                containerID: instance.id, cgroupPath: instance.cgroupPath,
                notBefore: serviceStarted + .milliseconds(Int(timings.coldStartMs)) + Self.minimumTimeReady)
            timings.compactMs = compactStart.duration(to: .now).milliseconds
            compacted = result.didRun
            progress(.compacted(ms: timings.compactMs, didRun: result.didRun, note: result.note))
        }

        // kiln's own readiness and warmup connections are closed, but the service may not have
        // closed its end yet (CLOSE_WAIT); CRIU would refuse to dump such a socket. Give it a moment.
        let quiet = ContinuousClock.now + .seconds(2)
        while ProcessInspector.openConnections(of: container.pid) > 0, ContinuousClock.now < quiet {
            try await Task.sleep(for: .milliseconds(10))
        }
        let findings = try lifecycle.preflight(servicePort: sandbox.port, serviceNamespacePid: agentProcess)
        let refusal = CheckpointPreflight.blocked(findings, allowed: request.allow)
        progress(.preflight(lines: CheckpointPreflight.render(findings, allowed: request.allow), blocked: refusal != nil))
        if preflightOnly { throw PreflightStop(findings: findings) }
        if var refusal {
            refusal.logPath = lifecycle.logPath
            throw refusal.during("\(lifecycle.purpose) (while \(SandboxLifecycle.Step.preflight))")
        }

        progress(.checkpointing)
        // An encrypted snapshot's plain images must never reach a disk: CRIU dumps them into
        // tmpfs, and only their encrypted form is written to the store.
        let dump = request.encryptionKey == nil ? "\(staging)/images" : "\(paths.dumpCache)/.bake-\(instance.id)"
        defer { if dump != "\(staging)/images" { try? FileManager.default.removeItem(atPath: dump) } }
        if request.encryptionKey != nil {
            try FileManager.default.createDirectory(atPath: dump, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            guard DumpCache.isInMemory(dump) else {
                throw KilnError(
                    .invalidArgument, "cannot bake an encrypted snapshot: \(paths.dumpCache) is not on tmpfs",
                    hint: "mount a tmpfs at /dev/shm (the plain dump must never reach a disk)")
            }
        }
        let checkpointStart = ContinuousClock.now
        timings.serviceUptimeMs = serviceStarted.duration(to: checkpointStart).milliseconds
        do {
            try await lifecycle.checkpoint(into: dump)
        } catch var error as KilnError {
            // Keep CRIU's log for the user: the bake directory is about to be removed.
            if let log = error.logPath { error.logPath = lifecycle.keep(log, at: "\(paths.logs)/\(instance.id)-dump.log") }
            throw error
        }
        timings.checkpointMs = checkpointStart.duration(to: .now).milliseconds
        progress(.checkpointed(ms: timings.checkpointMs))

        progress(.storing)
        // The agent's jar travels with the snapshot (CRaCAgent.jarInSnapshot): a copy restored
        // after kiln's agent was rebuilt, or on another host, gets the very jar its JVM has open.
        if let agent = sandbox.agent, let name = agent.jarInSnapshot {
            try FileManager.default.copyItem(atPath: agent.jarPath, toPath: "\(dump)/\(name)")
        }
        if request.compress { try await DumpCache.compress(imagesIn: dump) }
        var encryption: SnapshotEncryption?
        if let key = request.encryptionKey {
            progress(.encrypting(keyID: key.id))
            let bake = UInt64.random(in: .min ... .max).hexDigits
            let record = SnapshotEncryption(keyID: key.id, bakeID: bake)
            try await onDedicatedThread {
                for path in SnapshotStore.relativeFiles(under: dump) {
                    let sealed = path + SnapshotCipher.suffix
                    let target = "\(staging)/images/\(sealed)"
                    try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                    try SnapshotCipher.encrypt(
                        "\(dump)/\(path)", to: target, binding: record.binding(snapshot: request.name, path: sealed), key: key,
                        chunkSize: record.chunkSize)
                    // Free the tmpfs as we go: the dump and its encrypted copy need not both fit.
                    unlink("\(dump)/\(path)")
                }
            }
            encryption = record
        }
        let host = try currentHostFacts(for: sandbox)
        let image = try imported.map {
            // The service saw this root read-only: it is as unpacked.
            guard case .directory(let root) = sandbox.rootFilesystem else { throw KilnError(.runtimeFailed, "an image bake without its root") }
            return SnapshotImage(
                reference: $0.reference.description, manifestDigest: $0.image.manifestDigest, configDigest: $0.image.configDigest,
                architecture: $0.image.config.architecture, copyMs: $0.copyMs, unpackMs: $0.unpackMs,
                rootListingSHA256: try FileDigest.listingSHA256(of: root))
        }
        return .snapshot(
            try store.commit(staging: staging) { files in
                SnapshotManifest(
                    name: request.name, createdAt: Date(), sandbox: sandbox, readiness: request.readiness, warmup: request.warmup,
                    host: host, timings: timings, compacted: compacted, shareMemory: request.shareMemory,
                    compression: request.compress ? DumpCache.compression : nil, encryption: encryption, restoreHook: request.restoreHook,
                    image: image,
                    cgroupsInImages: true, network: NetworkChoice.recorded(request.network), agentProcess: agentProcess, files: files)
            })
    }
}

/// The free space of the snapshot store's filesystem, to tell "disk full" from other failures.
struct StoreSpace {
    var path: String

    /// (free, total) bytes, if the filesystem can be asked.
    var bytes: (free: Int64, total: Int64)? {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0 else { return nil }
        return (Int64(stats.f_bavail) * Int64(stats.f_frsize), Int64(stats.f_blocks) * Int64(stats.f_frsize))
    }

    /// `error` as a ``KilnError/Code/storeFull`` error when it came from the store's filesystem
    /// filling up (CRIU's, zstd's or kiln's own writes), else unchanged. The failed snapshot's
    /// files are gone by then, so the free space reported is what the store has without it.
    func explain(_ error: any Error) -> any Error {
        guard Self.isOutOfSpace(error) else { return error }
        let original = error as? KilnError
        let space = bytes.map { " (\(Self.mib($0.free)) free of \(Self.mib($0.total)) once the partial snapshot was removed)" } ?? ""
        return KilnError(
            .storeFull, "the snapshot store \(path) ran out of space while the snapshot was written\(space)",
            hint:
                "free space there ('kiln rm' old snapshots), bake with --compress (about a quarter of the size), or point KILN_STORE at a larger filesystem; a snapshot needs about the service's resident memory",
            details: original?.details.filter { $0.contains("No space") || $0.contains("ENOSPC") }.prefix(3).map { $0 } ?? ["\(error)"],
            logPath: original?.logPath)
    }

    /// Whether `error` says a filesystem filled up: by its errno (kiln's own writes, whatever
    /// error type carries it) or, for the tools kiln runs (CRIU, zstd), whose errno reaches kiln
    /// only as text in their logs, by that text. The service's own output is not asked: a
    /// service that logs "No space left on device" has not filled the store.
    static func isOutOfSpace(_ error: any Error) -> Bool {
        let kiln = KilnError.wrapping(error, as: .runtimeFailed)
        if kiln.errno == ENOSPC { return true }
        guard ![.serviceExited, .serviceNeverReady, .warmupFailed, .portInUse].contains(kiln.code) else { return false }
        return ([kiln.message] + kiln.details).contains { $0.contains("No space left on device") || $0.contains("ENOSPC") }
    }

    static func mib(_ bytes: Int64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
}

extension Kiln {
    /// Replays warmup requests against a running service; any failure or non-2xx/3xx answer is
    /// an error quoting the service's last output. Returns the number of requests sent.
    ///
    /// Each step's requests go over keep-alive connections of ``warmupRequestsPerConnection``
    /// requests, the last of each asking to close it: the service then runs its paths for a new
    /// connection, a kept one and a closing one, as its clients (kiln's gateway keeps them, its
    /// probes close them) will, each a third of the time; in the shapes of request of a service
    /// served as `function` (``RequestShape/warmUp(function:)``), in turn.
    package func warmUp(
        _ endpoint: ServiceEndpoint, function: String, steps: [WarmupStep], logPath: String, keptLogPath: String,
        starting: (WarmupStep) -> Void = { _ in }
    ) async throws -> Int {
        var requests = 0
        for step in steps {
            starting(step)
            do {
                try await InstanceHTTPClient.sendKeepingAlive(
                    repeatElement(step.path, count: step.count), to: endpoint, perConnection: Self.warmupRequestsPerConnection,
                    shapes: RequestShape.warmUp(function: function), timeout: .seconds(30)
                ) { reply, shape in
                    guard (200..<400).contains(reply.status) else {
                        // A service that answers kiln's own requests but refuses another shape
                        // (one that checks its Host, say) would refuse those clients as well.
                        let refused = shape == .kiln ? "" : ", to \(shape.summary)"
                        throw KilnError(
                            .warmupFailed, "warmup request GET \(step.path) answered HTTP \(reply.status)\(refused)",
                            hint: shape == .kiln
                                ? "warm up with paths that succeed; the reply was: \(reply.bodyText.prefix(200))"
                                : "kiln warms a service up with the requests its clients and kiln serve send, so that they find its code compiled; let the service answer this one (the reply was: \(reply.bodyText.prefix(200)))"
                        )
                    }
                    requests += 1
                }
            } catch let error as KilnError {
                throw error
            } catch {
                throw KilnError(
                    .warmupFailed, "warmup request GET \(step.path) failed: \(error)",
                    details: ProcessInspector.lastLines(ofFile: logPath, count: 15), logPath: keptLogPath)
            }
        }
        return requests
    }

    /// Goes on warming up after the warm-up steps (their paths in turn, one connection of
    /// ``warmupRequestsPerConnection`` requests each) until the JVM's JIT compilers have used at
    /// most 1% of a CPU for a second, or until ``BakeRequest/warmupSettleLimit``. A JVM compiles
    /// a method in tiers: interpreted, then C1 code that counts every call and branch into the
    /// method's profile, then C2 code after thousands of calls. A few hundred warm-up requests
    /// leave the request path in profiling C1 code; a copy then writes those counters (each write
    /// to a page of the snapshot is a copy-on-write fault) and compiles on its first requests
    /// (hello-jdk's standby copies: thaw to first response 8.0-8.6 ms after 200 warm-up requests,
    /// 3.9-4.1 ms after 5,000; the Spring sample's restore 80 -> 65 ms). Nothing happens for a
    /// service without JIT compiler threads (no JVM).
    private func settleCompilers(
        _ endpoint: ServiceEndpoint, request: BakeRequest, cgroupPath: String, timings: inout BakeTimings, logPath: String,
        keptLogPath: String, progress: @Sendable (BakeEvent) -> Void
    ) async throws {
        func compilerCPU() -> UInt64? { CompilerActivity.cpuNanoseconds(ofProcesses: ProcessInspector.pids(inCgroup: cgroupPath)) }
        guard let first = compilerCPU() else {
            logger.debug("no JIT compiler threads in the service: nothing to settle")
            return
        }
        progress(.settlingCompilers(limit: request.warmupSettleLimit))
        let start = ContinuousClock.now
        var settling = CompilerSettling(limit: request.warmupSettleLimit)
        var verdict = settling.sample(cpuNanoseconds: first, at: start)
        let round = request.warmup.map { WarmupStep(count: Self.warmupRequestsPerConnection, path: $0.path) }
        var requests = 0
        var sampled = start
        while verdict == .goOn {
            requests += try await warmUp(endpoint, function: request.name, steps: round, logPath: logPath, keptLogPath: keptLogPath)
            // A few /proc reads per sample: every 100 ms is plenty for a one-second window.
            let now = ContinuousClock.now
            guard sampled.duration(to: now) >= .milliseconds(100) else { continue }
            sampled = now
            guard let cpu = compilerCPU() else { break }
            verdict = settling.sample(cpuNanoseconds: cpu, at: now)
        }
        let ms = start.duration(to: .now).milliseconds
        timings.jitSettleMs = ms
        timings.jitSettled = verdict == .settled
        timings.jitSettleRequests = requests
        progress(.settledCompilers(ms: ms, requests: requests, settled: verdict == .settled))
    }

    /// How many warm-up requests share one connection.
    package static let warmupRequestsPerConnection = 3

    /// How long a service has been ready (answering, or asking for its checkpoint) before its
    /// dump, at least (the compaction's wait is stretched to it): the periodic tasks a service
    /// schedules as it starts, every few seconds, then run once in the original, and not for the
    /// first time in every copy, cold, at its restore or thaw (a copy's clock has moved on, so a
    /// task whose time has come runs at once). Counted from readiness because that is when a
    /// service's servers start their timers. A hello-jdk bake dumped 8.5 s after its start: its
    /// HTTP server's idle-connection task (first run 10 s after it started) ran in each thawed copy
    /// first thing, linking its lambda and loading classes (`-Xlog:class+load`), with the copy's
    /// first request waiting. The Spring sample dumped 13.6 s after its start (ready after 4 s):
    /// Tomcat's background processing (first run 10 s after Tomcat started) loaded classes in
    /// every copy, on its own thread beside the copy's afterRestore.
    package static let minimumTimeReady = Duration.seconds(11)
}

extension HostFacts {
    /// `uname -r`.
    public static func kernelRelease() -> String {
        var name = utsname()
        uname(&name)
        return withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
    }
}
