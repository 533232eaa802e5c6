import Logging
import Testing

@testable import KilnEngine
@testable import KilnGateway
@testable import KilnSystem

/// The pool's decisions, event by event, at made-up times: no gateway, no sleeps, no root.
/// Waiters are request numbers; instances are `hello-N`, launched in the order the test says.
@Suite("function pool state machine")
struct FunctionPoolStateMachineTests {
    typealias Machine = FunctionPoolStateMachine<Int>
    typealias Effect = Machine.Effect

    static let timing = PoolTiming(launchFailureBackoff: .seconds(5), verificationRetry: .seconds(30), quarantine: .milliseconds(500))
    /// Time zero of every test; only differences matter.
    let start = ContinuousClock.now

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .milliseconds(Int(seconds * 1000)) }

    func machine(_ policy: ScalingPolicy) -> Machine { Machine(function: "hello", policy: policy, timing: Self.timing, now: start) }

    static func instance(_ number: Int, origin: GatewayInstance.Origin = .restored) -> GatewayInstance {
        GatewayInstance(
            id: "hello-\(number)", function: "hello", endpoint: ServiceEndpoint(networkNamespacePath: "/fake/\(number)", port: 8080),
            pid: Int32(1000 + number), origin: origin)
    }

    static func restored(_ number: Int) -> LaunchReport { LaunchReport(instance: instance(number), restoreDuration: .milliseconds(150)) }

    static func lease(_ number: Int) -> Lease { Lease(instance: instance(number)) }

    /// Launches and verifies the first instance for a pool that has a request waiting or a minimum.
    func bringUp(_ pool: inout Machine, number: Int = 1, at seconds: Double = 0) -> [Effect] {
        _ = pool.prepared(now: at(seconds))
        return pool.launched(Self.restored(number), now: at(seconds))
    }

    // MARK: Scaling from zero

    @Test func firstRequestsShareOneVerifiedRestoreThenScaleUp() {
        var pool = machine(ScalingPolicy(maxInstances: 3, concurrency: 2, queueLimit: 20))
        var launches: [Bool] = []
        for request in 0..<12 {
            let (acquisition, effects) = pool.acquire(arrivedAt: at(0), now: at(0), waiter: request)
            #expect(acquisition == .waiting(ticket: request))
            launches += effects.launches
        }
        #expect(launches == [true], "12 first requests: one launch, which verifies the snapshot first")
        #expect(pool.status(now: at(0)).state == .verifying)
        #expect(pool.prepared(now: at(0.05)).launches.isEmpty, "no second launch before the first instance is up")
        // Up: it takes its 2, and the 10 left call for the 2 more the maximum allows (not verified again).
        let up = pool.launched(Self.restored(1), now: at(0.2))
        #expect(up.grants.map(\.waiter) == [0, 1])
        #expect(up.grants.allSatisfy { $0.instance == "hello-1" })
        #expect(up.launches == [false, false])
        #expect(up.metrics == [.restoreSucceeded(.milliseconds(150))])
        #expect(pool.launched(Self.restored(2), now: at(0.3)).grants.map(\.waiter) == [2, 3])
        let third = pool.launched(Self.restored(3), now: at(0.3))
        #expect(third.grants.map(\.waiter) == [4, 5])
        #expect(third.launches.isEmpty, "never more than max instances")
        #expect(third.gauges == PoolGauges(queue: 6, busy: 3))
        // Each request that ends hands its room to the next in line, in arrival order.
        var served: [Int] = []
        for number in [1, 2, 3, 1, 2, 3] {
            served += pool.release(Self.lease(number), outcome: .answered, now: at(0.5)).grants.map(\.waiter)
        }
        #expect(served == [6, 7, 8, 9, 10, 11])
        let status = pool.status(now: at(1))
        #expect(status.queueLength == 0 && status.instances.count == 3 && status.launches == 3 && status.state == .verified)
    }

    @Test func freedRoomGoesToTheWaitingRequestsInOrder() {
        var pool = machine(ScalingPolicy(maxInstances: 1, concurrency: 1))
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = bringUp(&pool)
        #expect(pool.acquire(arrivedAt: at(1), now: at(1), waiter: 1).0 == .waiting(ticket: 1))
        // hello-1 frees up: the waiting request gets it; a newcomer waits behind.
        #expect(pool.release(Self.lease(1), outcome: .answered, now: at(2)).grants.map(\.waiter) == [1])
        #expect(pool.release(Self.lease(1), outcome: .answered, now: at(3)).grants.isEmpty)
        #expect(pool.acquire(arrivedAt: at(4), now: at(4), waiter: 2).0 == .leased(Self.lease(1)))
    }

    // MARK: The queue

    @Test func waitsPastTheQueueTimeoutFail() {
        var pool = machine(ScalingPolicy(maxInstances: 1, concurrency: 1, queueTimeoutSeconds: 0.3))
        _ = pool.tick(now: at(0))
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = bringUp(&pool, at: 0.1)
        let waiting = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 1)
        #expect(waiting.0 == .waiting(ticket: 1))
        #expect(waiting.1.wakes == [at(1) + .seconds(0.3)], "a tick at its deadline, not at the next periodic one")
        // A retry keeps its first arrival: it has less time left, and an earlier wake.
        let retry = pool.acquire(arrivedAt: at(0.9), now: at(1.1), waiter: 2)
        #expect(retry.0 == .waiting(ticket: 2))
        #expect(retry.1.wakes == [at(0.9) + .seconds(0.3)])
        #expect(pool.acquire(arrivedAt: at(1.15), now: at(1.15), waiter: 3).1.wakes.isEmpty, "one is due before its deadline")
        #expect(pool.cancelWaiter(3, now: at(1.16)).0)
        #expect(pool.tick(now: at(1.19)).failures.isEmpty)
        let first = pool.tick(now: at(1.2))
        #expect(first.failures.map(\.waiter) == [2])
        #expect(first.wakes == [at(1) + .seconds(0.3)], "the next deadline")
        let expired = pool.tick(now: at(1.3)).failures
        #expect(expired.map(\.waiter) == [1])
        #expect(expired.first?.failure == .queueTimeout(seconds: 0.3))
        #expect(expired.first?.failure.code == .queueTimeout)
        #expect(pool.status(now: at(1.3)).queueLength == 0)
    }

    @Test func aFullQueueRefusesAtOnce() {
        var pool = machine(ScalingPolicy(maxInstances: 1, concurrency: 1, queueLimit: 2))
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 1)
        let (refused, effects) = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 2)
        #expect(refused == .refused(.queueFull(limit: 2)))
        #expect(effects.isEmpty)
        // A request that leaves makes room.
        #expect(pool.cancelWaiter(1, now: at(0.1)).0)
        #expect(!pool.cancelWaiter(1, now: at(0.1)).0, "only once")
        #expect(pool.acquire(arrivedAt: at(0.2), now: at(0.2), waiter: 3).0 == .waiting(ticket: 2))
    }

    // MARK: Scaling up and down

    @Test func scalesDownToTheWarmMinimumThenToZero() {
        var pool = machine(ScalingPolicy(minInstances: 1, maxInstances: 3, concurrency: 1, keepAliveSeconds: 10))
        #expect(pool.tick(now: at(0)).launches == [true], "the minimum starts without a request")
        _ = bringUp(&pool)
        #expect(pool.tick(now: at(0.1)).launches.isEmpty, "minimum reached")
        #expect(pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0).0 == .leased(Self.lease(1)))
        #expect(pool.acquire(arrivedAt: at(1), now: at(1), waiter: 1).1.launches == [false])
        #expect(pool.acquire(arrivedAt: at(1), now: at(1), waiter: 2).1.launches == [false])
        #expect(pool.launched(Self.restored(2), now: at(1.2)).grants.map(\.waiter) == [1])
        #expect(pool.launched(Self.restored(3), now: at(1.2)).grants.map(\.waiter) == [2])
        for number in 1...3 { _ = pool.release(Self.lease(number), outcome: .answered, now: at(2)) }
        #expect(pool.tick(now: at(11.9)).stops.isEmpty, "kept for their keep-alive")
        let idle = pool.tick(now: at(12))
        #expect(idle.stops == ["hello-3", "hello-2"], "the newest go first, down to the minimum")
        #expect(idle.gauges == PoolGauges(idle: 1, stopping: 2))
        _ = pool.terminated(Self.instance(3), now: at(12.1))
        _ = pool.terminated(Self.instance(2), now: at(12.1))
        #expect(pool.tick(now: at(100)).stops.isEmpty, "the minimum stays, however long idle")
        // Down to zero once the minimum is lifted; the next request restores without verifying again.
        #expect(
            pool.setPolicy(ScalingPolicy(minInstances: 0, maxInstances: 3, concurrency: 1, keepAliveSeconds: 10), now: at(101)).stops == ["hello-1"])
        _ = pool.terminated(Self.instance(1), now: at(101))
        let status = pool.status(now: at(101))
        #expect(status.instances.isEmpty && status.stopping == 0)
        #expect(pool.acquire(arrivedAt: at(102), now: at(102), waiter: 3).1.launches == [false])
    }

    @Test func aLoweredMaximumStopsIdleInstances() {
        var pool = machine(ScalingPolicy(minInstances: 3, maxInstances: 3, concurrency: 1))
        #expect(pool.tick(now: at(0)).launches == [true], "one launch until the snapshot is verified")
        _ = bringUp(&pool)
        #expect(pool.tick(now: at(0.1)).launches.isEmpty, "two more were asked for when the first came up")
        _ = pool.launched(Self.restored(2), now: at(0.5))
        _ = pool.launched(Self.restored(3), now: at(0.5))
        let lowered = pool.setPolicy(ScalingPolicy(minInstances: 1, maxInstances: 1, concurrency: 1), now: at(1))
        #expect(lowered.stops == ["hello-3", "hello-2"])
    }

    // MARK: Dead and unreachable instances

    @Test func aDeadInstanceIsReplacedForTheWaitingRequests() {
        var pool = machine(ScalingPolicy(minInstances: 2, maxInstances: 2, concurrency: 1))
        _ = pool.tick(now: at(0))
        _ = bringUp(&pool)
        _ = pool.launched(Self.restored(2), now: at(0.2))
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 0)
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 1)
        #expect(pool.acquire(arrivedAt: at(1), now: at(1), waiter: 2).0 == .waiting(ticket: 0))
        #expect(pool.instances.map(\.id) == ["hello-1", "hello-2"], "what the owner checks in /proc")
        let found = pool.tick(now: at(2), dead: ["hello-1"])
        #expect(found.stops == ["hello-1"], "cleaned up")
        #expect(found.metrics == [.instanceDied])
        #expect(found.launches == [false], "replaced")
        #expect(found.logs.contains { $0.level == .error && $0.message.description == "instance died; removing it" })
        // The request that was on it fails by itself; its release finds nothing to give back.
        #expect(pool.release(Self.lease(1), outcome: .unreachable("reset"), processAlive: false, now: at(2.1)).stops.isEmpty)
        #expect(pool.launched(Self.restored(3), now: at(2.5)).grants.map { "\($0.waiter)@\($0.instance)" } == ["2@hello-3"])
        #expect(pool.status(now: at(3)).deaths == 1)
    }

    @Test func anUnsentRequestIsRetriedOnAnotherInstance() {
        var pool = machine(ScalingPolicy(minInstances: 2, maxInstances: 2, concurrency: 1))
        _ = pool.tick(now: at(0))
        _ = bringUp(&pool)
        _ = pool.launched(Self.restored(2), now: at(0.2))
        let arrival = at(1)
        #expect(pool.acquire(arrivedAt: arrival, now: arrival, waiter: 0).0 == .leased(Self.lease(1)))
        // Connection refused, and the owner found its process gone: removed, replaced.
        let gone = pool.release(Self.lease(1), outcome: .unreachable("connection refused"), processAlive: false, now: at(1.01))
        #expect(gone.stops == ["hello-1"] && gone.launches == [false])
        // The retry (same arrival) goes to the other instance.
        #expect(pool.acquire(arrivedAt: arrival, now: at(1.02), waiter: 0).0 == .leased(Self.lease(2)))
    }

    @Test func anUnreachableLiveInstanceIsQuarantinedThenRetired() {
        var pool = machine(ScalingPolicy(minInstances: 0, maxInstances: 2, concurrency: 4))
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = bringUp(&pool)
        let unreachable = LeaseOutcome.unreachable("connection reset")
        #expect(pool.release(Self.lease(1), outcome: unreachable, now: at(1)).logs.isEmpty, "once may be a closed keep-alive connection")
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 1)
        let twice = pool.release(Self.lease(1), outcome: unreachable, now: at(1.1))
        #expect(twice.logs.map(\.level) == [.warning])
        #expect(twice.wakes == [at(1.6)], "a tick when the quarantine ends")
        #expect(pool.status(now: at(1.1)).instances.first?.state == .quarantined)
        #expect(twice.gauges == PoolGauges(quarantined: 1))
        // No new request for it meanwhile: one waits, and its room does not count (another is launched)...
        let held = pool.acquire(arrivedAt: at(1.2), now: at(1.2), waiter: 2)
        #expect(held.0 == .waiting(ticket: 1) && held.1.launches == [false])
        // ...until the quarantine is over: the request waiting goes first, then the newcomer.
        let after = pool.acquire(arrivedAt: at(1.65), now: at(1.65), waiter: 3)
        #expect(after.0 == .waiting(ticket: 2))
        #expect(after.1.grants.map { "\($0.waiter)@\($0.instance)" } == ["2@hello-1", "3@hello-1"])
        #expect(pool.release(Self.lease(1), outcome: unreachable, now: at(1.7)).stops.isEmpty, "retired: it stops after its last request")
        #expect(pool.status(now: at(1.7)).instances.first?.state == .draining, "three times in a row")
        #expect(pool.release(Self.lease(1), outcome: .answered, now: at(1.8)).stops == ["hello-1"])
        #expect(pool.status(now: at(1.8)).deaths == 0, "retired, not dead")
    }

    // MARK: Launch failures

    @Test func aFailedRestoreFallsBackToAColdStart() {
        var pool = machine(ScalingPolicy())
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = pool.prepared(now: at(0))
        let report = LaunchReport(
            instance: Self.instance(1, origin: .coldStart), restoreFailure: "CRIU could not restore", coldStartDuration: .seconds(3))
        let up = pool.launched(report, now: at(3))
        #expect(up.metrics == [.restoreFailed, .coldStartSucceeded(.seconds(3))])
        #expect(up.logs.map(\.level) == [.warning])
        #expect(up.logs.first?.metadata["restore_error"] == "CRIU could not restore")
        #expect(up.grants.map(\.waiter) == [0])
        let status = pool.status(now: at(3))
        #expect(status.coldStarts == 1 && status.instances.first?.origin == .coldStart)
    }

    @Test func failedLaunchesAnswer503AndBackOff() {
        var pool = machine(ScalingPolicy())
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 1)
        _ = pool.prepared(now: at(0))
        let failure = LaunchFailure(restoreError: "CRIU could not restore", coldStartError: "the service exited")
        let failed = pool.launchFailed(failure, now: at(1))
        #expect(failed.metrics == [.restoreFailed, .coldStartFailed])
        #expect(failed.failures.map(\.waiter) == [0, 1])
        #expect(failed.failures.first?.failure == .launchFailed(reason: "\(failure)"))
        #expect(failed.failures.first?.failure.code == .launchFailed)
        #expect(failed.launches.isEmpty)
        #expect(pool.acquire(arrivedAt: at(2), now: at(2), waiter: 2).0 == .refused(.launchFailed(reason: "\(failure)")), "no launch per request")
        #expect(pool.status(now: at(2)).failure == "\(failure)")
        let later = pool.acquire(arrivedAt: at(6), now: at(6), waiter: 3)
        #expect(later.0 == .waiting(ticket: 2) && later.1.launches == [false], "tried again after the back-off")
        #expect(pool.status(now: at(6)).failure == nil)
    }

    @Test func aSnapshotFailingVerificationIsNotUsedUntilTheRetry() {
        var pool = machine(ScalingPolicy(minInstances: 1))
        #expect(pool.tick(now: at(0)).launches == [true])
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        let failed = pool.preparationFailed(KilnError(.snapshotCorrupt, "pages-1.img: sha256 mismatch"), now: at(1))
        #expect(failed.metrics == [.verificationFailed])
        #expect(failed.failures.map(\.failure.code) == [.snapshotUnusable])
        #expect(failed.launches.isEmpty, "the minimum does not verify it again at once")
        #expect(pool.tick(now: at(2)).launches.isEmpty)
        let refused = pool.acquire(arrivedAt: at(3), now: at(3), waiter: 1).0
        guard case .refused(.snapshotUnusable(let reason)) = refused else {
            Issue.record("expected snapshot-unusable, got \(refused)")
            return
        }
        #expect(reason.contains("sha256 mismatch"))
        #expect(pool.status(now: at(3)).state == .unusable)
        #expect(pool.tick(now: at(31)).launches == [true], "verified again after verificationRetry")
    }

    @Test func drainWithReverifyVerifiesTheNextLaunch() {
        var pool = machine(ScalingPolicy(concurrency: 1))
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = bringUp(&pool)
        let (retired, effects) = pool.drain(reverify: true, now: at(1))
        #expect(retired == ["hello-1"] && effects.stops.isEmpty, "it stops after its last request")
        let asked = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 1)
        #expect(asked.1.launches == [true])
        #expect(pool.release(Self.lease(1), outcome: .answered, now: at(1.5)).stops == ["hello-1"])
    }

    // MARK: Shutdown

    @Test func closingFailsWaitersAndStopsEverythingThenSaysEmptied() {
        var pool = machine(ScalingPolicy(maxInstances: 3, concurrency: 1))
        _ = pool.acquire(arrivedAt: at(0), now: at(0), waiter: 0)
        _ = bringUp(&pool)
        _ = pool.acquire(arrivedAt: at(1), now: at(1), waiter: 1)
        #expect(pool.launched(Self.restored(2), now: at(1.1)).grants.map(\.waiter) == [1])
        _ = pool.release(Self.lease(2), outcome: .answered, now: at(1.2))
        _ = pool.acquire(arrivedAt: at(1.3), now: at(1.3), waiter: 2)
        _ = pool.acquire(arrivedAt: at(1.3), now: at(1.3), waiter: 3)
        // hello-1 busy with 0, hello-2 with 2; 3 waits, a third instance is coming.
        #expect(pool.launching == 1)
        let closing = pool.close(now: at(2))
        #expect(closing.failures.map(\.waiter) == [3])
        #expect(closing.failures.first?.failure == .shuttingDown)
        #expect(closing.stops.isEmpty, "both are busy")
        #expect(!closing.emptied)
        #expect(pool.acquire(arrivedAt: at(2), now: at(2), waiter: 4).0 == .refused(.shuttingDown))
        #expect(pool.release(Self.lease(1), outcome: .answered, now: at(2.1)).stops == ["hello-1"])
        #expect(pool.release(Self.lease(2), outcome: .answered, now: at(2.1)).stops == ["hello-2"])
        #expect(pool.launched(Self.restored(3), now: at(2.2)).stops == ["hello-3"], "a launch that ends after the close is stopped")
        #expect(!pool.terminated(Self.instance(1), now: at(2.3)).emptied)
        #expect(!pool.terminated(Self.instance(2), now: at(2.3)).emptied)
        let last = pool.terminated(Self.instance(3), now: at(2.3))
        #expect(last.emptied)
        #expect(pool.status(now: at(2.3)).state == .closed)
        #expect(pool.close(now: at(3)).emptied, "a later close returns at once")
    }

    @Test func gatewayFailuresCarryKilnErrorCodes() {
        #expect(GatewayFailure.queueFull(limit: 1).code.rawValue == "queue-full")
        #expect(GatewayFailure.queueTimeout(seconds: 1).code.rawValue == "queue-timeout")
        #expect(GatewayFailure.snapshotUnusable(reason: "x").code.rawValue == "snapshot-unusable")
        #expect(GatewayFailure.launchFailed(reason: "x").code.rawValue == "launch-failed")
        #expect(GatewayFailure.shuttingDown.code.rawValue == "shutting-down")
        #expect(GatewayMetrics.InstanceState.allCases.map(\.rawValue) == ["starting", "idle", "busy", "quarantined", "draining", "stopping"])
    }
}

/// What a test reads out of a list of effects.
extension Array where Element == FunctionPoolStateMachine<Int>.Effect {
    /// Each launch asked for: whether it verifies the snapshot first.
    var launches: [Bool] { compactMap { if case .launch(let verify) = $0 { verify } else { nil } } }
    var grants: [(waiter: Int, instance: String)] {
        compactMap { if case .grant(let waiter, let lease) = $0 { (waiter, lease.instance.id) } else { nil } }
    }
    var failures: [(waiter: Int, failure: GatewayFailure)] {
        compactMap { if case .fail(let waiter, let failure) = $0 { (waiter, failure) } else { nil } }
    }
    var stops: [String] { compactMap { if case .stop(let instance) = $0 { instance.id } else { nil } } }
    var metrics: [PoolMetric] { compactMap { if case .metric(let metric) = $0 { metric } else { nil } } }
    var logs: [(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata)] {
        compactMap { if case .log(let level, let message, let metadata) = $0 { (level, message, metadata) } else { nil } }
    }
    var wakes: [ContinuousClock.Instant] { compactMap { if case .wake(let instant) = $0 { instant } else { nil } } }
    var emptied: Bool { contains { if case .emptied = $0 { true } else { false } } }
    /// The last gauges published.
    var gauges: PoolGauges? { compactMap { if case .gauges(let gauges, _) = $0 { gauges } else { nil } }.last }
}
