import Logging

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
/// All scaling decisions are made here, in one actor, from counts it alone changes: which
/// instance takes a request (the least busy with room), when to launch another (requests wait
/// and the instances coming up will not absorb them), when to stop one (idle past keep-alive,
/// above the minimum), and what to do when one dies (remove it; its waiting requests go to the
/// others or to its replacement). Launches and stops themselves run in the gateway's task group.
public actor FunctionPool {
    public nonisolated let function: String
    /// The function's metric handles (made once, per function).
    nonisolated var metrics: FunctionMetrics { environment.metrics }
    private var policy: ScalingPolicy
    private let environment: PoolEnvironment
    private var logger: Logger

    private struct Slot {
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

    private struct Waiter {
        var id: Int
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Lease, any Error>
    }

    private enum Preparation: Equatable {
        case unprepared
        case preparing
        case prepared
        case failed(reason: String, at: ContinuousClock.Instant)
    }

    /// Ordered by start: ties in load go to the oldest instance, so under light load the newest
    /// ones go idle and are the first to be stopped.
    private var slots: [Slot] = []
    private var launching = 0
    private var terminating = 0
    private var waiters: [Waiter] = []
    private var nextWaiterID = 0
    private var preparation = Preparation.unprepared
    private var launchesBlockedUntil: ContinuousClock.Instant?
    private var lastLaunchFailure: String?
    private var closed = false
    private var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    /// What ``publishGauges()`` recorded last (nil: nothing yet).
    private var published: GaugeCounts?

    private struct GaugeCounts: Equatable {
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

    // Counters for the admin API.
    private var launches = 0
    private var coldStarts = 0
    private var deaths = 0

    init(function: String, policy: ScalingPolicy, environment: PoolEnvironment) {
        self.function = function
        self.policy = policy
        self.environment = environment
        var logger = environment.logger
        logger[metadataKey: "function"] = "\(function)"
        self.logger = logger
    }

    private var now: ContinuousClock.Instant { .now }

    // MARK: Requests

    /// An instance with room for one more request: at once if there is one and nobody is waiting
    /// ahead, else after waiting (which may start a launch) until the queue timeout, counted
    /// from `arrival` (a retry keeps its first arrival).
    public func acquire(arrivedAt arrival: ContinuousClock.Instant) async throws -> Lease {
        let deadline = arrival + policy.queueTimeout
        if closed { throw GatewayFailure.shuttingDown }
        if case .failed(let reason, let at) = preparation {
            if now < at + environment.verificationRetry { throw GatewayFailure.unavailable(code: "snapshot-unusable", reason: reason) }
            preparation = .unprepared
        }
        if waiters.isEmpty, let index = pickSlot() {
            return lease(index)
        }
        if let until = launchesBlockedUntil, now < until, slots.allSatisfy(\.retiring), launching == 0 {
            throw GatewayFailure.unavailable(code: "launch-failed", reason: "no instance could be started: \(lastLaunchFailure ?? "unknown error")")
        }
        guard waiters.count < policy.queueLimit else { throw GatewayFailure.queueFull(limit: policy.queueLimit) }
        let id = nextWaiterID
        nextWaiterID += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lease, any Error>) in
                waiters.append(Waiter(id: id, deadline: deadline, continuation: continuation))
                scale()
                publishGauges()
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    /// Gives a lease back, with what happened to the request.
    func release(_ lease: Lease, outcome: LeaseOutcome) {
        defer { settle() }
        guard let index = slots.firstIndex(where: { $0.instance.id == lease.instance.id }) else { return }
        slots[index].inFlight -= 1
        slots[index].lastUsed = now
        switch outcome {
        case .answered:
            slots[index].served += 1
            slots[index].unreachableStreak = 0
            slots[index].quarantinedUntil = nil
        case .failed:
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

    private func cancelWaiter(_ id: Int) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(throwing: CancellationError())
        publishGauges()
    }

    /// The least busy instance with room, oldest first among equals.
    private func pickSlot() -> Int? {
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

    private func lease(_ index: Int) -> Lease {
        slots[index].inFlight += 1
        return Lease(instance: slots[index].instance)
    }

    /// Hands waiting requests to instances with room, in arrival order.
    private func dispatch() {
        while !waiters.isEmpty, let index = pickSlot() {
            let waiter = waiters.removeFirst()
            waiter.continuation.resume(returning: lease(index))
        }
    }

    // MARK: Scaling

    /// Launches what demand and the minimum call for.
    ///
    /// - With no instance at all, at most one launch runs: concurrent first requests share one
    ///   restore, and a snapshot is verified once before its first restore.
    /// - Otherwise another instance is launched while more requests wait than the room left in
    ///   running instances plus the room that the launches under way will bring.
    private func scale() {
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
            environment.commands.yield(.launch(self))
        }
    }

    /// Whether a launch must first prepare (verify) the function; marks it as being prepared.
    func beginLaunch() -> Bool {
        guard preparation != .prepared else { return false }
        preparation = .preparing
        return true
    }

    func prepared() {
        preparation = .prepared
    }

    func preparationFailed(_ error: any Error) {
        launching -= 1
        let reason = "snapshot '\(function)' cannot be used: \(error)"
        preparation = .failed(reason: reason, at: now)
        environment.metrics.verificationFailures.increment()
        logger.error("snapshot failed verification; not using it", metadata: ["error": "\(error)"])
        failWaiters(GatewayFailure.unavailable(code: "snapshot-unusable", reason: reason))
        settle()
    }

    func launched(_ report: LaunchReport) {
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

    func launchFailed(_ error: any Error) {
        launching -= 1
        let metrics = environment.metrics
        if let failure = error as? LaunchFailure {
            metrics.restoresFailed.increment()
            if failure.coldStartError != nil { metrics.coldStartFallbacksFailed.increment() }
        } else {
            metrics.restoresFailed.increment()
        }
        lastLaunchFailure = "\(error)"
        launchesBlockedUntil = now + environment.launchFailureBackoff
        logger.error("could not start an instance", metadata: ["error": "\(error)"])
        if slots.allSatisfy(\.retiring), launching == 0 {
            failWaiters(GatewayFailure.unavailable(code: "launch-failed", reason: "no instance could be started: \(error)"))
        }
        settle()
    }

    func terminated(_ instance: GatewayInstance) {
        terminating -= 1
        logger.info("instance stopped", metadata: ["instance": "\(instance.id)"])
        settle()
    }

    // MARK: Maintenance

    /// Called every maintenance interval: expires waits, finds dead instances, stops idle ones.
    func maintain() {
        let now = self.now
        var index = 0
        while index < waiters.count {
            if waiters[index].deadline <= now {
                waiters.remove(at: index).continuation.resume(throwing: GatewayFailure.queueTimeout(seconds: policy.queueTimeoutSeconds))
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
    private func settle() {
        dispatch()
        scale()
        publishGauges()
        if closed, slots.isEmpty, launching == 0, terminating == 0 {
            for waiter in emptyWaiters { waiter.resume() }
            emptyWaiters = []
        }
    }

    /// Stops a retiring instance once its last request is over.
    private func stopIfDone(_ index: Int) {
        guard slots[index].retiring, slots[index].inFlight == 0 else { return }
        let slot = slots.remove(at: index)
        terminating += 1
        environment.commands.yield(.terminate(self, slot.instance))
    }

    /// Forgets an instance whose process died, and has it cleaned up. Requests still on it fail
    /// by themselves; their release finds no slot.
    private func remove(at index: Int, because reason: String) {
        let slot = slots.remove(at: index)
        deaths += 1
        environment.metrics.instanceFailures.increment()
        logger.error("instance died; removing it", metadata: ["instance": "\(slot.instance.id)", "reason": "\(reason)", "in_flight": "\(slot.inFlight)"])
        terminating += 1
        environment.commands.yield(.terminate(self, slot.instance))
    }

    private func failWaiters(_ failure: GatewayFailure) {
        let failed = waiters
        waiters = []
        for waiter in failed { waiter.continuation.resume(throwing: failure) }
    }

    /// Records the queue length and the instances per state, those that changed only: this runs
    /// after every request, and most requests change none of them.
    private func publishGauges() {
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

    /// Replaces the policy and acts on it at once (e.g. starts instances up to a new minimum).
    func setPolicy(_ newPolicy: ScalingPolicy) {
        policy = newPolicy
        maintain()
    }

    /// Retires every instance (each stops after its last request); with `reverify`, the
    /// snapshot is verified again before the next launch (after `kiln bake --replace`).
    /// Returns the ids retired.
    func drain(reverify: Bool) -> [String] {
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

    /// Stops taking requests (waiting ones get 503), retires every instance, and returns once
    /// all are stopped and no launch is under way (a launch that completes now is stopped).
    func close() async {
        if !closed {
            closed = true
            failWaiters(.shuttingDown)
            for index in slots.indices { slots[index].retiring = true }
            for index in slots.indices.reversed() { stopIfDone(index) }
            settle()
        }
        if slots.isEmpty, launching == 0, terminating == 0 { return }
        await withCheckedContinuation { emptyWaiters.append($0) }
    }

    /// The pool as the admin API shows it.
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

    var currentPolicy: ScalingPolicy { policy }
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
