import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import Synchronization

/// Why a request could not be given an instance. Each maps to a gateway error response.
public enum GatewayFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case queueFull(limit: Int)
    case queueTimeout(seconds: Double)
    /// The function cannot be run now: its snapshot failed verification, or launches fail.
    case unavailable(code: String, reason: String)
    case shuttingDown

    public var description: String {
        switch self {
        case .queueFull(let limit): "\(limit) requests are already waiting for an instance"
        case .queueTimeout(let seconds): "no instance could take the request within \(Self.format(seconds)) s"
        case .unavailable(_, let reason): reason
        case .shuttingDown: "the gateway is shutting down"
        }
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}

/// The right to send one request to one instance: taken from a ``FunctionPool`` and given back
/// with ``FunctionPool/release(_:outcome:)`` once the request is over.
public struct Lease: Sendable {
    public let instance: GatewayInstance
}

/// What happened to a leased request, as far as the instance is concerned.
enum LeaseOutcome: Sendable {
    /// The instance answered.
    case answered
    /// The instance could not be reached or dropped the connection: maybe dead.
    case unreachable(String)
    /// Something went wrong that says nothing about the instance's health (a slow answer).
    case failed
    /// The lease was never used: the client went away while it was being granted.
    case unused
}

/// Work a pool asks the gateway's run loop to do, so that every restore and every stop runs as a
/// child task of the gateway (and is waited for at shutdown) rather than as a stray task.
enum PoolCommand: Sendable {
    case launch(FunctionPool)
    case terminate(FunctionPool, GatewayInstance)
}

/// What a pool needs from the gateway around it.
struct PoolEnvironment: Sendable {
    var provider: any InstanceProvider
    var commands: AsyncStream<PoolCommand>.Continuation
    var metrics: FunctionMetrics
    var logger: Logger
    var launchFailureBackoff: Duration
    var verificationRetry: Duration
    var quarantine: Duration
}

/// The instances of one function and the requests waiting for them.
///
/// All scaling decisions are made here, from counts this pool alone changes: which instance
/// takes a request (the least busy with room), when to launch another (requests wait and the
/// instances coming up will not absorb them), when to stop one (idle past keep-alive, above the
/// minimum), and what to do when one dies (remove it; its waiting requests go to the others or
/// to its replacement). Launches and stops themselves run in the gateway's task group.
///
/// Why a lock and not an actor: every request takes a lease and gives it back, on the event
/// loop of its connection. A call into an actor from there is an asynchronous hop (a task, a
/// job on the actor's executor, a resumption); under load those hops cost as much CPU as the
/// proxying itself. Here a lease is a few comparisons under an uncontended lock, and only a
/// request that has to wait is called back later (``acquire(arrivedAt:onLease:)``).
/// Callbacks, launches and stops are carried out after the lock is released, never under it.
public final class FunctionPool: Sendable {
    /// Called once with the lease (or why there is none) of a request that had to wait, from
    /// whichever thread settles it: the caller hops to its own event loop.
    typealias LeaseHandler = @Sendable (Result<Lease, GatewayFailure>) -> Void

    /// What ``acquire(arrivedAt:onLease:)`` did with a request.
    enum Acquisition {
        /// An instance had room: the request may go at once.
        case leased(Lease)
        /// The request waits in the queue (under this ticket, for ``cancelWaiting(_:)``); its
        /// handler is called once, later.
        case waiting(ticket: Int)
        /// The request gets no instance: the handler is not called.
        case refused(GatewayFailure)
    }

    public let function: String
    /// The function's metric handles (made once, per function).
    var metrics: FunctionMetrics { environment.metrics }
    private let environment: PoolEnvironment
    private let state: Mutex<State>

    init(function: String, policy: ScalingPolicy, environment: PoolEnvironment) {
        self.function = function
        self.environment = environment
        var logger = environment.logger
        logger[metadataKey: "function"] = "\(function)"
        state = Mutex(State(function: function, policy: policy, environment: environment, logger: logger))
    }

    // MARK: Requests

    /// An instance with room for one more request: at once if there is one and nobody is waiting
    /// ahead; else the request joins the queue (which may start a launch) until the queue
    /// timeout, counted from `arrival` (a retry keeps its first arrival), and `onLease` is
    /// called once it has an instance or never will.
    ///
    /// `onLease` is made only if the request has to wait: most do not, and need no callback.
    func acquire(arrivedAt arrival: ContinuousClock.Instant, onLease: @autoclosure () -> LeaseHandler) -> Acquisition {
        update { $0.acquire(arrivedAt: arrival, onLease: onLease) }
    }

    /// Takes a waiting request out of the queue (its client went away). False when it is no
    /// longer there: its handler has been or is being called, and a lease it gets must be
    /// released (``LeaseOutcome/unused``).
    func cancelWaiting(_ ticket: Int) -> Bool {
        update { $0.cancelWaiter(ticket) }
    }

    /// Gives a lease back, with what happened to the request.
    func release(_ lease: Lease, outcome: LeaseOutcome) {
        update { $0.release(lease, outcome: outcome) }
    }

    // MARK: Launches (called by the gateway's run loop)

    /// Whether a launch must first prepare (verify) the function; marks it as being prepared.
    func beginLaunch() -> Bool { update { $0.beginLaunch() } }
    func prepared() { update { $0.preparation = .prepared } }
    func preparationFailed(_ error: any Error) { update { $0.preparationFailed(error) } }
    func launched(_ report: LaunchReport) { update { $0.launched(report) } }
    func launchFailed(_ error: any Error) { update { $0.launchFailed(error) } }
    func terminated(_ instance: GatewayInstance) { update { $0.terminated(instance) } }

    /// Called every maintenance interval: expires waits, finds dead instances, stops idle ones.
    func maintain() { update { $0.maintain() } }

    // MARK: Admin

    /// Replaces the policy and acts on it at once (e.g. starts instances up to a new minimum).
    func setPolicy(_ policy: ScalingPolicy) {
        update { state in
            state.policy = policy
            state.maintain()
        }
    }

    /// Retires every instance (each stops after its last request); with `reverify`, the
    /// snapshot is verified again before the next launch (after `kiln bake --replace`).
    /// Returns the ids retired.
    func drain(reverify: Bool) -> [String] { update { $0.drain(reverify: reverify) } }

    /// Stops taking requests (waiting ones get 503), retires every instance, and returns once
    /// all are stopped and no launch is under way (a launch that completes now is stopped).
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            update { $0.close(notifying: continuation) }
        }
    }

    /// The pool as the admin API shows it.
    func status() -> FunctionStatus { state.withLock { $0.status() } }

    var currentPolicy: ScalingPolicy { state.withLock { $0.policy } }

    // MARK: Effects

    /// Runs `body` under the lock, then carries out what it asked for.
    private func update<Result>(_ body: (inout State) -> Result) -> Result {
        let (result, effects) = state.withLock { state in
            let result = body(&state)
            var effects: [Effect] = []
            swap(&effects, &state.effects)
            return (result, effects)
        }
        for effect in effects {
            switch effect {
            case .grant(let handler, let result): handler(result)
            case .launch: environment.commands.yield(.launch(self))
            case .terminate(let instance): environment.commands.yield(.terminate(self, instance))
            case .emptied(let waiter): waiter.resume()
            }
        }
        return result
    }
}

/// What a pool does once its lock is released.
private enum Effect {
    case grant(FunctionPool.LeaseHandler, Result<Lease, GatewayFailure>)
    case launch
    case terminate(GatewayInstance)
    case emptied(CheckedContinuation<Void, Never>)
}

/// A pool's state and decisions; every method runs under the pool's lock.
private struct State {
    struct Slot {
        var instance: GatewayInstance
        var inFlight = 0
        var served = 0
        var startedAt: ContinuousClock.Instant
        var lastUsed: ContinuousClock.Instant
        /// Taking no new requests; stopped once its last one is over.
        var retiring = false
        /// Could not be reached lately: no new requests until then, while its process is checked.
        var quarantinedUntil: ContinuousClock.Instant?
        var unreachableStreak = 0
    }

    struct Waiter {
        var ticket: Int
        var deadline: ContinuousClock.Instant
        var onLease: FunctionPool.LeaseHandler
    }

    enum Preparation: Equatable {
        case unprepared
        case preparing
        case prepared
        case failed(reason: String, at: ContinuousClock.Instant)
    }

    struct GaugeCounts: Equatable {
        var queue: Int
        var starting: Int
        var stopping: Int
        var idle = 0
        var busy = 0
        var draining = 0

        subscript(state: GatewayMetrics.InstanceState) -> Int {
            switch state {
            case .starting: starting
            case .idle: idle
            case .busy: busy
            case .draining: draining
            case .stopping: stopping
            }
        }
    }

    let function: String
    var policy: ScalingPolicy
    let environment: PoolEnvironment
    let logger: Logger

    /// Ordered by start: ties in load go to the oldest instance, so under light load the newest
    /// ones go idle and are the first to be stopped.
    var slots: [Slot] = []
    var launching = 0
    var terminating = 0
    var waiters: [Waiter] = []
    var nextTicket = 0
    var preparation = Preparation.unprepared
    var launchesBlockedUntil: ContinuousClock.Instant?
    var lastLaunchFailure: String?
    var closed = false
    var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    /// What ``publishGauges()`` recorded last (nil: nothing yet).
    var published: GaugeCounts?
    /// What to do once the lock is released.
    var effects: [Effect] = []

    // Counters for the admin API.
    var launches = 0
    var coldStarts = 0
    var deaths = 0

    init(function: String, policy: ScalingPolicy, environment: PoolEnvironment, logger: Logger) {
        self.function = function
        self.policy = policy
        self.environment = environment
        self.logger = logger
    }

    var now: ContinuousClock.Instant { .now }

    // MARK: Requests

    mutating func acquire(arrivedAt arrival: ContinuousClock.Instant, onLease: () -> FunctionPool.LeaseHandler) -> FunctionPool.Acquisition {
        if closed { return .refused(.shuttingDown) }
        if case .failed(let reason, let at) = preparation {
            if now < at + environment.verificationRetry { return .refused(.unavailable(code: "snapshot-unusable", reason: reason)) }
            preparation = .unprepared
        }
        if waiters.isEmpty, let index = pickSlot() {
            return .leased(lease(index))
        }
        if let until = launchesBlockedUntil, now < until, slots.allSatisfy(\.retiring), launching == 0 {
            return .refused(.unavailable(code: "launch-failed", reason: "no instance could be started: \(lastLaunchFailure ?? "unknown error")"))
        }
        guard waiters.count < policy.queueLimit else { return .refused(.queueFull(limit: policy.queueLimit)) }
        let ticket = nextTicket
        nextTicket += 1
        waiters.append(Waiter(ticket: ticket, deadline: arrival + policy.queueTimeout, onLease: onLease()))
        scale()
        publishGauges()
        return .waiting(ticket: ticket)
    }

    mutating func cancelWaiter(_ ticket: Int) -> Bool {
        guard let index = waiters.firstIndex(where: { $0.ticket == ticket }) else { return false }
        waiters.remove(at: index)
        publishGauges()
        return true
    }

    mutating func release(_ lease: Lease, outcome: LeaseOutcome) {
        defer { settle() }
        guard let index = slots.firstIndex(where: { $0.instance.id == lease.instance.id }) else { return }
        slots[index].inFlight -= 1
        slots[index].lastUsed = now
        switch outcome {
        case .answered:
            slots[index].served += 1
            slots[index].unreachableStreak = 0
            slots[index].quarantinedUntil = nil
        case .failed, .unused:
            break
        case .unreachable(let reason):
            if !environment.provider.isAlive(slots[index].instance) {
                remove(at: index, because: "its process is gone (\(reason))")
                return
            }
            // Alive but unreachable. Once may be a connection the service had just closed;
            // twice in a row, it gets no new requests for a while.
            slots[index].unreachableStreak += 1
            if slots[index].unreachableStreak >= 2 {
                slots[index].quarantinedUntil = now + environment.quarantine
                logger.warning("instance could not be reached twice; no new requests for now", metadata: ["instance": "\(lease.instance.id)", "reason": "\(reason)"])
            }
            if slots[index].unreachableStreak >= 3 {
                logger.error("instance unreachable 3 times in a row: retiring it", metadata: ["instance": "\(lease.instance.id)"])
                slots[index].retiring = true
            }
        }
        stopIfDone(index)
    }

    /// The least busy instance with room, oldest first among equals.
    func pickSlot() -> Int? {
        let now = self.now
        var best: Int?
        for index in slots.indices {
            let slot = slots[index]
            guard !slot.retiring, slot.inFlight < policy.concurrency else { continue }
            if let until = slot.quarantinedUntil, now < until { continue }
            if best == nil || slot.inFlight < slots[best!].inFlight { best = index }
        }
        return best
    }

    mutating func lease(_ index: Int) -> Lease {
        slots[index].inFlight += 1
        return Lease(instance: slots[index].instance)
    }

    /// Hands waiting requests to instances with room, in arrival order.
    mutating func dispatch() {
        while !waiters.isEmpty, let index = pickSlot() {
            let waiter = waiters.removeFirst()
            effects.append(.grant(waiter.onLease, .success(lease(index))))
        }
    }

    // MARK: Scaling

    /// Launches what demand and the minimum call for.
    ///
    /// - With no instance at all, at most one launch runs: concurrent first requests share one
    ///   restore, and a snapshot is verified once before its first restore.
    /// - Otherwise another instance is launched while more requests wait than the room left in
    ///   running instances plus the room that the launches under way will bring.
    mutating func scale() {
        guard !closed else { return }
        // Runs after every request: counted in place, without building arrays.
        var usable = 0
        var spare = 0
        for slot in slots where !slot.retiring {
            usable += 1
            spare += max(0, policy.concurrency - slot.inFlight)
        }
        if waiters.isEmpty, usable + launching >= policy.minInstances { return }
        if let until = launchesBlockedUntil, now < until { return }
        let limit = usable == 0 || preparation != .prepared ? 1 : policy.maxInstances
        var wanted = 0
        while usable + launching + wanted < limit {
            let coming = (launching + wanted) * policy.concurrency
            let belowMinimum = usable + launching + wanted < policy.minInstances
            guard waiters.count > spare + coming || belowMinimum else { break }
            wanted += 1
        }
        for _ in 0..<wanted {
            launching += 1
            effects.append(.launch)
        }
    }

    mutating func beginLaunch() -> Bool {
        guard preparation != .prepared else { return false }
        preparation = .preparing
        return true
    }

    mutating func preparationFailed(_ error: any Error) {
        launching -= 1
        let reason = "snapshot '\(function)' cannot be used: \(error)"
        preparation = .failed(reason: reason, at: now)
        environment.metrics.verificationFailures.increment()
        logger.error("snapshot failed verification; not using it", metadata: ["error": "\(error)"])
        failWaiters(.unavailable(code: "snapshot-unusable", reason: reason))
        settle()
    }

    mutating func launched(_ report: LaunchReport) {
        launching -= 1
        launches += 1
        let metrics = environment.metrics
        var metadata: Logger.Metadata = ["instance": "\(report.instance.id)", "pid": "\(report.instance.pid)"]
        if let duration = report.restoreDuration {
            metrics.restoresSucceeded.increment()
            metrics.restoreDuration.recordInterval(duration)
            metadata["restore_ms"] = "\(Int(duration.milliseconds))"
        }
        if let failure = report.restoreFailure {
            coldStarts += 1
            metrics.restoresFailed.increment()
            metrics.coldStartFallbacksSucceeded.increment()
            if let duration = report.coldStartDuration {
                metrics.coldStartDuration.recordInterval(duration)
                metadata["cold_start_ms"] = "\(Int(duration.milliseconds))"
            }
            metadata["restore_error"] = "\(failure)"
            logger.warning("restore failed; fell back to a cold start of the function's command", metadata: metadata)
        } else {
            logger.info("instance up", metadata: metadata)
        }
        let started = now
        slots.append(Slot(instance: report.instance, startedAt: started, lastUsed: started, retiring: closed))
        launchesBlockedUntil = nil
        stopIfDone(slots.count - 1)
        settle()
    }

    mutating func launchFailed(_ error: any Error) {
        launching -= 1
        let metrics = environment.metrics
        metrics.restoresFailed.increment()
        if let failure = error as? LaunchFailure, failure.coldStartError != nil { metrics.coldStartFallbacksFailed.increment() }
        lastLaunchFailure = "\(error)"
        launchesBlockedUntil = now + environment.launchFailureBackoff
        logger.error("could not start an instance", metadata: ["error": "\(error)"])
        if slots.allSatisfy(\.retiring), launching == 0 {
            failWaiters(.unavailable(code: "launch-failed", reason: "no instance could be started: \(error)"))
        }
        settle()
    }

    mutating func terminated(_ instance: GatewayInstance) {
        terminating -= 1
        logger.info("instance stopped", metadata: ["instance": "\(instance.id)"])
        settle()
    }

    // MARK: Maintenance

    mutating func maintain() {
        let now = self.now
        var index = 0
        while index < waiters.count {
            if waiters[index].deadline <= now {
                let waiter = waiters.remove(at: index)
                effects.append(.grant(waiter.onLease, .failure(.queueTimeout(seconds: policy.queueTimeoutSeconds))))
            } else {
                index += 1
            }
        }
        for index in slots.indices.reversed() where !environment.provider.isAlive(slots[index].instance) {
            remove(at: index, because: "its process is gone")
        }
        // Scale down: idle instances past keep-alive, newest first, down to the minimum; and
        // idle ones above a lowered maximum.
        var active = slots.filter { !$0.retiring }.count
        for index in slots.indices.reversed() where !slots[index].retiring && slots[index].inFlight == 0 && waiters.isEmpty {
            let idleFor = slots[index].lastUsed.duration(to: now)
            if (active > policy.minInstances && idleFor >= policy.keepAlive) || active > policy.maxInstances {
                logger.info("stopping idle instance", metadata: ["instance": "\(slots[index].instance.id)", "idle_s": "\(Int(idleFor.milliseconds / 1000))"])
                slots[index].retiring = true
                active -= 1
            }
        }
        for index in slots.indices.reversed() { stopIfDone(index) }
        settle()
    }

    /// After any change: hand out room, launch what is needed, publish the gauges, and wake
    /// anyone waiting for the pool to empty.
    mutating func settle() {
        dispatch()
        scale()
        publishGauges()
        if closed, slots.isEmpty, launching == 0, terminating == 0 {
            for waiter in emptyWaiters { effects.append(.emptied(waiter)) }
            emptyWaiters = []
        }
    }

    /// Stops a retiring instance once its last request is over.
    mutating func stopIfDone(_ index: Int) {
        guard slots[index].retiring, slots[index].inFlight == 0 else { return }
        let slot = slots.remove(at: index)
        terminating += 1
        effects.append(.terminate(slot.instance))
    }

    /// Forgets an instance whose process died, and has it cleaned up. Requests still on it fail
    /// by themselves; their release finds no slot.
    mutating func remove(at index: Int, because reason: String) {
        let slot = slots.remove(at: index)
        deaths += 1
        environment.metrics.instanceFailures.increment()
        logger.error("instance died; removing it", metadata: ["instance": "\(slot.instance.id)", "reason": "\(reason)", "in_flight": "\(slot.inFlight)"])
        terminating += 1
        effects.append(.terminate(slot.instance))
    }

    mutating func failWaiters(_ failure: GatewayFailure) {
        for waiter in waiters { effects.append(.grant(waiter.onLease, .failure(failure))) }
        waiters = []
    }

    /// Records the queue length and the instances per state, those that changed only: this runs
    /// after every request, and most requests change none of them.
    mutating func publishGauges() {
        var counts = GaugeCounts(queue: waiters.count, starting: launching, stopping: terminating)
        for slot in slots {
            if slot.retiring { counts.draining += 1 } else if slot.inFlight > 0 { counts.busy += 1 } else { counts.idle += 1 }
        }
        guard counts != published else { return }
        let metrics = environment.metrics
        if counts.queue != published?.queue { metrics.queueLength.record(counts.queue) }
        for state in GatewayMetrics.InstanceState.allCases where counts[state] != published?[state] {
            metrics.instances[state]?.record(counts[state])
        }
        published = counts
    }

    // MARK: Admin

    mutating func drain(reverify: Bool) -> [String] {
        var retired: [String] = []
        for index in slots.indices where !slots[index].retiring {
            slots[index].retiring = true
            retired.append(slots[index].instance.id)
        }
        if reverify, preparation != .preparing { preparation = .unprepared }
        launchesBlockedUntil = nil
        for index in slots.indices.reversed() { stopIfDone(index) }
        settle()
        return retired
    }

    mutating func close(notifying waiter: CheckedContinuation<Void, Never>) {
        if !closed {
            closed = true
            failWaiters(.shuttingDown)
            for index in slots.indices { slots[index].retiring = true }
            for index in slots.indices.reversed() { stopIfDone(index) }
        }
        emptyWaiters.append(waiter)
        settle()
    }

    func status() -> FunctionStatus {
        let now = self.now
        let state: String
        switch preparation {
        case .unprepared: state = "unverified"
        case .preparing: state = "verifying"
        case .prepared: state = "verified"
        case .failed: state = "unusable"
        }
        let failure: String? = if case .failed(let reason, _) = preparation { reason } else { nil }
        return FunctionStatus(
            name: function, state: closed ? "closed" : state, failure: failure ?? lastLaunchFailure.flatMap { _ in
                launchesBlockedUntil.map { now < $0 } == true ? lastLaunchFailure : nil
            }, policy: policy, queueLength: waiters.count, starting: launching, stopping: terminating,
            launches: launches, coldStarts: coldStarts, deaths: deaths,
            instances: slots.map { slot in
                let quarantined = slot.quarantinedUntil.map { now < $0 } ?? false
                return InstanceSummary(
                    id: slot.instance.id, pid: slot.instance.pid, origin: slot.instance.origin,
                    state: slot.retiring ? "draining" : quarantined ? "quarantined" : slot.inFlight > 0 ? "busy" : "idle",
                    inFlight: slot.inFlight, served: slot.served, ageSeconds: slot.startedAt.duration(to: now).milliseconds / 1000,
                    idleSeconds: slot.inFlight > 0 ? 0 : slot.lastUsed.duration(to: now).milliseconds / 1000)
            })
    }
}

/// One function as the admin API lists it.
public struct FunctionStatus: Codable, Sendable {
    public var name: String
    /// `unverified` (not launched yet), `verifying`, `verified`, `unusable` (failed
    /// verification), `closed` (shutting down).
    public var state: String
    /// Why it cannot be used now, if it cannot.
    public var failure: String?
    public var policy: ScalingPolicy
    public var queueLength: Int
    public var starting: Int
    public var stopping: Int
    /// Instances started so far, of which cold starts (restore failed) and deaths.
    public var launches: Int
    public var coldStarts: Int
    public var deaths: Int
    public var instances: [InstanceSummary]
}

/// One instance as the admin API lists it.
public struct InstanceSummary: Codable, Sendable {
    public var id: String
    public var pid: Int32
    public var origin: GatewayInstance.Origin
    /// `idle`, `busy`, `draining` or `quarantined`.
    public var state: String
    public var inFlight: Int
    public var served: Int
    public var ageSeconds: Double
    public var idleSeconds: Double
}
