import Foundation
import KilnEngine
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import Synchronization

/// Instances from kiln's snapshot store: a function is a snapshot; an instance is a restored
/// copy (`Kiln.restoreOne`), or, when the restore fails, a cold start of the snapshot's command
/// (`Kiln.startColdInstance`). Either way it is an ordinary kiln instance record, so `kiln ps`
/// lists it and `kiln stop` could stop it.
public final class KilnInstanceProvider: InstanceProvider {
    public let kiln: Kiln
    /// How long a restored copy may take to answer its readiness path.
    public let readinessTimeout: Duration
    /// Whether to cold-start the command when a restore fails.
    public let coldStartFallback: Bool
    /// Functions pulled from a registry on their first request when the store lacks them
    /// (`kiln serve --pull NAME=REF`).
    public let remote: RemoteFunctions
    /// The network of every copy (`kiln serve --network`); nil: each snapshot's own.
    public let network: String?
    /// Namespaces each networked function keeps ready on its network, so a restore does not wait
    /// for a CNI ADD; 0: attach on each launch.
    public let preparedNamespaces: Int
    /// When standby copies run their afterRestore: at their thaw or ahead of it.
    public let standbyMode: StandbyMode
    private let manifests = Mutex<[String: SnapshotManifest]>([:])
    private let pools = Mutex<[String: PreparedNamespacePool]>([:])
    /// Thawed copies whose records are not saved yet.
    private let unsavedRecords = Mutex(ThawedRecords())
    /// What the gateway holds against a host that pages idle memory out (``PageCachePin``),
    /// within ``pageHoldBudgetBytes``.
    private let heldPages: Mutex<HeldPages<PageCachePin>>
    /// Most memory the gateway locks in the page cache against the host's idle page-out
    /// (`kiln serve --hold-pages`; 0: nothing is held).
    public let pageHoldBudgetBytes: Int
    /// Lets go of the pins of snapshots removed or baked again, every ``stalePinCheckInterval``.
    private let stalePinCheck = Mutex<Task<Void, Never>?>(nil)
    /// Whether the host pages out idle memory (``IdlePageOut``): files are pinned only then.
    private let hostPagesOutIdleMemory: Bool
    private let logger: Logger

    /// - Parameter logger: where verification and fallback are logged (default: kiln's own).
    public init(
        kiln: Kiln, readinessTimeout: Duration = .seconds(30), coldStartFallback: Bool = true, remote: RemoteFunctions = RemoteFunctions(),
        logger: Logger? = nil, network: String? = nil, preparedNamespaces: Int = 2, standbyMode: StandbyMode = .thaw,
        pageHoldBudgetBytes: Int? = nil
    ) {
        self.kiln = kiln
        let budget = pageHoldBudgetBytes ?? Self.defaultPageHoldBudgetBytes
        self.pageHoldBudgetBytes = budget
        heldPages = Mutex(HeldPages(budgetBytes: budget))
        self.standbyMode = standbyMode
        self.network = network
        self.preparedNamespaces = preparedNamespaces
        self.readinessTimeout = readinessTimeout
        self.coldStartFallback = coldStartFallback
        self.remote = remote
        self.logger = logger ?? kiln.logger
        hostPagesOutIdleMemory = budget > 0 && !IdlePageOut.current().isEmpty
        // The gateway's own code too: what a request at zero runs (the thaw, the connect) may
        // not have run for minutes.
        if hostPagesOutIdleMemory { PageCachePin.lockOwnExecutableOnFault() }
    }

    public func functionExists(_ function: String) -> Bool {
        // validate() first: a name is a path component in the store.
        (try? SnapshotStore.validate(name: function)) != nil && (kiln.store.exists(function) || remote.references[function] != nil)
    }

    public func functionNames() -> [String] {
        Array(Set(((try? kiln.store.list()) ?? []).map(\.name)).union(remote.references.keys)).sorted()
    }

    /// Loads the manifest and checks every image file's size and SHA-256 (on a thread of its
    /// own: hashing hundreds of MB would otherwise hold one of the few threads that serve
    /// requests).
    public func prepare(_ function: String) async throws {
        let kiln = self.kiln
        if let reference = remote.references[function], !kiln.store.exists(function) {
            // First request for a function this host has never seen: pull it (signature, host
            // check, digests, atomic commit) and keep it in the store for every later restore.
            let pulled = try await kiln.pull(reference, as: function, access: remote.access, trusted: remote.trusted)
            logger.info(
                "pulled snapshot",
                metadata: [
                    "function": "\(function)", "reference": "\(reference)", "digest": "\(pulled.digest)",
                    "bytes": "\(pulled.sizeBytes)", "pull_ms": "\(Int(pulled.pullMs))", "signed_by": "\(pulled.signedBy ?? "-")",
                ])
        }
        let (manifest, verifyMs) = try await onDedicatedThread { try kiln.loadVerified(function) }
        manifests.withLock { $0[function] = manifest }
        if preparedNamespaces > 0, pools.withLock({ $0[function] }) == nil,
            let pool = try await kiln.namespacePool(for: manifest, network: network, capacity: preparedNamespaces)
        {
            let installed = pools.withLock { table -> Bool in
                guard table[function] == nil else { return false }
                table[function] = pool
                return true
            }
            if !installed { await pool.drain() }
        }
        logger.info(
            "verified snapshot",
            metadata: [
                "function": "\(function)", "files": "\(manifest.files.count)", "bytes": "\(manifest.sizeBytes)", "verify_ms": "\(Int(verifyMs))",
            ])
    }

    public func launch(_ function: String) async throws -> LaunchReport {
        guard let manifest = manifests.withLock({ $0[function] }) else {
            throw LaunchFailure(restoreError: "snapshot '\(function)' was not verified before its launch", coldStartError: nil)
        }
        let started = ContinuousClock.now
        let restoreError: any Error
        do {
            let pool = pools.withLock { $0[function] }
            let record = try await kiln.restoreOne(manifest, readinessTimeout: readinessTimeout, network: network, pool: pool)
            if hostPagesOutIdleMemory {
                heldPages.withLock { $0.used(function, at: .now) }
                holdPages(of: record, function: function, manifest: manifest, after: Self.restoredCopyPinDelay)
            }
            return LaunchReport(instance: Self.instance(record, .restored), restoreDuration: started.duration(to: .now))
        } catch {
            restoreError = error
        }
        guard coldStartFallback else { throw LaunchFailure(restoreError: "\(restoreError)", coldStartError: nil) }
        logger.warning(
            "restore failed; cold-starting the function's command instead", metadata: ["function": "\(function)", "error": "\(restoreError)"])
        let coldStarted = ContinuousClock.now
        do {
            let record = try await kiln.startColdInstance(manifest, network: network)
            return LaunchReport(
                instance: Self.instance(record, .coldStart), restoreFailure: "\(restoreError)", coldStartDuration: coldStarted.duration(to: .now))
        } catch {
            throw LaunchFailure(restoreError: "\(restoreError)", coldStartError: "\(error)")
        }
    }

    /// Restores a copy and freezes it, before its identity step or after its readiness as
    /// ``standbyMode`` says (``Kiln/restoreOne(_:readinessTimeout:pollInterval:shareMemory:network:pool:standby:)``),
    /// then measures its memory (PSS: what it adds to the machine next to the other copies).
    public func launchStandby(_ function: String) async throws -> StandbyReport {
        guard let manifest = manifests.withLock({ $0[function] }) else {
            throw LaunchFailure(restoreError: "snapshot '\(function)' was not verified before its launch", coldStartError: nil)
        }
        let started = ContinuousClock.now
        let pool = pools.withLock { $0[function] }
        let record = try await kiln.restoreOne(manifest, readinessTimeout: readinessTimeout, network: network, pool: pool, standby: standbyMode)
        let duration = started.duration(to: .now)
        let pids = ProcessInspector.pids(inCgroup: record.cgroupPath)
        let memory = MemoryUsage.of(pids: pids.isEmpty ? [record.pid] : pids)
        // In the background: locking a copy's ~200 MiB of resident pages takes a while, and the
        // copy is ready for a request as soon as the pool has it.
        if hostPagesOutIdleMemory { holdPages(of: record, function: function, manifest: manifest, after: .zero) }
        return StandbyReport(
            instance: Self.instance(record, .restored), duration: duration, memoryBytes: Int(memory.pssBytes),
            acceptsConnectionsWhileFrozen: record.standbyMode == .ready)
    }

    /// How long after a restore its files are pinned: not beside the request the copy was
    /// restored for (locking ~200 MiB of pages takes the CPU for tens of milliseconds), and long
    /// before a quiet minute would drop them.
    static let restoredCopyPinDelay = Duration.seconds(2)

    /// How often the pins are checked against the store (``releaseStalePins()``).
    static let stalePinCheckInterval = Duration.seconds(30)

    /// A quarter of the host's memory: room for ~20 Spring functions' pins on a 24 GiB host,
    /// and three quarters left to what locked pages would otherwise crowd out.
    public static var defaultPageHoldBudgetBytes: Int { Int(ProcessInfo.processInfo.physicalMemory / 4) }

    /// Holds, in the background after `delay`, the page cache pages a restore of `function`
    /// needs against the host's idle page-out, while the gateway runs and the budget allows
    /// (``HeldPages``): the files the new copy maps (its page images, the JDK's libraries
    /// whole), the snapshot's image files CRIU reads, and the programs a restore runs. Without
    /// them a restore at zero after 100 s quiet took 90-125 ms instead of 52-53 ms (the Spring
    /// sample; ``PageCachePin``, docs/restore-path.md).
    private func holdPages(of record: InstanceRecord, function: String, manifest: SnapshotManifest, after delay: Duration) {
        startStalePinCheck()
        Task.detached(priority: .background) {
            if delay > .zero { try? await Task.sleep(for: delay) }
            self.pinFiles(of: record, function: function, manifest: manifest)
            self.pinPrograms()
        }
    }

    /// Pins what a copy of `function` maps and its snapshot's image files (a compressed or
    /// encrypted snapshot's are restored from tmpfs, which the page-out leaves alone). The pages
    /// were resident already (only those are pinned, but for the libraries, held whole), so this
    /// holds memory the copies use rather than adding any. A copy that maps only files its
    /// function's pin holds already (every later copy of the same snapshot) needs none: locking
    /// ~200 MiB again each time took the CPU from the requests the copies were answering
    /// meanwhile. One that maps others (a replaced snapshot's images) gets a pin of its own,
    /// which replaces the function's previous one. A copy already gone by now is left for the next.
    private func pinFiles(of record: InstanceRecord, function: String, manifest: SnapshotManifest) {
        let version = Kiln.snapshotVersion(of: manifest)
        let images =
            manifest.compression == nil && manifest.encryption == nil
            ? manifest.files.map { "\(kiln.store.dumpDirectory(of: manifest.name))/\($0.path)" } : []
        guard !heldPages.withLock({ $0.refuses(function, snapshotVersion: version) }),
            let mapped = PageCachePin.fileIdentities(mappedBy: record.pid)
        else { return }
        let needed = mapped.union(images.compactMap(PageCachePin.fileIdentity(ofFileAt:)))
        if let held = heldPages.withLock({ $0.functions[function]?.pin.fileIdentities }), needed.isSubset(of: held) { return }
        let pin: PageCachePin
        do {
            pin = try PageCachePin.pinning(filesMappedBy: record.pid, and: images)
        } catch {
            // The copy was stopped meanwhile (scaled down): the next one is pinned instead.
            logger.debug("could not pin a copy's file pages", metadata: ["function": "\(function)", "error": "\(error)"])
            return
        }
        let (outcome, release) = heldPages.withLock { $0.keep(pin, for: function, snapshotVersion: version, at: .now) }
        for released in release { released.release() }
        let mib = "\(pin.lockedBytes >> 20)"
        switch outcome {
        case .kept(let evicted):
            logger.debug(
                "holding the function's file pages against the host's idle page-out",
                metadata: ["function": "\(function)", "files": "\(pin.files)", "locked_mib": "\(mib)"])
            if !evicted.isEmpty {
                logger.info(
                    "let go of the held pages of the functions restored longest ago, to stay within --hold-pages",
                    metadata: [
                        "function": "\(function)", "released": "\(evicted.joined(separator: ","))",
                        "budget_mib": "\(pageHoldBudgetBytes >> 20)",
                    ])
            }
        case .overBudget:
            logger.notice(
                "not holding the function's pages against the host's idle page-out: they alone exceed --hold-pages; its restores after a quiet minute read them from disk (raise --hold-pages to hold them)",
                metadata: ["function": "\(function)", "locked_mib": "\(mib)", "budget_mib": "\(pageHoldBudgetBytes >> 20)"])
        case .ended:
            break
        }
    }

    /// Pins the programs a restore runs, once, whole (runc and CRIU: ~15 MB).
    private func pinPrograms() {
        let programs = kiln.runtime.programs
        guard !programs.isEmpty, heldPages.withLock({ $0.programs == nil }) else { return }
        let pin = PageCachePin.pinning(files: programs, whole: true)
        guard heldPages.withLock({ $0.keep(programs: pin) }) else {
            pin.release()
            return
        }
        logger.debug(
            "holding the restore's programs against the host's idle page-out",
            metadata: ["programs": "\(programs.joined(separator: " "))", "locked_mib": "\(pin.lockedBytes >> 20)"])
    }

    /// Starts, once, the background check that lets go of stale pins.
    private func startStalePinCheck() {
        stalePinCheck.withLock { task in
            guard task == nil else { return }
            task = Task.detached(priority: .background) { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.stalePinCheckInterval)
                    guard let self, !Task.isCancelled else { return }
                    self.releaseStalePins()
                }
            }
        }
    }

    /// Lets go of the pins of functions whose snapshot was removed (`kiln rm`) or baked again
    /// since: the files they hold are no restore's any more, and a removed file's pages would
    /// stay in memory as long as they are locked. Returns the functions let go.
    @discardableResult
    package func releaseStalePins() -> [String] {
        let store = kiln.store
        let (stale, release) = heldPages.withLock { held in
            held.keepOnly { function in (try? store.load(function)).map(Kiln.snapshotVersion(of:)) }
        }
        for pin in release { pin.release() }
        if !stale.isEmpty {
            logger.info(
                "let go of held pages of snapshots removed or baked again", metadata: ["functions": "\(stale.joined(separator: ","))"])
        }
        return stale
    }

    /// The files held for `function` (device and inode, ``PageCachePin/fileIdentities``); nil
    /// when nothing is.
    package func heldFiles(of function: String) -> Set<String>? { heldPages.withLock { $0.functions[function]?.pin.fileIdentities } }

    /// What is held now, within ``pageHoldBudgetBytes``; nil on a host that pages nothing out
    /// (or with a budget of 0), where nothing is.
    public func heldPageUsage() -> HeldPageUsage? {
        guard hostPagesOutIdleMemory else { return nil }
        return heldPages.withLock { held in
            HeldPageUsage(
                functions: held.functions.mapValues(\.pin.lockedBytes), programs: held.programs?.lockedBytes ?? 0,
                budget: held.budgetBytes)
        }
    }

    /// The programs held (``ContainerRuntime/programs``), by device and inode; nil before a
    /// restore has run them.
    package var heldPrograms: Set<String>? { heldPages.withLock { $0.programs?.fileIdentities } }

    /// Thaws a ``StandbyMode/thaw`` standby copy: identity, afterRestore, readiness
    /// (``Kiln/thaw(_:manifest:readinessTimeout:pollInterval:savingRecord:)``); hands a
    /// ``StandbyMode/ready`` one out still frozen (``Kiln/handOutFrozen(_:)``), for
    /// ``handedOut(_:)`` to unfreeze once its requests are on their way.
    public func thaw(_ standby: GatewayInstance) async throws -> LaunchReport {
        guard let record = standby.record, let manifest = manifests.withLock({ $0[standby.function] }) else {
            throw LaunchFailure(restoreError: "standby copy \(standby.id) has no record or verified snapshot", coldStartError: nil)
        }
        // The pool hands a ready copy out itself (``handOutAtOnce(_:)``); one that comes here
        // anyway is handed out the same way.
        if let report = handOutAtOnce(standby) { return report }
        // Any other copy is thawed into its identity and answers first; its record is saved
        // once its first request is over (``recordThawed(_:)``).
        let thawed = try await kiln.thaw(record, manifest: manifest, readinessTimeout: readinessTimeout, savingRecord: false)
        unsavedRecords.withLock { $0.thawed(thawed.id) }
        return LaunchReport(instance: Self.instance(thawed, .thawed))
    }

    /// Hands out a ``StandbyMode/ready`` copy still frozen (``Kiln/handOutFrozen(_:)``), from
    /// the request's own thread; nil for any other copy. Its request is sent first and queued by
    /// the kernel, and ``handedOut(_:)`` unfreezes it: its wake (40 JVM threads at once, on both
    /// CPUs) no longer stands between kiln and the request (the readiness request kiln once sent
    /// after the unfreeze took 2-7 ms, the record's save after it 2.5-8 ms; Spring sample,
    /// `kiln bench standby`).
    public func handOutAtOnce(_ standby: GatewayInstance) -> LaunchReport? {
        guard let record = standby.record, record.standbyMode == .ready, let handedOut = try? kiln.handOutFrozen(record) else { return nil }
        unsavedRecords.withLock { $0.thawed(handedOut.id) }
        return LaunchReport(instance: Self.instance(handedOut, .thawed))
    }

    /// A thawed copy's requests are on their way: a ready copy handed out frozen is unfrozen
    /// now. Its record is saved once its first request is over (``recordThawed(_:)``); until
    /// then the record on disk still says standby, and the copy is the gateway's alone.
    public func handedOut(_ thawed: GatewayInstance) {
        guard var record = thawed.record else { return }
        if record.standbyMode == .ready {
            do {
                record = try kiln.unfreezeHandedOut(record)
            } catch {
                logger.warning("could not unfreeze handed-out copy \(record.id): \(error)")
                unsavedRecords.withLock { $0.forget(record.id) }
                return
            }
        }
        if hostPagesOutIdleMemory { heldPages.withLock { $0.used(thawed.function, at: .now) } }
        unsavedRecords.withLock { table in
            // Saved now if its request came back before this ran (a fast answer to a copy thawed
            // by ``thaw(_:)``); under the lock, as below.
            if let due = table.handedOut(record) { save(due) }
        }
    }

    /// Saves a thawed copy's record as running, its first request over; or notes that it is
    /// due, when that request came back before ``handedOut(_:)`` ran.
    public func recordThawed(_ thawed: GatewayInstance) {
        unsavedRecords.withLock { table in
            // Under the lock: ``terminate(_:)`` takes it first, so a copy being stopped never
            // has its record written into a directory being removed.
            if let record = table.firstRequestOver(thawed.id) { save(record) }
        }
    }

    private func save(_ record: InstanceRecord) {
        do {
            try kiln.recordThawed(record)
        } catch {
            logger.warning("could not record thawed copy \(record.id): \(error)")
        }
    }

    /// Detaches and deletes every prepared namespace (once every instance is gone).
    public func shutdown() async {
        let all = pools.withLock { table in
            defer { table = [:] }
            return Array(table.values)
        }
        for pool in all { await pool.drain() }
        kiln.removePoolNamespaceDirectory()
        stalePinCheck.withLock { $0?.cancel() }
        for pin in heldPages.withLock({ $0.releaseAll() }) { pin.release() }
    }

    public func isAlive(_ instance: GatewayInstance) -> Bool {
        ProcessInspector.isAlive(instance.pid)
    }

    public func terminate(_ instance: GatewayInstance) async {
        // Its record is removed with it: no late save.
        unsavedRecords.withLock { $0.forget(instance.id) }
        guard let record = instance.record else { return }
        // An instance that died (kill -9) may still be exiting: runc cannot remove a cgroup that
        // still holds a task, so give the shim a moment to reap it first.
        let deadline = ContinuousClock.now + .seconds(2)
        while !ProcessInspector.isAlive(record.pid), FileManager.default.fileExists(atPath: "/proc/\(record.pid)"), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        do {
            try await kiln.stop(record)
        } catch {
            logger.error("could not stop instance", metadata: ["instance": "\(instance.id)", "error": "\(error)"])
        }
    }

    static func instance(_ record: InstanceRecord, _ origin: GatewayInstance.Origin) -> GatewayInstance {
        GatewayInstance(id: record.id, function: record.snapshot, endpoint: record.endpoint, pid: record.pid, origin: origin, record: record)
    }
}

/// The functions `kiln serve` pulls from a registry on their first request, and how.
public struct RemoteFunctions: Sendable {
    /// Function name to the registry reference of its snapshot.
    public var references: [String: RegistryReference]
    public var access: RegistryAccess
    /// With keys, a pulled snapshot must be signed by one of them (`--verify`).
    public var trusted: [SnapshotVerifyingKey]

    public init(references: [String: RegistryReference] = [:], access: RegistryAccess = RegistryAccess(), trusted: [SnapshotVerifyingKey] = []) {
        self.references = references
        self.access = access
        self.trusted = trusted
    }

    /// Parses `--pull NAME=REF` arguments.
    public init(arguments: [String], access: RegistryAccess, trusted: [SnapshotVerifyingKey]) throws {
        var references: [String: RegistryReference] = [:]
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "=") else {
                throw KilnError(.invalidArgument, "--pull '\(argument)' names no function", hint: "write it as NAME=HOST[:PORT]/REPOSITORY[:TAG]")
            }
            let name = String(argument[..<equals])
            try SnapshotStore.validate(name: name)
            guard references[name] == nil else { throw KilnError(.invalidArgument, "--pull names function '\(name)' twice") }
            references[name] = try RegistryReference(parsing: String(argument[argument.index(after: equals)...]))
        }
        self.init(references: references, access: access, trusted: trusted)
    }
}
