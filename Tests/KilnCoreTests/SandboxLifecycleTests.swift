import Foundation
import Logging
import Synchronization
import Testing

@testable import KilnEngine
@testable import KilnNetwork
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// The sandbox lifecycle's order of steps and its clean-up after a failure at each of them, with a
/// fake runtime and a fake host: no root, no runc, no CRIU, a few milliseconds per test.
@Suite("sandbox lifecycle with a fake runtime")
struct SandboxLifecycleTests {
    /// Where a fake fails.
    enum FailurePoint: String, CaseIterable, Sendable {
        case directory, networkNamespace, network, bundle, start, restore, identity, readinessExited, readinessTimedOut, checkpoint
        /// The fake agent answers checkpoint.failed / restore.failed.
        case beforeCheckpoint, afterRestore
        /// The cgroup freezer refuses (a standby copy's freeze, its thaw).
        case freeze, thaw
        /// A ready standby copy's warm-up gets an error status.
        case warmUp
    }

    struct InjectedFailure: Error, CustomStringConvertible {
        var point: FailurePoint
        var description: String { "injected failure at \(point.rawValue)" }
    }

    /// Records every call in order and what exists now; fails where it is told to.
    final class World: Sendable {
        struct State {
            var calls: [String] = []
            var namespaces: Set<String> = []
            var containers: Set<String> = []
            var shimsStarted: Set<Int32> = []
            var shimsReaped: Set<Int32> = []
            var nextPid: Int32 = 4_000_000
            /// Addresses attached and not yet detached, by attachment id.
            var addresses: [String: String] = [:]
            var nextAddress = 2
            /// The resolv.conf text of the last bundle written.
            var resolvConf: String?
            /// The fake agent's control directory (made with the bundle of a spec with an agent).
            var agentDirectory: String?
            /// Every sandbox's agent directory, by its cgroup path (several copies live at once).
            var agentDirectories: [String: String] = [:]
            /// The cgroups frozen now.
            var frozen: Set<String> = []
            /// Every request the fake agent read, in order.
            var agentRequests: [String] = []
            /// What the preflight sees.
            var preflight = PreflightSnapshot(processes: [], tcp: "", udp: "", unix: "", mounts: "")
            /// The service is no JVM: its agent never writes agent.ready.
            var noJVM = false
            /// The agent answers trim.request (and says so in restore.done), as kiln's agent
            /// since it has; false: an older agent's.
            var agentAnswersTrim = true
            /// How an agent that offers the trim answers a trim.request: nil as kiln's agent
            /// does; `.silent` never; `.error` with the JVM's refusal.
            var trimFault: TrimFault?
        }
        enum TrimFault { case silent, error }
        let state = Mutex(State())
        let failAt: FailurePoint?

        init(failAt: FailurePoint?) { self.failAt = failAt }

        func record(_ call: String) { state.withLock { $0.calls.append(call) } }
        func fail(_ point: FailurePoint) throws { if failAt == point { throw InjectedFailure(point: point) } }
        var calls: [String] { state.withLock { $0.calls } }
    }

    struct FakeHost: SandboxHost {
        let world: World

        func makeDirectory(_ path: String, ownerMark: Bool) throws {
            world.record("mkdir \((path as NSString).lastPathComponent)")
            // The directory exists from the first attempt, as a half-made one would.
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            if !path.hasSuffix("/work") { try world.fail(.directory) }
        }
        func createNetworkNamespace(at path: String) throws {
            world.record("netns create")
            world.state.withLock { _ = $0.namespaces.insert(path) }
            try world.fail(.networkNamespace)
        }
        func removeNetworkNamespace(at path: String) {
            world.record("netns remove")
            world.state.withLock { _ = $0.namespaces.remove(path) }
        }
        func writeBundle(_ spec: SandboxSpec, for instance: SandboxContainer) throws {
            world.record("bundle")
            world.state.withLock { $0.resolvConf = instance.resolvConf }
            try world.fail(.bundle)
            if spec.agent != nil, let directory = instance.agentDirectory {
                // The JVM's agent starts with the service (a restored copy's never writes it).
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                world.state.withLock {
                    $0.agentDirectory = directory
                    $0.agentDirectories[instance.cgroupPath] = directory
                }
                if !instance.id.hasSuffix("-bake") || world.state.withLock({ $0.noJVM }) { return }
                try Data("protocol=1\npid=1\nsignal=SIGWINCH\n".utf8).write(to: URL(fileURLWithPath: "\(directory)/agent.ready"))
            }
        }
        func updateResolvConf(for instance: SandboxContainer) throws {
            world.record("resolv.conf")
            world.state.withLock { $0.resolvConf = instance.resolvConf }
        }
        /// The fake agent: a wake makes it look at its directory, as the real one does.
        func wakeAgent(namespacePid: Int32, inCgroup cgroupPath: String, containerPid: Int32, wakeFIFO: String) throws {
            world.record("signal")
            guard namespacePid == 1, let directory = world.state.withLock({ $0.agentDirectories[cgroupPath] ?? $0.agentDirectory }) else {
                throw InjectedFailure(point: .afterRestore)
            }
            // A frozen process cannot take a signal's handler: the real agent would not answer.
            guard !world.state.withLock({ $0.frozen.contains(cgroupPath) }) else { return }
            let fileManager = FileManager.default
            func write(_ name: String, _ text: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: "\(directory)/\(name)")) }
            let failure = { (phase: String, message: String) in
                #"{"phase": "\#(phase)", "exception": "org.crac.CheckpointException", "errors": [{"class": "java.lang.IllegalStateException", "message": "\#(message)", "stack": "java.lang.IllegalStateException: \#(message)\n\tat Svc.callback(Svc.java:7)\n"}]}"#
            }
            if fileManager.fileExists(atPath: "\(directory)/checkpoint.request") {
                try fileManager.removeItem(atPath: "\(directory)/checkpoint.request")
                world.state.withLock { $0.agentRequests.append("checkpoint") }
                if world.failAt == .beforeCheckpoint {
                    try write("checkpoint.failed", failure("beforeCheckpoint", "no checkpoint today"))
                } else {
                    try write("checkpoint.ready", "pid=1\nresources=2\nelapsed_us=100\n")
                }
            } else if let request = fileManager.contents(atPath: "\(directory)/restore.request") {
                try fileManager.removeItem(atPath: "\(directory)/restore.request")
                world.state.withLock { $0.agentRequests.append(String(decoding: request, as: UTF8.self)) }
                if world.failAt == .afterRestore {
                    try write("restore.failed", failure("afterRestore", "no restore today"))
                } else {
                    let trim = world.state.withLock { $0.agentAnswersTrim } ? "trim=1\n" : ""
                    try write("restore.done", "pid=1\ninstance=x\nresources=2\nelapsed_us=300\nidentity_us=100\n\(trim)")
                }
            } else if fileManager.fileExists(atPath: "\(directory)/trim.request"), world.state.withLock({ $0.agentAnswersTrim }) {
                let fault = world.state.withLock { $0.trimFault }
                if fault == .silent { return }
                try fileManager.removeItem(atPath: "\(directory)/trim.request")
                world.state.withLock { $0.agentRequests.append("trim") }
                if fault == .error {
                    try write("trim.done", "error=java.lang.IllegalArgumentException: Unknown diagnostic command\nelapsed_us=900\n")
                } else {
                    try write("trim.done", "result=Trim native heap: RSS+Swap: 134M->131M (-3072K)\nelapsed_us=900\n")
                }
            }
            return
        }
        func setFrozen(_ frozen: Bool, cgroupPath: String) throws {
            world.record(frozen ? "freeze" : "thaw")
            try world.fail(frozen ? .freeze : .thaw)
            world.state.withLock { state in
                if frozen { state.frozen.insert(cgroupPath) } else { state.frozen.remove(cgroupPath) }
            }
        }
        func continueStopped(inCgroup cgroupPath: String) throws {
            world.record("continue")
        }
        func preflightSnapshot(ofCgroup cgroupPath: String, containerPid: Int32) -> PreflightSnapshot {
            world.record("preflight")
            return world.state.withLock { $0.preflight }
        }
        func setHostname(_ name: String, ofProcess pid: Int32) throws {
            world.record("hostname")
            try world.fail(.identity)
        }
        func waitUntilReady(_ probe: ReadinessProbe) async throws -> ReadinessProbe.Outcome {
            world.record("ready?")
            switch world.failAt {
            case .readinessExited: return .exited
            case .readinessTimedOut: return .timedOut(lastSeen: "connection refused")
            default: return .ready
            }
        }
        func sendRequests(_ paths: [String], to endpoint: ServiceEndpoint, perConnection: Int, shapes: [RequestShape]) async throws -> [Int] {
            world.record("requests \(paths.count)")
            return paths.map { _ in world.failAt == .warmUp ? 500 : 200 }
        }
        func listeningPorts(ofProcess pid: Int32) -> [Int] { [] }
        func removeLeftovers(cgroupPath: String, mountRoots: [String], runtimeState: String) async -> [String] {
            world.record("leftovers")
            return []
        }
        func reapShim(_ pid: Int32) {
            world.record("reap")
            world.state.withLock { _ = $0.shimsReaped.insert(pid) }
        }
        func moveFile(_ path: String, to destination: String) -> Bool {
            (try? FileManager.default.moveItem(atPath: path, toPath: destination)) != nil
        }
        func removeDirectory(_ path: String) {
            world.record("rmdir")
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    struct FakeRuntime: ContainerRuntime {
        let world: World

        func versionDescription() -> String { "fake 1.0" }
        private func launch(_ id: String, _ point: FailurePoint) throws -> ContainerProcess {
            world.record(point.rawValue)
            // A runtime that failed half-way may still have created the container (the lifecycle
            // deletes it); its shim it reaps itself, as ContainerRuntime promises.
            let process = world.state.withLock { state -> ContainerProcess in
                state.nextPid += 2
                state.containers.insert(id)
                state.shimsStarted.insert(state.nextPid + 1)
                return ContainerProcess(pid: state.nextPid, shimPid: state.nextPid + 1)
            }
            if world.failAt == point {
                world.state.withLock { _ = $0.shimsReaped.insert(process.shimPid) }
                throw InjectedFailure(point: point)
            }
            return process
        }
        func start(_ instance: SandboxContainer, logPath: String) async throws -> ContainerProcess {
            try launch(instance.id, .start)
        }
        func restore(
            _ instance: SandboxContainer, dumpDirectory: String, workDirectory: String, logPath: String, mergeMemory: Bool
        ) async throws -> ContainerProcess {
            try launch(instance.id, .restore)
        }
        func checkpoint(id: String, dumpDirectory: String, workDirectory: String) async throws {
            world.record("checkpoint")
            try world.fail(.checkpoint)
            try FileManager.default.createDirectory(atPath: dumpDirectory, withIntermediateDirectories: true)
            try Data("pages".utf8).write(to: URL(fileURLWithPath: "\(dumpDirectory)/pages-1.img"))
            world.state.withLock { _ = $0.containers.remove(id) }
        }
        func exec(id: String, _ command: [String], input: String?) async throws -> CommandOutput {
            CommandOutput(status: .exited(0), stdout: "", stderr: "")
        }
        func delete(id: String) async throws {
            world.record("delete")
            world.state.withLock { _ = $0.containers.remove(id) }
        }
        func list() async throws -> [ContainerState] {
            world.state.withLock { state in state.containers.map { ContainerState(id: $0, pid: 1, status: "running", bundle: nil) } }
        }
    }

    /// A kiln whose state and store live in a fresh temporary directory, with the fakes.
    static func makeKiln(_ world: World) throws -> (Kiln, String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-lifecycle-\(UUID().uuidString)").path
        let paths = KilnPaths(store: "\(root)/store", state: "\(root)/state", cgroupParent: "/kiln-test")
        for directory in [paths.instances, paths.logs, paths.bakes, paths.networkNamespaces] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let store = SnapshotStore(root: paths.store)
        try store.prepare()
        var kiln = Kiln(
            paths: paths, store: store, runtime: FakeRuntime(world: world), criu: CRIU(path: "/nonexistent/criu", version: SemanticVersion(4, 2, 1)),
            logger: Logger(label: "test"))
        kiln.host = FakeHost(world: world)
        kiln.readyStandbyTrimWait = .zero
        kiln.readyStandbyTrimTimeout = .milliseconds(200)
        return (kiln, root)
    }

    static let spec = SandboxSpec(command: ["/bin/true"], workingDirectory: "/", appDirectory: nil, port: 8080)

    static func manifest(_ name: String) -> SnapshotManifest {
        SnapshotManifest(
            name: name, createdAt: Date(), sandbox: spec, readiness: ReadinessCheck(path: "/health", timeoutSeconds: 1), warmup: [],
            host: HostFacts(kernel: "6.18", criuVersion: "4.2.1", runtime: "fake"), timings: BakeTimings(), compacted: false,
            shareMemory: false, files: [])
    }

    /// Nothing of any sandbox is left: no namespace, no container, every shim reaped, no directory.
    static func expectNothingLeft(_ world: World, _ kiln: Kiln, sourceLocation: SourceLocation = #_sourceLocation) {
        let state = world.state.withLock { $0 }
        #expect(state.namespaces.isEmpty, "network namespaces left: \(state.namespaces)", sourceLocation: sourceLocation)
        #expect(state.addresses.isEmpty, "addresses not released: \(state.addresses)", sourceLocation: sourceLocation)
        #expect(state.containers.isEmpty, "containers left: \(state.containers)", sourceLocation: sourceLocation)
        #expect(state.shimsStarted == state.shimsReaped, "shims not reaped", sourceLocation: sourceLocation)
        let instances = (try? FileManager.default.contentsOfDirectory(atPath: kiln.paths.instances)) ?? []
        let bakes = (try? FileManager.default.contentsOfDirectory(atPath: kiln.paths.bakes)) ?? []
        #expect(instances.isEmpty && bakes.isEmpty, "directories left: \(instances + bakes)", sourceLocation: sourceLocation)
    }

    /// The step the lifecycle names in its error for a failure at `point`.
    static func step(for point: FailurePoint) -> SandboxLifecycle.Step {
        switch point {
        case .directory: .directory
        case .networkNamespace: .networkNamespace
        case .network: .network
        case .bundle: .bundle
        case .start: .start
        case .restore: .restore
        case .identity: .identity
        case .readinessExited, .readinessTimedOut: .readiness
        case .checkpoint: .checkpoint
        case .beforeCheckpoint: .beforeCheckpoint
        case .afterRestore: .afterRestore
        case .freeze: .freeze
        case .thaw: .thaw
        case .warmUp: .warmUp
        }
    }

    @Test func aRestoreTakesItsStepsInOrderAndAStopUndoesThemInReverse() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let record = try await kiln.restoreOne(Self.manifest("svc"), shareMemory: false)
        #expect(world.calls == ["mkdir \(record.id)", "mkdir work", "netns create", "bundle", "restore", "hostname", "ready?"])
        #expect(FileManager.default.fileExists(atPath: "\(kiln.paths.instances)/\(record.id)/instance.json"))
        // Where the time went: every phase measured, none with CRIU's statistics (no CRIU ran),
        // and together no more than the whole.
        let phases = try #require(record.phases)
        #expect(phases.criuRestoreMs == nil && phases.afterRestoreMs == nil)
        let sum = phases.prepareMs + phases.runtimeMs + phases.identityMs + phases.firstResponseMs
        #expect(sum <= record.firstResponseMs + 0.001, "\(phases) against \(record.firstResponseMs) ms")

        let before = world.calls.count
        try await kiln.stop(record)
        // An adopted sandbox may be a frozen standby copy: thawed first, so its tasks can die.
        #expect(Array(world.calls.dropFirst(before)) == ["thaw", "delete", "leftovers", "netns remove", "reap", "rmdir"])
        Self.expectNothingLeft(world, kiln)
    }

    @Test(arguments: [FailurePoint.directory, .networkNamespace, .bundle, .restore, .identity, .readinessExited, .readinessTimedOut])
    func aRestoreThatFailsAtAnyStepLeavesNothingAndSaysWhichStep(point: FailurePoint) async throws {
        let world = World(failAt: point)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let record = try await kiln.restoreOne(Self.manifest("svc"), readinessTimeout: .milliseconds(50), shareMemory: false)
            Issue.record("restored \(record.id) although \(point) failed")
        } catch let error as KilnError {
            #expect(error.action.hasPrefix("restoring snapshot 'svc' as svc-"), "\(error)")
            if point != .readinessExited && point != .readinessTimedOut {
                // A restore that never answered is the restore's failure, not the probe's step.
                #expect(error.action.contains("(while \(Self.step(for: point)))"), "\(error.action)")
                #expect(error.cause is InjectedFailure, "the injected error is kept as the cause: \(error)")
            } else {
                #expect(error.code == .restoreFailed)
            }
        }
        Self.expectNothingLeft(world, kiln)
        #expect(world.calls.suffix(1) == ["rmdir"] || point == .directory && world.calls.last == "rmdir")
    }

    @Test(arguments: [FailurePoint.directory, .networkNamespace, .bundle, .start, .readinessExited, .readinessTimedOut])
    func aColdStartThatFailsAtAnyStepLeavesNothingButItsLog(point: FailurePoint) async throws {
        let world = World(failAt: point)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let record = try await kiln.startColdInstance(Self.manifest("svc"))
            Issue.record("started \(record.id) although \(point) failed")
        } catch let error as KilnError {
            #expect(error.action.contains("(while \(Self.step(for: point)))"), "\(error.action)")
            switch point {
            case .readinessExited: #expect(error.code == .serviceExited)
            case .readinessTimedOut: #expect(error.code == .serviceNeverReady)
            default: #expect(error.cause is InjectedFailure, "\(error)")
            }
        }
        Self.expectNothingLeft(world, kiln)
    }

    @Test(arguments: [FailurePoint.directory, .networkNamespace, .bundle, .start, .readinessExited, .checkpoint])
    func aBakeThatFailsAtAnyStepLeavesNoSandboxAndNoSnapshot(point: FailurePoint) async throws {
        let world = World(failAt: point)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var request = BakeRequest(name: "svc", sandbox: Self.spec, readiness: ReadinessCheck(path: "/health", timeoutSeconds: 1), compact: false)
        request.agent = false
        do {
            let manifest = try await kiln.bake(request)
            Issue.record("baked \(manifest.name) although \(point) failed")
        } catch let error as KilnError {
            #expect(error.action.hasPrefix("baking snapshot 'svc'"), "\(error)")
            #expect(error.action.contains("(while \(Self.step(for: point)))"), "\(error.action)")
        }
        Self.expectNothingLeft(world, kiln)
        #expect(!kiln.store.exists("svc"))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: kiln.store.stagingDirectory)) ?? []).isEmpty)
    }

    @Test func aBakeCheckpointsAfterTheServiceAnswersAndStoresTheImages() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var request = BakeRequest(name: "svc", sandbox: Self.spec, readiness: ReadinessCheck(path: "/health", timeoutSeconds: 1), compact: false)
        request.agent = false
        let manifest = try await kiln.bake(request)
        #expect(manifest.files.map(\.path) == ["pages-1.img"])
        #expect(manifest.host.runtime == "fake 1.0")
        let bakeSteps = world.calls.filter { !$0.hasPrefix("mkdir") }
        #expect(
            bakeSteps == [
                "netns create", "bundle", "start", "ready?", "preflight", "checkpoint", "delete", "leftovers", "netns remove", "reap", "rmdir",
            ])
        Self.expectNothingLeft(world, kiln)
    }

    @Test func tearingDownTwiceIsHarmless() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var sandbox = kiln.makeSandbox(id: "svc-000001", directory: "\(kiln.paths.instances)/svc-000001", purpose: "testing")
        try sandbox.prepare(Self.spec, ownerMark: false)
        _ = try await sandbox.start()
        await sandbox.tearDown()
        let after = world.calls.count
        await sandbox.tearDown()
        // The second tear-down asks the runtime again (harmless) but releases nothing twice.
        #expect(!world.calls.dropFirst(after).contains("netns remove"))
        #expect(!world.calls.dropFirst(after).contains("reap"))
        Self.expectNothingLeft(world, kiln)
    }
}
