import Foundation
import Testing

@testable import KilnEngine
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// Standby copies with the fake runtime and host: frozen right after the restore, before their
/// identity; thawed, then given it (or, ready, frozen after it and only thawed); a failure at
/// each new step leaves nothing behind.
extension SandboxLifecycleTests {
    @Test func aStandbyCopyIsFrozenBeforeItsIdentityAndGetsItOnlyWhenThawed() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manifest = Self.agentManifest()
        let standby = try await kiln.restoreOne(manifest, shareMemory: false, standby: .thaw)
        // CRIU left it stopped (the standby configuration): frozen, then continued into the freezer.
        #expect(world.calls == ["mkdir \(standby.id)", "mkdir work", "netns create", "bundle", "restore", "freeze", "continue"])
        #expect(standby.standby == true && standby.frozenAfterMs != nil && standby.thawMs == nil)
        #expect(world.state.withLock { $0.agentRequests }.isEmpty, "no identity before the thaw")
        #expect(try kiln.instance(standby.id).standby == true, "the record says standby")

        let claimed = try #require(kiln.claimStandby(of: "svc"))
        #expect(claimed.id == standby.id)
        #expect(kiln.claimStandby(of: "svc") == nil, "a claimed copy is not handed out twice")
        let before = world.calls.count
        let running = try await kiln.thaw(claimed, manifest: manifest)
        // The hostname is set while the copy is still frozen: it never runs under the bake's name.
        #expect(Array(world.calls.dropFirst(before)) == ["hostname", "thaw", "signal", "ready?"])
        #expect(world.state.withLock { $0.agentRequests } == ["instance=\(standby.id)\nhostname=\(standby.id)\n"])
        #expect(running.standby == nil && running.thawMs != nil && running.afterRestoreMs != nil)
        #expect(try kiln.instance(standby.id).standby == nil, "the record says running")
        await #expect(throws: KilnError.self) { _ = try await kiln.thaw(running, manifest: manifest) }

        try await kiln.stop(running)
        Self.expectNothingLeft(world, kiln)
        #expect(world.state.withLock { $0.frozen }.isEmpty)
    }

    /// `StandbyMode.ready`: the steps of any restored copy first (no CRIU stop, identity,
    /// afterRestore, readiness), then the freeze; the thaw only thaws and probes.
    @Test func aReadyStandbyCopyRunsItsStepsBeforeItsFreezeAndItsThawOnlyResumesIt() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manifest = Self.agentManifest()
        let standby = try await kiln.restoreOne(manifest, shareMemory: false, standby: .ready)
        // Twelve requests to each warm-up path (the agent manifest's one) before the freeze.
        #expect(
            world.calls == [
                "mkdir \(standby.id)", "mkdir work", "netns create", "bundle", "restore", "hostname", "signal", "ready?",
                "requests \(Kiln.readyStandbyRequestsPerPath * max(manifest.warmup.count, 1))", "signal", "freeze",
            ],
            "no 'continue': CRIU did not leave it stopped; the second wake asks for the trim")
        #expect(world.state.withLock { $0.agentRequests } == ["instance=\(standby.id)\nhostname=\(standby.id)\n", "trim"])
        #expect(standby.standby == true && standby.standbyMode == .ready && standby.afterRestoreMs != nil)
        #expect(standby.nativeHeapTrimmedBytes == Int64(3072) << 10, "what the JVM reported it gave back")
        #expect(try kiln.instance(standby.id).standbyMode == .ready, "the record keeps the mode for the thaw")

        let claimed = try #require(kiln.claimStandby(of: "svc"))
        let before = world.calls.count
        let running = try await kiln.thaw(claimed, manifest: manifest)
        #expect(Array(world.calls.dropFirst(before)) == ["thaw", "ready?"])
        #expect(world.state.withLock { $0.agentRequests }.count == 2, "its afterRestore ran once, at its restore (then its trim)")
        #expect(running.standby == nil && running.thawMs != nil && running.firstResponseMs == standby.firstResponseMs)

        try await kiln.stop(running)
        Self.expectNothingLeft(world, kiln)
        #expect(world.state.withLock { $0.frozen }.isEmpty)
    }

    /// A snapshot whose agent predates `trim.request` (no `trim=1` in its restore.done): its
    /// ready copies are frozen untrimmed, without a request it would leave unanswered.
    @Test func aReadyStandbyCopyOfAnOlderAgentIsFrozenWithoutATrim() async throws {
        let world = World(failAt: nil)
        world.state.withLock { $0.agentAnswersTrim = false }
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let standby = try await kiln.restoreOne(Self.agentManifest(), shareMemory: false, standby: .ready)
        #expect(world.calls.filter { $0 == "signal" }.count == 1, "\(world.calls)")
        #expect(world.calls.last == "freeze")
        #expect(standby.nativeHeapTrimmedBytes == nil)
        let directory = "\(kiln.instanceDirectory(standby.id))/agent/control"
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/trim.request"), "no request left for an agent that ignores it")
        try await kiln.stop(standby)
        Self.expectNothingLeft(world, kiln)
    }

    /// A trim the agent does not answer in time, or answers with the JVM's refusal, costs the
    /// copy nothing but the memory: it is frozen untrimmed, and no request is left for the
    /// agent's next wake.
    @Test(arguments: [World.TrimFault.silent, .error])
    func aReadyStandbyCopyWhoseTrimFailsIsFrozenUntrimmed(fault: World.TrimFault) async throws {
        let world = World(failAt: nil)
        world.state.withLock { $0.trimFault = fault }
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let standby = try await kiln.restoreOne(Self.agentManifest(), shareMemory: false, standby: .ready)
        #expect(world.calls.suffix(2) == ["signal", "freeze"], "asked for the trim, then frozen: \(world.calls)")
        #expect(standby.standby == true && standby.nativeHeapTrimmedBytes == nil)
        let directory = "\(kiln.instanceDirectory(standby.id))/agent/control"
        for name in ["trim.request", "trim.done"] {
            #expect(!FileManager.default.fileExists(atPath: "\(directory)/\(name)"), "\(name) left behind")
        }
        let claimed = try #require(kiln.claimStandby(of: "svc"))
        let running = try await kiln.thaw(claimed, manifest: Self.agentManifest())
        #expect(running.standby == nil)
        try await kiln.stop(running)
        Self.expectNothingLeft(world, kiln)
    }

    @Test func aReadyStandbyCopyWhoseWarmUpFailsLeavesNothingAndSaysWhichStep() async throws {
        let world = World(failAt: .warmUp)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let record = try await kiln.restoreOne(Self.agentManifest(), shareMemory: false, standby: .ready)
            Issue.record("made ready standby copy \(record.id) although its warm-up failed")
        } catch let error as KilnError {
            #expect(error.action.contains("(while \(SandboxLifecycle.Step.warmUp))"), "\(error.action)")
            #expect(error.message.contains("answered HTTP 500"), "\(error)")
        }
        #expect(!world.calls.contains("freeze"))
        Self.expectNothingLeft(world, kiln)
    }

    @Test func twoThawedCopiesEachGetTheirOwnIdentity() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manifest = Self.agentManifest()
        let standbys = try await kiln.restore(manifest, count: 2, parallel: 1, shareMemory: false, standby: .thaw)
        #expect(standbys.count == 2 && standbys.allSatisfy { $0.standby == true })
        var thawed: [InstanceRecord] = []
        while let claimed = kiln.claimStandby(of: "svc") { thawed.append(try await kiln.thaw(claimed, manifest: manifest)) }
        #expect(Set(thawed.map(\.id)) == Set(standbys.map(\.id)))
        let requests = world.state.withLock { $0.agentRequests }
        #expect(requests.count == 2 && Set(requests).count == 2, "each copy told its own id: \(requests)")
        for record in thawed { try await kiln.stop(record) }
        Self.expectNothingLeft(world, kiln)
    }

    @Test func aStandbyRestoreThatCannotFreezeLeavesNothing() async throws {
        let world = World(failAt: .freeze)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let record = try await kiln.restoreOne(Self.manifest("svc"), shareMemory: false, standby: .thaw)
            Issue.record("made standby copy \(record.id) although its freeze failed")
        } catch let error as KilnError {
            #expect(error.action.hasPrefix("restoring a standby copy of 'svc' as svc-"), "\(error)")
            #expect(error.action.contains("(while \(SandboxLifecycle.Step.freeze))"), "\(error.action)")
            #expect(error.cause is InjectedFailure, "\(error)")
        }
        #expect(!world.calls.contains("hostname"))
        #expect(world.calls.contains("thaw"), "the tear-down thaws what it may have frozen")
        Self.expectNothingLeft(world, kiln)
    }

    @Test(arguments: [FailurePoint.thaw, .identity, .afterRestore, .readinessExited])
    func aThawThatFailsAtAnyStepRemovesTheCopyAndSaysWhichStep(point: FailurePoint) async throws {
        let world = World(failAt: point)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manifest = Self.agentManifest()
        let standby = try await kiln.restoreOne(manifest, shareMemory: false, standby: .thaw)
        let claimed = try #require(kiln.claimStandby(of: "svc"))
        do {
            let record = try await kiln.thaw(claimed, manifest: manifest, readinessTimeout: .milliseconds(50))
            Issue.record("thawed \(record.id) although \(point) failed")
        } catch let error as KilnError {
            #expect(error.action.hasPrefix("thawing standby copy \(standby.id) of 'svc'"), "\(error)")
            if point != .readinessExited {
                #expect(error.action.contains("(while \(Self.step(for: point)))"), "\(error.action)")
            } else {
                #expect(error.code == .restoreFailed)
            }
        }
        #expect(kiln.claimStandby(of: "svc") == nil)
        Self.expectNothingLeft(world, kiln)
    }
}
