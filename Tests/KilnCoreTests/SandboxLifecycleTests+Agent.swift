import Foundation
import Testing

@testable import KilnEngine
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// The CRaC agent's steps in the lifecycle, with the fake runtime and the fake agent behind the
/// SandboxHost seam (SandboxLifecycleTests.FakeHost.wakeAgent).
extension SandboxLifecycleTests {
    /// A bake with the agent whose jar is a file in `root` (the test's directory, removed with it);
    /// without the restore rehearsal unless `rehearse` (its own tests below).
    static func agentRequest(in root: String, rehearse: Bool = false) -> BakeRequest {
        var request = BakeRequest(name: "svc", sandbox: Self.spec, readiness: ReadinessCheck(path: "/health", timeoutSeconds: 1), compact: false)
        request.rehearseRestore = rehearse
        // A real file: the bake stores a copy of the jar with the snapshot's images.
        let jar = "\(root)/kiln-crac-agent.jar"
        if !FileManager.default.fileExists(atPath: jar) { FileManager.default.createFile(atPath: jar, contents: Data("jar".utf8)) }
        request.agentJar = jar
        return request
    }

    static func agentManifest() -> SnapshotManifest {
        var manifest = Self.manifest("svc")
        manifest.sandbox.agent = CRaCAgent(jarPath: "/nonexistent/kiln-crac-agent.jar", jarInSnapshot: CRaCAgent.jarName)
        manifest.agentProcess = 1
        return manifest
    }

    @Test func aBakeWithTheAgentRunsBeforeCheckpointAfterWarmupAndRecordsTheJVM() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manifest = try await kiln.bake(Self.agentRequest(in: root))
        #expect(manifest.agentProcess == 1)
        #expect(manifest.timings.rehearsalMs == nil, "no rehearsal asked for")
        #expect(manifest.sandbox.agent?.jarInSnapshot == CRaCAgent.jarName, "the jar travels with the snapshot")
        let stored = "\(kiln.store.dumpDirectory(of: "svc"))/\(CRaCAgent.jarName)"
        #expect(FileManager.default.contents(atPath: stored) == Data("jar".utf8))
        #expect(manifest.files.contains { $0.path.hasSuffix(CRaCAgent.jarName) }, "digested and verified with the images")
        let steps = world.calls.filter { !$0.hasPrefix("mkdir") }
        #expect(
            steps == [
                "netns create", "bundle", "start", "ready?", "signal", "preflight", "checkpoint", "delete", "leftovers", "netns remove", "reap",
                "rmdir",
            ])
        #expect(world.state.withLock { $0.agentRequests } == ["checkpoint"])
        Self.expectNothingLeft(world, kiln)
    }

    /// The default bake rehearses the restore: beforeCheckpoint, afterRestore as an original
    /// whose dump did not happen, the readiness path again; then the real beforeCheckpoint and dump.
    @Test func aBakeRehearsesTheRestoreBeforeItsCheckpoint() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(BakeRequest(name: "svc", sandbox: Self.spec, readiness: ReadinessCheck(path: "/", timeoutSeconds: 1)).rehearseRestore)
        let manifest = try await kiln.bake(Self.agentRequest(in: root, rehearse: true))
        #expect(manifest.timings.rehearsalMs != nil, "the manifest says the snapshot was rehearsed")
        // The rehearsal's sockets are read until they settle (several reads), then the real preflight.
        let steps = world.calls.filter { !$0.hasPrefix("mkdir") }.reduce(into: [String]()) { steps, call in
            if steps.last != call { steps.append(call) }
        }
        #expect(
            steps == [
                "netns create", "bundle", "start", "ready?", "signal", "ready?", "preflight", "signal", "preflight", "checkpoint", "delete",
                "leftovers", "netns remove", "reap", "rmdir",
            ], "\(world.calls)")
        let requests = world.state.withLock { $0.agentRequests }
        #expect(requests.count == 3 && requests.first == "checkpoint" && requests.last == "checkpoint", "\(requests)")
        #expect(requests.dropFirst().first?.contains("checkpoint.error=kiln bake: restore rehearsal") == true, "\(requests)")
        Self.expectNothingLeft(world, kiln)
        #expect(kiln.store.exists("svc"))
    }

    /// An afterRestore that fails in the rehearsal would fail in every copy: the bake stops there,
    /// with the Java exception, before anything is dumped.
    @Test func aRehearsalWhoseAfterRestoreFailsAbortsTheBake() async throws {
        let world = World(failAt: .afterRestore)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            _ = try await kiln.bake(Self.agentRequest(in: root, rehearse: true))
            Issue.record("baked although the rehearsal's afterRestore failed")
        } catch let error as KilnError {
            #expect(error.message.contains("no restore today"), "\(error.message)")
            #expect(error.action.contains("(while \(SandboxLifecycle.Step.afterRestore))"), "\(error.action)")
            #expect(error.message.contains("restore rehearsal") && error.hint?.contains("--no-rehearsal") == true, "\(error)")
        }
        #expect(!world.calls.contains("checkpoint"), "nothing may be dumped")
        Self.expectNothingLeft(world, kiln)
        #expect(!kiln.store.exists("svc"))
    }

    @Test func aServiceWithoutAJVMIsBakedWithoutTheCallbacks() async throws {
        let world = World(failAt: nil)
        world.state.withLock { $0.noJVM = true }
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manifest = try await kiln.bake(Self.agentRequest(in: root))
        #expect(manifest.agentProcess == nil, "copies of it are not signalled")
        #expect(!world.calls.contains("signal"))
        #expect(world.calls.contains("checkpoint"))
        Self.expectNothingLeft(world, kiln)
    }

    @Test func aFailingBeforeCheckpointAbortsTheBakeWithTheJavaException() async throws {
        let world = World(failAt: .beforeCheckpoint)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            _ = try await kiln.bake(Self.agentRequest(in: root))
            Issue.record("baked although beforeCheckpoint failed")
        } catch let error as KilnError {
            #expect(error.code == .checkpointFailed)
            #expect(error.message.contains("java.lang.IllegalStateException: no checkpoint today"), "\(error.message)")
            #expect(error.details.contains { $0.contains("at Svc.callback(Svc.java:7)") }, "\(error.details)")
            #expect(error.action.contains("(while \(SandboxLifecycle.Step.beforeCheckpoint))"), "\(error.action)")
        }
        #expect(!world.calls.contains("checkpoint"), "nothing may be dumped")
        // The agent ran afterRestore itself (checkpoint.failed): kiln asks nothing more of it.
        #expect(world.state.withLock { $0.agentRequests } == ["checkpoint"])
        Self.expectNothingLeft(world, kiln)
        #expect(!kiln.store.exists("svc"))
    }

    @Test func aFailedDumpSendsTheOriginalARestoreRequestWithTheError() async throws {
        let world = World(failAt: .checkpoint)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        await #expect(throws: KilnError.self) { _ = try await kiln.bake(Self.agentRequest(in: root)) }
        let requests = world.state.withLock { $0.agentRequests }
        #expect(requests.count == 2)
        #expect(requests.last?.contains("checkpoint.error=") == true, "\(requests)")
        #expect(requests.last?.contains("instance=svc-") == true, "\(requests)")
        let steps = world.calls.filter { !$0.hasPrefix("mkdir") }
        #expect(steps.firstIndex(of: "checkpoint")! < steps.lastIndex(of: "signal")!, "afterRestore is asked for after the failed dump")
        #expect(steps.lastIndex(of: "signal")! < steps.firstIndex(of: "delete")!, "and before the tear-down")
        Self.expectNothingLeft(world, kiln)
    }

    @Test func thePreflightRefusesTheDumpUnlessTheKindIsAllowed() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        world.state.withLock { $0.preflight = CheckpointPreflightTests.connectedJVM }
        do {
            _ = try await kiln.bake(Self.agentRequest(in: root))
            Issue.record("baked with an open connection")
        } catch let error as KilnError {
            #expect(error.code == .checkpointBlocked)
            #expect(
                error.details.contains { $0.contains("tcp-connection: pid 1 (java): TCP 127.0.0.1:41000 -> 127.0.0.1:9099 (ESTABLISHED)") },
                "\(error.details)")
            #expect(error.action.contains("(while \(SandboxLifecycle.Step.preflight))"), "\(error.action)")
        }
        #expect(!world.calls.contains("checkpoint"))
        #expect(world.state.withLock { $0.agentRequests }.last?.contains("checkpoint.error=") == true, "the original runs afterRestore")
        Self.expectNothingLeft(world, kiln)

        var allowing = Self.agentRequest(in: root)
        allowing.allow = [.tcpConnection, .listener]
        let manifest = try await kiln.bake(allowing)
        #expect(manifest.name == "svc")
        Self.expectNothingLeft(world, kiln)
    }

    @Test func aRestoredCopyRunsAfterRestoreAfterItsIdentityAndBeforeItIsReady() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let record = try await kiln.restoreOne(Self.agentManifest(), shareMemory: false)
        #expect(world.calls == ["mkdir \(record.id)", "mkdir work", "netns create", "bundle", "restore", "hostname", "signal", "ready?"])
        #expect(world.state.withLock { $0.agentRequests } == ["instance=\(record.id)\nhostname=\(record.id)\n"])
        #expect(record.afterRestoreMs != nil)
        try await kiln.stop(record)
        Self.expectNothingLeft(world, kiln)
    }

    @Test func aFailingAfterRestoreFailsThatCopyAndLeavesNothing() async throws {
        let world = World(failAt: .afterRestore)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let record = try await kiln.restoreOne(Self.agentManifest(), shareMemory: false)
            Issue.record("restored \(record.id) although afterRestore failed")
        } catch let error as KilnError {
            #expect(error.code == .restoreFailed)
            #expect(error.message.contains("no restore today"), "\(error.message)")
            #expect(error.action.contains("(while \(SandboxLifecycle.Step.afterRestore))"), "\(error.action)")
        }
        #expect(!world.calls.contains("ready?"), "a copy whose afterRestore failed is never probed")
        Self.expectNothingLeft(world, kiln)
    }
}

/// The signal's delivery time kiln logs (`kiln run -v`): the agent's clock runs in the copy's
/// time namespace, whose offset CRIU set to the dump-time clock.
@Suite struct AgentSignalDeliveryTests {
    @Test func theDeliveryTimeSubtractsTheCopysClockOffset() {
        let restore = AgentRestore(
            elapsedMs: 5, identityMs: 2, agentMs: 3, handledNanos: 7_000_000_000 + 1_500_000, signalledNanos: 1_000_000_000, warnings: [])
        // The copy's clock is 6 s ahead: the handler ran 1.5 ms after the signal.
        #expect(restore.deliveryMs(clockOffsetNanos: 6_000_000_000) == 1.5)
        #expect(restore.deliveryMs(clockOffsetNanos: nil) == nil)
        var old = restore
        old.handledNanos = nil  // an agent from before signal_ns
        #expect(old.deliveryMs(clockOffsetNanos: 0) == nil)
    }

    /// HotSpot's report of `System.trim_native_heap`: a whole number and a unit in parentheses,
    /// `-` for memory given back.
    @Test func aTrimReportGivesTheBytesReturned() {
        func returned(_ report: String) -> Int64? { NativeHeapTrim(report: report, elapsedMs: 1).returnedBytes }
        #expect(returned("Trim native heap: RSS+Swap: 129M->124M (-4656K)") == Int64(4656) << 10)
        #expect(returned("Trim native heap: RSS+Swap: 64480K->64480K (+0B)") == 0)
        #expect(returned("Trim native heap: RSS+Swap: 1G->3G (+2G)") == -(Int64(2) << 30))
        #expect(returned("Trim native heap: RSS+Swap: 10M->9M (-1M)") == Int64(1) << 20)
        #expect(returned("Trim native heap: not supported") == nil)
        #expect(returned("(-12Q)") == nil)
        #expect(returned("") == nil)
    }

    @Test func aProcessInTheHostsTimeNamespaceHasNoOffsetAndAMissingOneNone() {
        #expect(ProcessInspector.monotonicOffsetNanos(of: getpid()) == 0)
        #expect(ProcessInspector.monotonicOffsetNanos(of: Int32.max) == nil)
    }
}
