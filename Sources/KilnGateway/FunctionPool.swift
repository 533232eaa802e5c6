import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import NIOPosix
import Synchronization

/// Work a pool asks the gateway's run loop to do, so that every restore and every stop runs as a
/// child task of the gateway (and is waited for at shutdown) rather than as a stray task.
enum PoolCommand: Sendable {
    /// Launch one instance, verifying the snapshot first when asked.
    case launch(FunctionPool, verifyFirst: Bool)
    case terminate(FunctionPool, GatewayInstance)
    /// Restore one standby copy, verifying the snapshot first when asked.
    case launchStandby(FunctionPool, verifyFirst: Bool)
    /// Thaw a standby copy for the requests waiting.
    case thaw(FunctionPool, GatewayInstance)
    /// Run the pool's maintenance at this time (a queue deadline, the end of a quarantine).
    case maintain(FunctionPool, at: ContinuousClock.Instant)
    /// Save a thawed copy's record, its first request over.
    case recordThawed(GatewayInstance)
}

/// What a pool needs from the gateway around it.
struct PoolEnvironment: Sendable {
    var provider: any InstanceProvider
    var commands: AsyncStream<PoolCommand>.Continuation
    var metrics: FunctionMetrics
    var logger: Logger
    var timing: PoolTiming
}

/// The instances of one function and the requests waiting for them: a
/// ``FunctionPoolStateMachine`` under a lock, and the hands that carry out what it decides.
///
/// Every event goes into the machine under the lock with the time it happened; the effects
/// it returns (leases for waiting requests, launches, stops, logs, metrics) are carried out
/// once the lock is released. What the machine must not do itself happens here, outside the
/// lock: reading the clock, and checking in /proc whether an instance's process is alive
/// (before a maintenance tick, and when a lease comes back unreachable).
///
/// Why a lock and not an actor: every request takes a lease and gives it back, on the event
/// loop of its connection. A call into an actor from there is an asynchronous hop (a task, a
/// job on the actor's executor, a resumption); under load those hops cost as much CPU as the
/// proxying itself. Here a lease is a few comparisons under an uncontended lock, and only a
/// request that has to wait is called back later (``acquire(arrivedAt:onLease:)``).
public final class FunctionPool: Sendable {
    /// Called once with the lease (or why there is none) of a request that had to wait, from
    /// whichever thread settles it: the caller hops to its own event loop.
    typealias LeaseHandler = @Sendable (Result<Lease, GatewayFailure>) -> Void
    typealias Machine = FunctionPoolStateMachine<LeaseHandler>
    typealias Acquisition = PoolAcquisition

    private struct Locked {
        var machine: Machine
        /// Callers of ``close()`` waiting for the pool to empty.
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    }

    public let function: String
    /// The function's metric handles (made once, per function).
    var metrics: FunctionMetrics { environment.metrics }
    private let environment: PoolEnvironment
    private let logger: Logger
    private let state: Mutex<Locked>
    /// The gauges as last recorded, and the number the machine gave them.
    private let recordedGauges = Mutex<(generation: Int, gauges: PoolGauges?)>((0, nil))

    init(function: String, policy: ScalingPolicy, environment: PoolEnvironment) {
        self.function = function
        self.environment = environment
        var logger = environment.logger
        logger[metadataKey: "function"] = "\(function)"
        self.logger = logger
        state = Mutex(Locked(machine: Machine(function: function, policy: policy, timing: environment.timing, now: .now)))
    }

    // MARK: Requests

    /// An instance with room for one more request: at once if there is one and nobody is waiting
    /// ahead; else the request joins the queue (which may start a launch) until the queue
    /// timeout, counted from `arrival` (a retry keeps its first arrival), and `onLease` is
    /// called once it has an instance or never will.
    ///
    /// `onLease` is made only if the request has to wait: most do not, and need no callback.
    func acquire(arrivedAt arrival: ContinuousClock.Instant, onLease: @autoclosure () -> LeaseHandler) -> Acquisition {
        let now = ContinuousClock.now
        let (acquisition, effects) = withMachine { $0.acquire(arrivedAt: arrival, now: now, waiter: onLease()) }
        if !effects.isEmpty { run(effects) }
        return acquisition
    }

    /// Takes a waiting request out of the queue (its client went away). False when it is no
    /// longer there: its handler has been or is being called, and a lease it gets must be
    /// released (``LeaseOutcome/unused``).
    func cancelWaiting(_ ticket: Int) -> Bool {
        let now = ContinuousClock.now
        let (removed, effects) = withMachine { $0.cancelWaiter(ticket, now: now) }
        run(effects)
        return removed
    }

    /// Gives a lease back, with what happened to the request. An instance that could not be
    /// reached has its process checked first (outside the lock).
    func release(_ lease: Lease, outcome: LeaseOutcome) {
        var alive = true
        if case .unreachable = outcome { alive = environment.provider.isAlive(lease.instance) }
        let now = ContinuousClock.now
        update { $0.release(lease, outcome: outcome, processAlive: alive, now: now) }
    }

    // MARK: Launches (reported by the gateway's run loop)

    func prepared() { update { $0.prepared(now: .now) } }
    func preparationFailed(_ error: any Error, forStandby: Bool = false) { update { $0.preparationFailed(error, forStandby: forStandby, now: .now) } }
    func standbyLaunched(_ report: StandbyReport) { update { $0.standbyLaunched(report, now: .now) } }
    func standbyLaunchFailed(_ error: any Error) { update { $0.standbyLaunchFailed(error, now: .now) } }
    func thawed(_ report: LaunchReport, duration: Duration) { update { $0.thawed(report, duration: duration, now: .now) } }
    func thawFailed(_ instance: GatewayInstance, error: any Error) { update { $0.thawFailed(instance, error: error, now: .now) } }
    func launched(_ report: LaunchReport) { update { $0.launched(report, now: .now) } }
    func launchFailed(_ error: any Error) { update { $0.launchFailed(error, now: .now) } }
    func terminated(_ instance: GatewayInstance) { update { $0.terminated(instance, now: .now) } }

    /// Called every maintenance interval: checks which instances' processes are gone, then
    /// expires waits, replaces dead instances and stops idle ones.
    func maintain() {
        let instances = state.withLock { $0.machine.instances }
        var dead = Set<String>()
        for instance in instances where !environment.provider.isAlive(instance) { dead.insert(instance.id) }
        let now = ContinuousClock.now
        update { $0.tick(now: now, dead: dead) }
    }

    // MARK: Admin

    /// Replaces the policy and acts on it at once (e.g. starts instances up to a new minimum).
    func setPolicy(_ policy: ScalingPolicy) {
        let now = ContinuousClock.now
        update { $0.setPolicy(policy, now: now) }
    }

    /// Retires every instance (each stops after its last request); with `reverify`, the
    /// snapshot is verified again before the next launch (after `kiln bake --replace`).
    /// Returns the ids retired.
    func drain(reverify: Bool) -> [String] {
        let now = ContinuousClock.now
        let (retired, effects) = withMachine { $0.drain(reverify: reverify, now: now) }
        run(effects)
        return retired
    }

    /// Stops taking requests (waiting ones get 503), retires every instance, and returns once
    /// all are stopped and no launch is under way (a launch that completes now is stopped).
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = ContinuousClock.now
            let effects = state.withLock { locked in
                locked.emptyWaiters.append(continuation)
                return locked.machine.close(now: now)
            }
            run(effects)
        }
    }

    /// The pool as the admin API shows it.
    func status() -> FunctionStatus {
        let now = ContinuousClock.now
        return state.withLock { $0.machine.status(now: now) }
    }

    var currentPolicy: ScalingPolicy { state.withLock { $0.machine.policy } }

    // MARK: Effects

    /// Feeds one event to the machine under the lock, then carries out what it asked for.
    private func update(_ event: (inout Machine) -> [Machine.Effect]) {
        run(withMachine(event))
    }

    /// Runs `body` on the machine under the lock.
    private func withMachine<Result>(_ body: (inout Machine) -> Result) -> Result {
        state.withLock { body(&$0.machine) }
    }

    /// Carries out `effects`: the waiting requests' first (each granted an instance or failed,
    /// on its own loop), then the rest in order.
    private func run(_ effects: [Machine.Effect]) {
        for effect in effects {
            switch effect {
            case .grant(let handler, let lease): handler(.success(lease))
            case .fail(let handler, let failure): handler(.failure(failure))
            default: continue
            }
        }
        for effect in effects {
            switch effect {
            case .grant, .fail: continue
            case .launch(let verifyFirst): environment.commands.yield(.launch(self, verifyFirst: verifyFirst))
            case .launchStandby(let verifyFirst): environment.commands.yield(.launchStandby(self, verifyFirst: verifyFirst))
            case .thaw(let instance):
                let start = ContinuousClock.now
                if let report = environment.provider.handOutAtOnce(instance) {
                    handedOutAtOnce(report, duration: start.duration(to: .now))
                } else {
                    environment.commands.yield(.thaw(self, instance))
                }
            case .stop(let instance): environment.commands.yield(.terminate(self, instance))
            case .recordThawed(let instance): environment.commands.yield(.recordThawed(instance))
            case .wake(let instant): environment.commands.yield(.maintain(self, at: instant))
            case .emptied:
                let waiters = state.withLock { locked in
                    defer { locked.emptyWaiters = [] }
                    return locked.emptyWaiters
                }
                for waiter in waiters { waiter.resume() }
            case .log(let level, let message, let metadata):
                // On an event loop (a request's), the line is written after the work queued
                // there: a request at zero handed a standby copy is sent first, not after its
                // "standby copy thawed" line is formatted and written to stderr.
                if let loop = MultiThreadedEventLoopGroup.currentEventLoop, logger.logLevel <= level {
                    let logger = logger
                    loop.execute { logger.log(level: level, message, metadata: metadata) }
                } else {
                    logger.log(level: level, message, metadata: metadata)
                }
            case .metric(let metric): record(metric)
            case .gauges(let gauges, let generation): record(gauges, generation: generation)
            }
        }
    }

    /// A standby copy the provider handed out without a thaw step (a ready copy, still
    /// frozen) takes its waiting requests now, and the provider finishes the hand-out (kiln:
    /// the unfreeze) once they are on their way. On an event loop (the request's, usually) that
    /// comes after the requests' own work there, which the grants queued on it: the request is
    /// written before the copy wakes, with no other thread woken for either.
    private func handedOutAtOnce(_ report: LaunchReport, duration: Duration) {
        thawed(report, duration: duration)
        let provider = environment.provider
        let instance = report.instance
        if let loop = MultiThreadedEventLoopGroup.currentEventLoop {
            loop.execute { provider.handedOut(instance) }
        } else {
            provider.handedOut(instance)
        }
    }

    private func record(_ metric: PoolMetric) {
        let metrics = environment.metrics
        switch metric {
        case .restoreSucceeded(let duration):
            metrics.restoresSucceeded.increment()
            metrics.restoreDuration.recordInterval(duration)
        case .restoreFailed: metrics.restoresFailed.increment()
        case .coldStartSucceeded(let duration):
            metrics.coldStartFallbacksSucceeded.increment()
            if let duration { metrics.coldStartDuration.recordInterval(duration) }
        case .coldStartFailed: metrics.coldStartFallbacksFailed.increment()
        case .verificationFailed: metrics.verificationFailures.increment()
        case .instanceDied: metrics.instanceFailures.increment()
        case .standbyRestored(let duration):
            metrics.standbyRestores.increment()
            metrics.standbyRestoreDuration.recordInterval(duration)
        case .standbyRestoreFailed: metrics.standbyRestoresFailed.increment()
        case .thawSucceeded(let duration):
            metrics.thaws.increment()
            metrics.thawDuration.recordInterval(duration)
        case .thawFailed: metrics.thawsFailed.increment()
        }
    }

    /// Records the gauges that changed, unless newer ones were recorded meanwhile (by an event
    /// on another thread that left the pool's lock after this one).
    private func record(_ gauges: PoolGauges, generation: Int) {
        recordedGauges.withLock { recorded in
            guard generation > recorded.generation else { return }
            let metrics = environment.metrics
            if gauges.queue != recorded.gauges?.queue { metrics.queueLength.record(gauges.queue) }
            for state in GatewayInstanceState.allCases where gauges[state] != recorded.gauges?[state] {
                metrics.instances[state]?.record(gauges[state])
            }
            if gauges.standby != recorded.gauges?.standby { metrics.standbyCopies[.ready]?.record(gauges.standby) }
            if gauges.standbyStarting != recorded.gauges?.standbyStarting { metrics.standbyCopies[.starting]?.record(gauges.standbyStarting) }
            if gauges.thawing != recorded.gauges?.thawing { metrics.standbyCopies[.thawing]?.record(gauges.thawing) }
            if gauges.standbyBytes != recorded.gauges?.standbyBytes { metrics.standbyMemory.record(gauges.standbyBytes) }
            recorded = (generation, gauges)
        }
    }
}
