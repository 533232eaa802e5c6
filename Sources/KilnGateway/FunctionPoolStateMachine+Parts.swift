import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

// The machine's parts and the admin API's view of it.
extension FunctionPoolStateMachine {
    /// What the owner of the machine must do after an event, in order.
    enum Effect: Sendable {
        /// Give this lease to a waiting request.
        case grant(Waiter, Lease)
        /// Answer a waiting request with this failure.
        case fail(Waiter, GatewayFailure)
        /// Start one instance (a restore, or the cold start the provider falls back to); verify
        /// the snapshot first when asked. Report with ``prepared(now:)`` / ``preparationFailed(_:now:)``
        /// and then ``launched(_:now:)`` / ``launchFailed(_:now:)``.
        case launch(verifyFirst: Bool)
        /// Restore one standby copy (verifying the snapshot first when asked); report with
        /// ``prepared(now:)`` / ``preparationFailed(_:forStandby:now:)`` and then
        /// ``standbyLaunched(_:now:)`` / ``standbyLaunchFailed(_:now:)``.
        case launchStandby(verifyFirst: Bool)
        /// Thaw this standby copy and give it its identity; report with
        /// ``thawed(_:duration:now:)`` / ``thawFailed(_:error:now:)``.
        case thaw(GatewayInstance)
        /// Stop and clean up an instance (then report ``terminated(_:now:)``).
        case stop(GatewayInstance)
        /// A thawed standby copy's first request is over: save its record now. Saved earlier,
        /// beside that request, the write took CPU from the copy as it woke (on two CPUs,
        /// 1.3-3.7 ms of the Spring sample's first request at zero).
        case recordThawed(GatewayInstance)
        /// Call ``tick(now:dead:)`` at this time: a queue deadline or the end of a quarantine that
        /// should not wait for the periodic tick.
        case wake(at: ContinuousClock.Instant)
        /// The pool is closed and nothing of it is left running: wake whoever waits for that.
        case emptied
        case log(Logger.Level, Logger.Message, Logger.Metadata)
        case metric(PoolMetric)
        /// The gauges changed. Numbered in order, so that gauges published from two threads at
        /// once never leave the older numbers standing.
        case gauges(PoolGauges, generation: Int)
    }

    struct Slot: Sendable {
        var instance: GatewayInstance
        var inFlight = 0
        var served = 0
        var startedAt: ContinuousClock.Instant
        var lastUsed: ContinuousClock.Instant
        /// Taking no new requests; stopped once its last one is over.
        var retiring = false
        /// Could not be reached lately: no new requests until then.
        var quarantinedUntil: ContinuousClock.Instant?
        var unreachableStreak = 0
        /// Whether a request has been given to it yet (see ``Lease/servedBy``).
        var granted = false
        /// A thawed standby copy whose record waits for its first request to be over
        /// (``Effect/recordThawed(_:)``).
        var recordPending = false

        func state(at now: ContinuousClock.Instant) -> GatewayInstanceState {
            if retiring { return .draining }
            if let until = quarantinedUntil, now < until { return .quarantined }
            return inFlight > 0 ? .busy : .idle
        }
    }

    /// A standby copy: frozen, taking no request until thawed.
    struct StandbySlot: Sendable {
        var instance: GatewayInstance
        var readyAt: ContinuousClock.Instant
        var memoryBytes: Int?
    }

    struct QueuedWaiter: Sendable {
        var ticket: Int
        var deadline: ContinuousClock.Instant
        var waiter: Waiter
    }

    enum Preparation: Equatable, Sendable {
        case unprepared
        case preparing
        case prepared
        case failed(reason: String, at: ContinuousClock.Instant)
    }

    /// The pool as the admin API shows it, at `now`.
    func status(now: ContinuousClock.Instant) -> FunctionStatus {
        let now = max(now, self.now)
        let state: FunctionState
        switch preparation {
        case .unprepared: state = .unverified
        case .preparing: state = .verifying
        case .prepared: state = .verified
        case .failed: state = .unusable
        }
        var failure: String?
        if case .failed(let reason, _) = preparation {
            failure = reason
        } else if let until = launchesBlockedUntil, now < until {
            failure = lastLaunchFailure
        }
        return FunctionStatus(
            name: function, state: closed ? .closed : state, failure: failure, policy: policy, queueLength: waiters.count, starting: launching,
            stopping: terminating, launches: launches, coldStarts: coldStarts, deaths: deaths,
            instances: slots.map { slot in
                InstanceSummary(
                    id: slot.instance.id, pid: slot.instance.pid, origin: slot.instance.origin, state: slot.state(at: now), inFlight: slot.inFlight,
                    served: slot.served, ageSeconds: slot.startedAt.duration(to: now).milliseconds / 1000,
                    idleSeconds: slot.inFlight > 0 ? 0 : slot.lastUsed.duration(to: now).milliseconds / 1000)
            },
            standby: StandbySummary(
                wanted: policy.standby, ready: standbys.count, starting: standbyLaunching, thawing: thawing,
                memoryBytes: standbys.reduce(0) { $0 + ($1.memoryBytes ?? 0) }, budgetBytes: policy.standbyMemoryBytes, thaws: thaws,
                lastThawMs: lastThaw?.milliseconds, ids: standbys.map(\.instance.id)))
    }
}
