import Foundation
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

/// The life of one sandbox, from its scratch directory to its tear-down: the one place that
/// creates, starts, restores, checkpoints and removes a container. Bake, restore, the gateway's
/// cold-start fallback and the benchmarks all go through it.
///
/// It remembers what it has acquired (directory, network namespace, container and its shim), so
/// ``tearDown()`` releases exactly that, in reverse order, whichever step failed; and every step's
/// failure names the step (``Step``) in the error's action. One owner: the value is a struct whose
/// mutating steps are called by the flow that made it, never shared.
///
/// ```
/// directory ─► prepare (netns, [network], bundle) ─► start ───────────────────────────────────────────► waitUntilReady ─► [beforeCheckpoint ─► checkpoint] ─► tearDown
///                                                └─► restore ─┬──────────────────► identity ─► afterRestore ─┘
///                                                             └─► freeze ┄┄ thaw ─┘   (a standby copy)
/// ```
///
/// A copy being restored may be attached to its network while the runtime restores it
/// (``prepare(_:ownerMark:network:attachDuringRestore:)``); ``restore(dump:mergeMemory:)`` returns
/// once both are done.
///
/// A standby copy stops after ``freeze()``: restored, frozen in its cgroup before its identity
/// step, so it has no hostname, instance id or reseeded randomness of its own yet; ``thaw()``
/// (on an adopted lifecycle, later, perhaps in another process) resumes it where the restore
/// would have gone on.
package struct SandboxLifecycle {
    /// A step of the life, named in errors ("... (while restoring the container)").
    package enum Step: String, Sendable, CaseIterable, CustomStringConvertible {
        case directory, networkNamespace, network, bundle, start, restore, identity, readiness, beforeCheckpoint, preflight, checkpoint, afterRestore,
            freeze, thaw, warmUp, trimNativeHeap

        package var description: String {
            switch self {
            case .directory: "creating its scratch directory"
            case .networkNamespace: "creating its network namespace"
            case .network: "attaching it to its network"
            case .bundle: "writing its OCI bundle"
            case .start: "starting the container"
            case .restore: "restoring the container"
            case .identity: "giving the copy its identity"
            case .readiness: "waiting for the service to answer"
            case .beforeCheckpoint: "running the service's CRaC beforeCheckpoint"
            case .preflight: "checking what would break the restored copies"
            case .checkpoint: "checkpointing the container"
            case .afterRestore: "running the copy's CRaC afterRestore"
            case .freeze: "freezing the standby copy"
            case .thaw: "thawing the standby copy"
            case .warmUp: "warming up the standby copy before its freeze"
            case .trimNativeHeap: "returning the standby copy's free native memory before its freeze"
            }
        }
    }

    /// The container id (also the copy's hostname).
    package let id: String
    /// The scratch directory: bundle, work directory, console log, records.
    package let directory: String
    /// What the runtime needs to know of the sandbox.
    package private(set) var instance: SandboxContainer
    /// What the flow is doing, e.g. "restoring snapshot 'hello' as hello-3fa9c1": the action of
    /// every error this lifecycle throws.
    package let purpose: String
    /// The running container, once started or restored.
    package private(set) var container: ContainerProcess?
    /// Its place on a network (address, veth, rules), once the network step attached it.
    package private(set) var attachment: NetworkAttachment?

    private let runtime: any ContainerRuntime
    let host: any SandboxHost
    private let runtimeStateRoot: String
    private let logger: Logger
    private var holdsDirectory = false
    private var holdsNetworkNamespace = false
    private var networkPlan = SandboxNetworkPlan.none
    /// The network step under way while the runtime restores the container
    /// (``prepare(_:ownerMark:network:attachDuringRestore:)``); ``restore(dump:mergeMemory:)``
    /// waits for it.
    private var pendingAttachment: Task<NetworkAttachment, any Error>?
    /// Its cgroup may be frozen (it froze it, or it adopted a sandbox): thawed before the
    /// tear-down, since a frozen task cannot die.
    private var mayBeFrozen = false
    /// The restore leaves the copy's processes stopped (CRIU's `leave-stopped`, in a standby
    /// copy's configuration): ``freeze()`` lets them go from the stop into the freezer.
    package var restoresStopped = false

    /// The service's output.
    package var logPath: String { "\(directory)/console.log" }
    /// Where the runtime and CRIU write their logs and work files.
    package var workDirectory: String { "\(directory)/work" }
    /// How kiln reaches the service: its port inside the sandbox's network namespace (and its
    /// address, on a network).
    package func endpoint(port: Int) -> ServiceEndpoint {
        ServiceEndpoint(networkNamespacePath: instance.networkNamespacePath, port: port, address: attachment?.ip)
    }

    /// A sandbox `id` living in `directory`; nothing exists until the first step.
    /// `criuConfigPath` is the CRIU configuration runc passes to its checkpoint and restore.
    package init(
        id: String, directory: String, purpose: String, paths: KilnPaths, criuConfigPath: String?,
        runtime: any ContainerRuntime, host: any SandboxHost, logger: Logger
    ) {
        self.id = id
        self.directory = directory
        self.purpose = purpose
        self.instance = SandboxContainer(
            id: id, bundlePath: "\(directory)/bundle", networkNamespacePath: "\(paths.networkNamespaces)/\(id)",
            cgroupPath: "\(paths.cgroupParent)/\(id)", criuConfigPath: criuConfigPath, agentDirectory: "\(directory)/agent")
        self.runtime = runtime
        self.host = host
        self.runtimeStateRoot = paths.runcRoot
        self.logger = logger
    }

    /// The lifecycle of a sandbox that already runs (an instance from its record, or one found by
    /// `kiln gc`): everything it may hold counts as held, so ``tearDown()`` removes it all.
    package static func adopting(
        id: String, directory: String, shimPid: Int32?, containerPid: Int32 = 0, paths: KilnPaths,
        runtime: any ContainerRuntime, host: any SandboxHost, logger: Logger, purpose: String? = nil
    ) -> SandboxLifecycle {
        var lifecycle = SandboxLifecycle(
            id: id, directory: directory, purpose: purpose ?? "stopping \(id)", paths: paths, criuConfigPath: paths.criuConfig,
            runtime: runtime, host: host, logger: logger)
        lifecycle.holdsDirectory = true
        lifecycle.holdsNetworkNamespace = true
        lifecycle.mayBeFrozen = true
        if let shimPid { lifecycle.container = ContainerProcess(pid: containerPid, shimPid: shimPid) }
        return lifecycle
    }

    /// Creates the scratch directory (marked as this process's with `ownerMark`, so `kiln gc`
    /// leaves it alone while this process lives).
    package mutating func createDirectory(ownerMark: Bool) throws {
        guard !holdsDirectory else { return }
        try step(.directory) {
            // Held from the first attempt: a directory created half-way is removed too.
            holdsDirectory = true
            try host.makeDirectory(directory, ownerMark: ownerMark)
        }
    }

    /// Creates the directory if needed, the work directory, the network namespace, its place on
    /// a network (``Step/network``: attached now, or a namespace taken from a pool instead of a
    /// new one) and the bundle, whose `/etc/resolv.conf` is the network's.
    ///
    /// With `attachDuringRestore` (a copy about to be restored), the attachment runs while the
    /// runtime restores the container and ``restore(dump:mergeMemory:)`` waits for it before it
    /// returns: CNI's plugins (a few process starts, 20-40 ms here) and `runc restore` then share
    /// the wait instead of adding up. A restored copy needs its address only once its own code
    /// runs again after the restore (its agent's afterRestore reopens its connections; the
    /// restored listening socket is bound to the wildcard address), and its `/etc/resolv.conf` is
    /// filled in once the network has answered. A bake or cold start attaches first: its service
    /// may reach the network from its first instruction.
    package mutating func prepare(
        _ spec: SandboxSpec, ownerMark: Bool, network plan: SandboxNetworkPlan, attachDuringRestore: Bool = false
    ) async throws {
        guard plan.isNetworked else { return try prepare(spec, ownerMark: ownerMark) }
        try createDirectory(ownerMark: ownerMark)
        try step(.directory) { try host.makeDirectory(workDirectory, ownerMark: false) }
        networkPlan = plan
        switch plan {
        case .none:
            break
        case .attach(let network, let tag):
            try step(.networkNamespace) {
                holdsNetworkNamespace = true
                try host.createNetworkNamespace(at: instance.networkNamespacePath)
            }
            if attachDuringRestore {
                pendingAttachment = Task { [instance, id] in
                    try await network.attach(namespacePath: instance.networkNamespacePath, id: id, tag: tag)
                }
            } else {
                attachment = try await step(.network) { [instance, id] in
                    try await network.attach(namespacePath: instance.networkNamespacePath, id: id, tag: tag)
                }
            }
        case .pool(let pool):
            // The pool owns the namespace: it deletes it when the attachment is given back.
            let taken = try await step(.network) { try await pool.take() }
            attachment = taken
            instance.networkNamespacePath = taken.namespacePath
        }
        if mountsNetworkResolvConf {
            // An attachment under way gives its text later (``finishAttachment()``): the mount's
            // file exists, empty, from the start.
            instance.resolvConf = attachment?.resolvConf ?? (pendingAttachment != nil ? "" : nil)
        }
        useAgentLayout(spec.agent)
        try step(.bundle) { try host.writeBundle(spec, for: instance) }
    }

    /// Where this sandbox's agent control directory is on the host, by the agent's layout
    /// (``CRaCAgent/mountsOneDirectory``): `agent/control`, the mounted `agent` directory also
    /// holding the jar; in the older layout `agent` itself. Set by ``prepare(_:ownerMark:)``;
    /// an adopted sandbox (a standby copy being thawed) is told by its snapshot.
    package mutating func useAgentLayout(_ agent: CRaCAgent?) {
        instance.agentDirectory = agent?.mountsOneDirectory == true ? "\(directory)/agent/control" : "\(directory)/agent"
    }

    /// A sandbox of a networked snapshot restored without a network (`--network none`): the
    /// snapshot's `/etc/resolv.conf` mount is there, empty.
    package mutating func keepResolvConfMount() {
        if instance.resolvConf == nil { instance.resolvConf = "" }
    }

    /// Whether a sandbox on a network gets its `/etc/resolv.conf` mount (not for a copy of a
    /// loopback-only snapshot: its images have no such mount).
    package var mountsNetworkResolvConf = true

    /// Creates the directory if needed, the work directory, the network namespace and the bundle.
    package mutating func prepare(_ spec: SandboxSpec, ownerMark: Bool) throws {
        try createDirectory(ownerMark: ownerMark)
        try step(.directory) { try host.makeDirectory(workDirectory, ownerMark: false) }
        try step(.networkNamespace) {
            holdsNetworkNamespace = true
            try host.createNetworkNamespace(at: instance.networkNamespacePath)
        }
        useAgentLayout(spec.agent)
        try step(.bundle) { try host.writeBundle(spec, for: instance) }
    }

    /// Starts the sandbox's command from scratch, detached, its output going to ``logPath``.
    package mutating func start() async throws -> ContainerProcess {
        let started = try await step(.start) { [instance, logPath, runtime] in try await runtime.start(instance, logPath: logPath) }
        container = started
        return started
    }

    /// Restores the checkpoint in `images` as this sandbox's container; with `mergeMemory`, its
    /// anonymous memory is offered to KSM. An attachment prepared to run alongside is finished
    /// when this returns: the copy is on its network.
    package mutating func restore(dump: String, mergeMemory: Bool) async throws -> ContainerProcess {
        let restored: ContainerProcess
        do {
            restored = try await step(.restore) { [instance, logPath, workDirectory, runtime] in
                try await runtime.restore(instance, dumpDirectory: dump, workDirectory: workDirectory, logPath: logPath, mergeMemory: mergeMemory)
            }
        } catch {
            // The attachment is kept for the tear-down to detach, and for the error's explanation
            // (a socket bound to the bake's address names the copy's).
            await settleAttachment()
            throw error
        }
        container = restored
        try await finishAttachment()
        return restored
    }

    /// Waits for the attachment under way; its `/etc/resolv.conf` text goes into the file the
    /// container already mounts (rewritten in place: the bind mount holds the inode).
    private mutating func finishAttachment() async throws {
        guard let pending = pendingAttachment else { return }
        pendingAttachment = nil
        let attached = try await step(.network) { try await pending.value }
        attachment = attached
        guard mountsNetworkResolvConf else { return }
        instance.resolvConf = attached.resolvConf
        try step(.network) { try host.updateResolvConf(for: instance) }
    }

    /// Waits for the attachment under way, whatever it ends in: one that succeeded is this
    /// sandbox's to detach; one that failed has undone itself.
    private mutating func settleAttachment() async {
        guard let pending = pendingAttachment else { return }
        pendingAttachment = nil
        attachment = try? await pending.value
    }

    /// The freeze step of a standby copy: every task of the restored container is frozen in its
    /// cgroup (the cgroup freezer), so the copy uses no CPU and answers nothing until ``thaw()``.
    /// Called right after the runtime's restore returns: the service has run since CRIU resumed
    /// it (a few ms), still with the bake's identity, and must not run longer so.
    package mutating func freeze() throws {
        guard container != nil else { throw notRunning(.freeze) }
        mayBeFrozen = true
        try step(.freeze) {
            try host.setFrozen(true, cgroupPath: instance.cgroupPath)
            // Stopped tasks count as frozen; continued now, they go straight into the freezer,
            // so not one instruction of the copy runs before its thaw.
            if restoresStopped { try host.continueStopped(inCgroup: instance.cgroupPath) }
        }
    }

    /// The thaw step: the frozen copy runs again from where it was frozen; its identity,
    /// afterRestore and readiness steps follow as after a restore.
    package func thaw() throws {
        guard container != nil else { throw notRunning(.thaw) }
        try step(.thaw) { try host.setFrozen(false, cgroupPath: instance.cgroupPath) }
    }

    /// Gives a restored copy its own hostname (CRIU brings back the one it was dumped with).
    package func assumeIdentity(hostname: String) throws {
        guard let container else { throw notRunning(.identity) }
        try step(.identity) { try host.setHostname(hostname, ofProcess: container.pid) }
    }

    /// Waits until the service answers `readiness` on `port`, then returns how long that took.
    /// A service that died or never answered is explained: its last output, a port already in
    /// use, the ports it does listen on. The error points at `keptLogPath`, where the caller
    /// keeps the log once the sandbox is gone.
    @discardableResult
    package func waitUntilReady(
        port: Int, readiness: ReadinessCheck, interval: Duration, appDirectory: String?, keptLogPath: String? = nil,
        since start: ContinuousClock.Instant = .now
    ) async throws -> Double {
        let limit = Duration.milliseconds(Int(readiness.timeoutSeconds * 1000))
        let outcome = try await probe(port: port, path: readiness.path, timeout: limit, interval: interval)
        let elapsed = start.duration(to: .now).milliseconds
        guard outcome != .ready, let container else { return elapsed }
        throw explainNotReady(
            outcome, port: port, readiness: readiness, appDirectory: appDirectory, pid: container.pid, keptLogPath: keptLogPath ?? logPath
        ).during(action(.readiness))
    }

    /// Polls `path` on `port` until the service answers 2xx, its process dies or `timeout` passes.
    package func probe(port: Int, path: String, timeout: Duration, interval: Duration) async throws -> ReadinessProbe.Outcome {
        guard let container else { throw notRunning(.readiness) }
        let probe = ReadinessProbe(endpoint: endpoint(port: port), path: path, pid: container.pid, timeout: timeout, interval: interval)
        return try await host.waitUntilReady(probe)
    }

    /// Sends `GET` of `paths` to the service on `port` (kept-alive connections of
    /// `perConnection` requests, `shapes` in turn); an answer that is no success (2xx or 3xx)
    /// fails the step with the service's last output.
    package func warmUp(paths: [String], port: Int, perConnection: Int, shapes: [RequestShape]) async throws {
        guard container != nil else { throw notRunning(.warmUp) }
        try await step(.warmUp) { [host, endpoint = endpoint(port: port), logPath] in
            let statuses = try await host.sendRequests(paths, to: endpoint, perConnection: perConnection, shapes: shapes)
            if let failed = zip(paths, statuses).first(where: { !(200..<400).contains($0.1) }) {
                throw KilnError(
                    .restoreFailed, "GET \(failed.0) answered HTTP \(failed.1)", details: ProcessInspector.lastLines(ofFile: logPath, count: 15),
                    logPath: logPath)
            }
        }
    }

    /// Checkpoints the container into `dumpDirectory`; the container is gone afterwards.
    package mutating func checkpoint(into dumpDirectory: String) async throws {
        guard container != nil else { throw notRunning(.checkpoint) }
        try await step(.checkpoint) { [id, workDirectory, runtime] in
            try await runtime.checkpoint(id: id, dumpDirectory: dumpDirectory, workDirectory: workDirectory)
        }
    }

    /// Moves the file at `path` (a log inside the scratch directory) to `destination` so it
    /// outlives the tear-down; returns where it is now.
    package func keep(_ path: String, at destination: String) -> String {
        guard path.hasPrefix(directory + "/") else { return path }
        return host.moveFile(path, to: destination) ? destination : path
    }

    /// Removes whatever exists of the sandbox: the container, any process still in its cgroups
    /// (and the cgroups), its network namespace, its shim and its directory. Safe on a half-made
    /// sandbox, on one whose runc or CRIU was killed half-way, and twice.
    package mutating func tearDown() async {
        if mayBeFrozen {
            // runc kills a paused container's tasks, but they die only once thawed.
            try? host.setFrozen(false, cgroupPath: instance.cgroupPath)
            mayBeFrozen = false
        }
        do {
            try await runtime.delete(id: id)
        } catch {
            logger.warning("could not delete container \(id): \(error)")
        }
        let left = await host.removeLeftovers(
            cgroupPath: instance.cgroupPath, mountRoots: holdsDirectory ? [directory] : [], runtimeState: "\(runtimeStateRoot)/\(id)")
        if !left.isEmpty { logger.error("could not remove the cgroups of \(id): \(left.joined(separator: ", "))") }
        await releaseNetwork()
        if holdsNetworkNamespace { host.removeNetworkNamespace(at: instance.networkNamespacePath) }
        if let shim = container?.shimPid { host.reapShim(shim) }
        if holdsDirectory { host.removeDirectory(directory) }
        holdsNetworkNamespace = false
        holdsDirectory = false
        container = nil
    }

    /// An adopted sandbox's place on `network` (from its record), so ``tearDown()`` detaches it.
    package mutating func adoptNetwork(_ attachment: NetworkAttachment, network: any SandboxNetwork) {
        self.attachment = attachment
        networkPlan = .attach(network, tag: attachment.tag)
        instance.networkNamespacePath = attachment.namespacePath
    }

    /// Takes the sandbox off its network once its container is gone: a pool's namespace goes back
    /// to the pool (detached and deleted in the background), an attachment is detached now. A
    /// detach that fails leaves the address in CNI's cache, where `kiln gc` finds it.
    private mutating func releaseNetwork() async {
        await settleAttachment()
        guard let attachment else { return }
        switch networkPlan {
        case .none:
            break
        case .pool(let pool):
            await pool.release(attachment)
        case .attach(let network, _):
            do {
                try await network.detach(attachment)
            } catch {
                logger.warning("could not detach \(id) from the network '\(network.name)' ('kiln gc' will): \(error)")
            }
        }
        self.attachment = nil
    }

    // MARK: - Steps and their errors

    func action(_ step: Step) -> String { "\(purpose) (while \(step))" }

    func notRunning(_ step: Step) -> KilnError {
        KilnError(.runtimeFailed, "the sandbox has no running container", action: action(step))
    }

    private func step<T>(_ step: Step, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw KilnError.wrapping(error, as: .systemCall, "\(step) failed: \(error)").during(action(step))
        }
    }

    private func step<T: Sendable>(_ step: Step, _ body: @Sendable () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw KilnError.wrapping(error, as: step == .restore ? .restoreFailed : .runtimeFailed, "\(step) failed: \(error)")
                .during(action(step))
        }
    }

    private func explainNotReady(
        _ outcome: ReadinessProbe.Outcome, port: Int, readiness: ReadinessCheck, appDirectory: String?, pid: Int32, keptLogPath: String
    ) -> KilnError {
        let lastLines = ProcessInspector.lastLines(ofFile: logPath, count: 15)
        switch outcome {
        case .ready:
            return KilnError(.runtimeFailed, "the service is ready")
        case .exited:
            if lastLines.contains(where: { $0.contains("Address already in use") || $0.contains("BindException") }) {
                return KilnError(
                    .portInUse, "the service could not listen on port \(port): it is already in use inside the sandbox",
                    hint: "something else in the command binds \(port); make the service listen on $PORT and pass a free --port",
                    details: lastLines, logPath: keptLogPath)
            }
            return KilnError(
                .serviceExited, "the service exited before it answered \(readiness.path); its last output:",
                hint:
                    "run the command by hand to see it start (it sees /usr and \(appDirectory ?? "its root") read-only, a tmpfs /tmp, and PORT=\(port))",
                details: lastLines, logPath: keptLogPath)
        case .timedOut(let lastSeen):
            let listening = host.listeningPorts(ofProcess: pid)
            let hint: String
            if !listening.isEmpty, !listening.contains(port) {
                hint =
                    "the service listens on \(listening.map(String.init).joined(separator: ", ")), not \(port): pass --port \(listening[0]) or make it listen on $PORT"
            } else {
                hint = "check that \(readiness.path) answers 2xx once the service is up, or allow more time with --ready-timeout"
            }
            return KilnError(
                .serviceNeverReady,
                "the service was not ready after \(Int(readiness.timeoutSeconds)) s (GET \(readiness.path) on port \(port): \(lastSeen)); its last output:",
                hint: hint, details: lastLines, logPath: keptLogPath)
        }
    }
}
