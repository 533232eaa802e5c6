import Testing

@testable import KilnEngine
@testable import KilnGateway
@testable import KilnSystem

/// Standby copies in the pool's decisions, at made-up times.
extension FunctionPoolStateMachineTests {
    static func standby(_ number: Int, bytes: Int? = 10 << 20) -> StandbyReport {
        StandbyReport(instance: instance(number), duration: .milliseconds(120), memoryBytes: bytes)
    }

    /// A pool with standby copies 11, 12... ready, verified by the first standby restore.
    func withStandbys(_ policy: ScalingPolicy, ready: Int) -> Machine {
        var pool = machine(policy)
        let first = pool.tick(now: at(0))
        #expect(first.standbyLaunches == [true], "the first standby restore verifies the snapshot")
        #expect(pool.prepared(now: at(0.1)).standbyLaunches == Array(repeating: false, count: policy.standby - 1))
        for number in 0..<ready { _ = pool.standbyLaunched(Self.standby(11 + number), now: at(0.2)) }
        return pool
    }

    @Test func aRequestAtZeroThawsAStandbyCopyAndARestoreReplacesIt() {
        var pool = withStandbys(ScalingPolicy(maxInstances: 2, concurrency: 1, standby: 1), ready: 1)
        #expect(pool.status(now: at(1)).standby.ready == 1)
        #expect(pool.status(now: at(1)).instances.isEmpty, "a standby copy is no instance")

        let (acquisition, effects) = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0)
        #expect(acquisition == .waiting(ticket: 0))
        #expect(effects.thaws == ["hello-11"], "thawed, not restored")
        #expect(effects.launches.isEmpty)
        #expect(effects.standbyLaunches.isEmpty, "no restore beside the thaw: it would take the CPU the thaw needs")
        #expect(effects.gauges?.thawing == 1 && effects.gauges?.standbyStarting == 0 && effects.gauges?.standby == 0)
        // Another request meanwhile: still no replacement while the thaw runs.
        #expect(pool.acquire(arrivedAt: at(1.001), now: at(1.001), waiter: 9).1.standbyLaunches.isEmpty)
        _ = pool.cancelWaiter(1, now: at(1.002))

        let thawed = pool.thawed(LaunchReport(instance: Self.instance(11)), duration: .milliseconds(4), now: at(1.004))
        #expect(thawed.standbyLaunches.isEmpty, "no restore beside the request the thaw was for either")
        #expect(thawed.grants.map(\.waiter) == [0])
        #expect(thawed.leases.map(\.servedBy) == [.standby], "the request is labelled as answered by a thawed standby")
        #expect(thawed.metrics == [.thawSucceeded(.milliseconds(4))])
        // Once it is answered, a replacement standby copy is restored in the background.
        let answered = pool.release(Lease(instance: Self.instance(11)), outcome: .answered, now: at(1.01))
        #expect(answered.standbyLaunches == [false])
        // The next request finds it running.
        let (next, _) = pool.acquire(arrivedAt: at(1.02), now: at(1.02), waiter: 1)
        guard case .leased(let lease) = next else { return #expect(Bool(false), "\(next)") }
        #expect(lease.servedBy == .running)
        let status = pool.status(now: at(1.02))
        #expect(status.instances.map(\.origin) == [.thawed])
        #expect(status.standby.thaws == 1 && status.standby.lastThawMs == 4 && status.standby.starting == 1)
    }

    @Test(arguments: [LeaseOutcome.failed, .unreachable("connection refused")])
    func aThawedCopysFirstRequestThatFailsStillLetsTheReplacementCome(outcome: LeaseOutcome) {
        var pool = withStandbys(ScalingPolicy(maxInstances: 2, concurrency: 1, standby: 1), ready: 1)
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0)
        #expect(pool.thawed(LaunchReport(instance: Self.instance(11)), duration: .milliseconds(4), now: at(1.004)).standbyLaunches.isEmpty)
        #expect(pool.release(Lease(instance: Self.instance(11)), outcome: outcome, now: at(1.01)).standbyLaunches == [false])
    }

    @Test func aThawWhoseRequestLeftMeanwhileIsReplacedAtOnce() {
        var pool = withStandbys(ScalingPolicy(maxInstances: 2, concurrency: 1, standby: 1), ready: 1)
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0)
        #expect(pool.cancelWaiter(0, now: at(1.002)).0)
        let thawed = pool.thawed(LaunchReport(instance: Self.instance(11)), duration: .milliseconds(4), now: at(1.004))
        #expect(thawed.grants.isEmpty && thawed.standbyLaunches == [false], "no request on it: nothing to wait for")
    }

    @Test func withoutAStandbyCopyTheRequestIsLabelledByTheRestore() {
        var pool = machine(ScalingPolicy(maxInstances: 2, concurrency: 1))
        let (_, effects) = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        #expect(effects.launches == [true] && effects.thaws.isEmpty && effects.standbyLaunches.isEmpty, "standby 0: none kept")
        _ = pool.prepared(now: at(0.1))
        let up = pool.launched(Self.restored(1), now: at(0.2))
        #expect(up.leases.map(\.servedBy) == [.restore])
        var cold = Self.restored(2)
        cold.instance.origin = .coldStart
        cold.restoreFailure = "boom"
        _ = pool.acquire(arrivedAt: at(0.3), now: at(0.3), waiter: 1)
        #expect(pool.launched(cold, now: at(3)).leases.map(\.servedBy) == [.coldStart])
    }

    @Test func moreWaitersThanStandbyCopiesThawWhatThereIsAndRestoreTheRest() {
        var pool = withStandbys(ScalingPolicy(maxInstances: 3, concurrency: 1, standby: 2), ready: 2)
        var thaws: [String] = []
        var launches: [Bool] = []
        for request in 0..<3 {
            let effects = pool.acquire(arrivedAt: at(1), now: at(1), waiter: request).1
            thaws += effects.thaws
            launches += effects.launches
        }
        #expect(thaws == ["hello-11", "hello-12"])
        #expect(launches == [false], "the third waiter gets a restore (already verified)")
    }

    @Test func theMemoryBudgetCapsTheStandbyCopies() {
        // 10 MiB a copy, 25 MiB allowed: two copies, not the three asked for.
        var pool = machine(ScalingPolicy(standby: 3, standbyMemoryBytes: 25 << 20))
        _ = pool.tick(now: at(0))
        _ = pool.prepared(now: at(0.1))
        _ = pool.standbyLaunched(Self.standby(11), now: at(0.2))
        _ = pool.standbyLaunched(Self.standby(12), now: at(0.2))
        let third = pool.standbyLaunched(Self.standby(13), now: at(0.3))
        #expect(third.stops == ["hello-13"], "over the budget: stopped")
        #expect(pool.status(now: at(1)).standby.ready == 2)
        #expect(pool.status(now: at(1)).standby.memoryBytes == 20 << 20)
        // Lowering the number stops the newest.
        let lowered = pool.setPolicy(ScalingPolicy(standby: 1, standbyMemoryBytes: 25 << 20), now: at(2))
        #expect(lowered.stops == ["hello-12"])
    }

    @Test func aFailedStandbyRestoreBacksOffAndAFailedThawFallsBackToARestore() {
        var pool = withStandbys(ScalingPolicy(maxInstances: 2, concurrency: 1, standby: 1), ready: 1)
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0)
        let failed = pool.thawFailed(Self.instance(11), error: GatewayFailure.shuttingDown, now: at(1.01))
        #expect(failed.launches == [false], "the waiting request gets a restore instead")
        #expect(failed.metrics == [.thawFailed])
        let standbyFailure = pool.standbyLaunchFailed(GatewayFailure.shuttingDown, now: at(1.02))
        #expect(standbyFailure.standbyLaunches.isEmpty, "no retry before the back-off")
        #expect(pool.tick(now: at(3)).standbyLaunches.isEmpty)
        #expect(pool.tick(now: at(6.1)).standbyLaunches == [false], "retried after the back-off")
    }

    @Test func closingAndDrainingStopTheStandbyCopies() {
        var pool = withStandbys(ScalingPolicy(standby: 2), ready: 2)
        let drained = pool.drain(reverify: true, now: at(1))
        #expect(drained.1.stops == ["hello-11", "hello-12"], "copies of a replaced snapshot are never thawed")
        #expect(drained.1.standbyLaunches == [true], "new ones come from the re-verified snapshot")
        _ = pool.terminated(Self.instance(11), now: at(1.1))
        _ = pool.terminated(Self.instance(12), now: at(1.1))
        _ = pool.prepared(now: at(1.2))
        _ = pool.standbyLaunched(Self.standby(13), now: at(1.3))
        let closing = pool.close(now: at(2))
        #expect(closing.stops == ["hello-13"])
        #expect(!closing.emptied, "a standby restore is still under way")
        let late = pool.standbyLaunched(Self.standby(14), now: at(2.1))
        #expect(late.stops == ["hello-14"], "a copy that comes up after the close is stopped")
        _ = pool.terminated(Self.instance(13), now: at(2.2))
        #expect(pool.terminated(Self.instance(14), now: at(2.3)).emptied)
    }

    @Test func aStandbyCopyWhoseProcessDiedIsRemovedAndReplaced() {
        var pool = withStandbys(ScalingPolicy(standby: 1), ready: 1)
        let effects = pool.tick(now: at(1), dead: ["hello-11"])
        #expect(effects.stops == ["hello-11"])
        #expect(effects.standbyLaunches == [false])
        #expect(pool.instances.isEmpty)
    }

    @Test(arguments: [LeaseOutcome.answered, .failed, .unreachable("connection reset")])
    func aThawedCopysRecordIsSavedOnceItsFirstRequestIsOver(outcome: LeaseOutcome) {
        var pool = withStandbys(ScalingPolicy(maxInstances: 2, concurrency: 2, standby: 1), ready: 1)
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0)
        let thawed = pool.thawed(LaunchReport(instance: Self.instance(11)), duration: .milliseconds(4), now: at(1.004))
        #expect(thawed.recordsThawed.isEmpty, "not beside the request: the write would take CPU from the copy as it wakes")
        // A second request on it while the first runs: still nothing to save.
        let (second, _) = pool.acquire(arrivedAt: at(1.005), now: at(1.005), waiter: 1)
        guard case .leased(let lease) = second else { return #expect(Bool(false), "\(second)") }
        #expect(pool.release(Lease(instance: Self.instance(11)), outcome: outcome, now: at(1.01)).recordsThawed == ["hello-11"])
        #expect(pool.release(lease, outcome: .answered, now: at(1.02)).recordsThawed.isEmpty, "saved once")
    }

    @Test func aThawedCopyWhoseProcessIsGoneIsStoppedNotRecorded() {
        var pool = withStandbys(ScalingPolicy(maxInstances: 2, concurrency: 1, standby: 1), ready: 1)
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0)
        _ = pool.thawed(LaunchReport(instance: Self.instance(11)), duration: .milliseconds(4), now: at(1.004))
        let effects = pool.release(Lease(instance: Self.instance(11)), outcome: .unreachable("refused"), processAlive: false, now: at(1.01))
        #expect(effects.recordsThawed.isEmpty)
        #expect(effects.stops == ["hello-11"])
    }

    @Test func aRestoredInstanceHasNoRecordLeftToSave() {
        var pool = machine(ScalingPolicy(maxInstances: 2, concurrency: 1))
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = pool.prepared(now: at(0.1))
        _ = pool.launched(Self.restored(1), now: at(0.2))
        #expect(pool.release(Lease(instance: Self.instance(1)), outcome: .answered, now: at(0.3)).recordsThawed.isEmpty)
    }
}

extension Array where Element == FunctionPoolStateMachine<Int>.Effect {
    var thaws: [String] { compactMap { if case .thaw(let instance) = $0 { instance.id } else { nil } } }
    var recordsThawed: [String] { compactMap { if case .recordThawed(let instance) = $0 { instance.id } else { nil } } }
    var standbyLaunches: [Bool] { compactMap { if case .launchStandby(let verify) = $0 { verify } else { nil } } }
    var leases: [Lease] { compactMap { if case .grant(_, let lease) = $0 { lease } else { nil } } }
}
