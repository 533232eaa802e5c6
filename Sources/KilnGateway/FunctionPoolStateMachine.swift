import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

/// The instances of one function and the requests waiting for them, as a value: every event
/// (a request, a lease given back, a launch that ended, a maintenance tick...) comes in with the
/// time it happened, changes the state, and returns the ``Effect``s it calls for. It reads no
/// clock, no /proc and takes no lock: ``FunctionPool`` holds it under its lock, feeds it events,
/// and carries the effects out once the lock is released (the shape of AsyncHTTPClient's
/// connection pool state machine). Tests drive it directly, with made-up times.
///
/// It decides which instance takes a request, when to launch or stop one, and what to do when
/// one dies or cannot be reached (see each event).
///
/// Standby copies (``ScalingPolicy/standby``) are kept apart from the instances: restored ahead
/// of demand and frozen, they take no request. When requests wait and more room is needed, a
/// standby copy is thawed (``Effect/thaw(_:)``) before any restore is launched; it joins the
/// instances once it answers (``thawed(_:now:)``), and a replacement is restored in the
/// background (``Effect/launchStandby(verifyFirst:)``), within the memory budget.
///
/// `Waiter` is what a waiting request is called back through (a closure in the gateway, a number
/// in tests); the machine only hands it back in a grant or a failure.
struct FunctionPoolStateMachine<Waiter: Sendable>: Sendable {
    let function: String
    private(set) var policy: ScalingPolicy
    let timing: PoolTiming

    /// Ordered by start: ties in load go to the oldest instance, so under light load the newest
    /// ones go idle and are the first to be stopped.
    private(set) var slots: [Slot] = []
    private(set) var launching = 0
    private(set) var terminating = 0
    private(set) var waiters: [QueuedWaiter] = []
    private var nextTicket = 0
    private(set) var preparation = Preparation.unprepared
    private(set) var launchesBlockedUntil: ContinuousClock.Instant?
    private(set) var lastLaunchFailure: String?
    private(set) var closed = false
    /// Whether ``Effect/emptied`` went out (closed, nothing left).
    private var emptied = false
    /// The gauges last published, and their number.
    private var published: PoolGauges?
    private var generation = 0
    /// The earliest ``Effect/wake(at:)`` asked for (passed once `now` reaches it).
    private var nextWake: ContinuousClock.Instant?
    /// The time of the event being handled: the latest any event brought (events from several
    /// threads may come in a little out of order; time never goes back here).
    private(set) var now: ContinuousClock.Instant
    private var effects: [Effect] = []

    /// Standby copies frozen and ready, oldest first; being restored; being thawed.
    private(set) var standbys: [StandbySlot] = []
    private(set) var standbyLaunching = 0
    private(set) var thawing = 0
    /// After a standby restore failed, no other is tried until then.
    private var standbyBlockedUntil: ContinuousClock.Instant?
    /// The memory of one standby copy as last measured (what the budget is checked against).
    private var standbyCopyBytes: Int?
    private(set) var lastThaw: Duration?
    private(set) var thaws = 0

    // Counters for the admin API.
    private(set) var launches = 0
    private(set) var coldStarts = 0
    private(set) var deaths = 0

    init(function: String, policy: ScalingPolicy, timing: PoolTiming, now: ContinuousClock.Instant) {
        self.function = function
        self.policy = policy
        self.timing = timing
        self.now = now
    }

    /// The instances in the pool: those whose process the owner checks before a ``tick(now:dead:)``.
    var instances: [GatewayInstance] { slots.map(\.instance) + standbys.map(\.instance) }

    // MARK: Requests

    /// A request asks for an instance: one with room at once if nobody waits ahead, else a place
    /// in the queue until `arrival` plus the queue timeout (a retry keeps its first arrival).
    /// `waiter` is made only when the request has to wait.
    mutating func acquire(
        arrivedAt arrival: ContinuousClock.Instant, now: ContinuousClock.Instant, waiter: @autoclosure () -> Waiter
    ) -> (PoolAcquisition, [Effect]) {
        advance(to: now)
        if closed { return (.refused(.shuttingDown), []) }
        refreshPreparation()
        if case .failed(let reason, _) = preparation { return (.refused(.snapshotUnusable(reason: reason)), []) }
        if waiters.isEmpty, let index = pickSlot() {
            return (.leased(lease(index)), [])
        }
        if let until = launchesBlockedUntil, self.now < until, usableCount == 0, launching == 0, thawing == 0, standbys.isEmpty {
            return (.refused(.launchFailed(reason: lastLaunchFailure ?? "unknown error")), [])
        }
        guard waiters.count < policy.queueLimit else { return (.refused(.queueFull(limit: policy.queueLimit)), []) }
        let ticket = nextTicket
        nextTicket += 1
        let deadline = arrival + policy.queueTimeout
        waiters.append(QueuedWaiter(ticket: ticket, deadline: deadline, waiter: waiter()))
        wake(at: deadline)
        // Room may have come back with no event (a quarantine over): those ahead take it first.
        dispatch()
        scale()
        // A standby copy just thawed is replaced in the background once the thaw is done.
        replenishStandbys()
        publishGauges()
        return (.waiting(ticket: ticket), takeEffects())
    }

    /// A waiting request leaves the queue (its client went away). False when it is no longer
    /// there: it has been granted or failed already.
    mutating func cancelWaiter(_ ticket: Int, now: ContinuousClock.Instant) -> (Bool, [Effect]) {
        advance(to: now)
        guard let index = waiters.firstIndex(where: { $0.ticket == ticket }) else { return (false, []) }
        waiters.remove(at: index)
        publishGauges()
        return (true, takeEffects())
    }

    /// A lease comes back. For an ``LeaseOutcome/unreachable(_:)`` instance, `processAlive` says
    /// whether its process is still there (the owner looks, outside its lock).
    mutating func release(_ lease: Lease, outcome: LeaseOutcome, processAlive: Bool = true, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        if let index = slots.firstIndex(where: { $0.instance.id == lease.instance.id }) {
            released(at: index, outcome: outcome, processAlive: processAlive)
        }
        settle()
        return takeEffects()
    }

    private mutating func released(at index: Int, outcome: LeaseOutcome, processAlive: Bool) {
        slots[index].inFlight -= 1
        slots[index].lastUsed = now
        // Whatever became of it, the request a thawed copy was thawed for is over: its record
        // can be written without taking CPU from it (a copy whose process is gone is stopped
        // instead, and its record removed with it).
        if slots[index].recordPending, processAlive {
            slots[index].recordPending = false
            effects.append(.recordThawed(slots[index].instance))
        }
        switch outcome {
        case .answered:
            slots[index].served += 1
            slots[index].unreachableStreak = 0
            slots[index].quarantinedUntil = nil
        case .failed, .unused:
            break
        case .unreachable(let reason):
            if !processAlive {
                remove(at: index, because: "its process is gone (\(reason))")
                return
            }
            // Alive but unreachable. Once may be a connection the service had just closed;
            // twice in a row, it gets no new requests for a while; three times, it is retired.
            let id = slots[index].instance.id
            slots[index].unreachableStreak += 1
            if slots[index].unreachableStreak >= 2 {
                slots[index].quarantinedUntil = now + timing.quarantine
                wake(at: now + timing.quarantine)
                log(.warning, "instance could not be reached twice; no new requests for now", ["instance": "\(id)", "reason": "\(reason)"])
            }
            if slots[index].unreachableStreak >= 3 {
                log(.error, "instance unreachable 3 times in a row: retiring it", ["instance": "\(id)"])
                slots[index].retiring = true
            }
        }
        stopIfDone(index)
    }

    /// The least busy instance with room, oldest first among equals.
    private func pickSlot() -> Int? {
        var best: Int?
        for index in slots.indices {
            let slot = slots[index]
            guard !slot.retiring, slot.inFlight < policy.concurrency else { continue }
            if let until = slot.quarantinedUntil, now < until { continue }
            if best == nil || slot.inFlight < slots[best!].inFlight { best = index }
        }
        return best
    }

    /// A lease on slot `index`; a waiting request that is the first given to an instance was
    /// answered by that instance's start (restore, thaw or cold start), any other by a running one.
    private mutating func lease(_ index: Int, forWaiter: Bool = false) -> Lease {
        slots[index].inFlight += 1
        defer { slots[index].granted = true }
        let servedBy = forWaiter && !slots[index].granted ? ServedBy(slots[index].instance.origin) : .running
        return Lease(instance: slots[index].instance, servedBy: servedBy)
    }

    /// Hands waiting requests to instances with room, in arrival order.
    private mutating func dispatch() {
        while !waiters.isEmpty, let index = pickSlot() {
            let waiter = waiters.removeFirst()
            effects.append(.grant(waiter.waiter, lease(index, forWaiter: true)))
        }
    }

    private var usableCount: Int { slots.count { !$0.retiring } }

    // MARK: Scaling

    /// Launches what demand and the minimum call for.
    ///
    /// - Until the snapshot is verified, and while no instance runs, at most one launch runs:
    ///   concurrent first requests share one restore, and a snapshot is verified once, by the
    ///   first launch after it was (re)marked unverified.
    /// - Otherwise another instance is launched while more requests wait than the room left in
    ///   running instances plus the room that the launches under way will bring.
    /// - A standby copy, when there is one, stands in for a launch: it is thawed instead (also
    ///   while launches pause after a failure).
    private mutating func scale() {
        guard !closed else { return }
        // Runs after every request that waits or ends: counted in place, without building arrays.
        var usable = 0
        var spare = 0
        for slot in slots where !slot.retiring {
            usable += 1
            // A quarantined instance's room is not to be counted on.
            if let until = slot.quarantinedUntil, now < until { continue }
            spare += max(0, policy.concurrency - slot.inFlight)
        }
        let starting = launching + thawing
        if waiters.isEmpty, usable + starting >= policy.minInstances { return }
        let blocked = launchesBlockedUntil.map { now < $0 } ?? false
        if blocked, standbys.isEmpty { return }
        refreshPreparation()
        if case .failed = preparation { return }
        // Thaws need no verification and share no restore: each standby copy may come at once.
        let limit = preparation == .prepared && usable > 0 ? policy.maxInstances : min(policy.maxInstances, usable + 1 + thawing + standbys.count)
        var wanted = 0
        while usable + starting + wanted < limit {
            // While launches pause, only the standby copies there are can come.
            if blocked, wanted >= standbys.count { break }
            let coming = (starting + wanted) * policy.concurrency
            let belowMinimum = usable + starting + wanted < policy.minInstances
            guard waiters.count > spare + coming || belowMinimum else { break }
            wanted += 1
        }
        for _ in 0..<wanted {
            if !standbys.isEmpty {
                let standby = standbys.removeFirst()
                thawing += 1
                effects.append(.thaw(standby.instance))
                continue
            }
            launching += 1
            let verify = preparation == .unprepared
            if verify { preparation = .preparing }
            effects.append(.launch(verifyFirst: verify))
        }
    }

    /// Restores standby copies up to the policy's number and within its memory budget, once the
    /// snapshot is verified (or verifying it first, when nothing else has), in the background.
    private mutating func replenishStandbys() {
        guard !closed, policy.standby > 0 else { return }
        // Not beside a thaw: a restore takes the CPU the thawing copy and the request it is for
        // need (on 2 cores, a first request at zero took 20-24 ms beside a replacement's
        // restore, the thaw itself 8-10 ms). The thaw's end (thawed, thawFailed) comes back here.
        if thawing > 0 { return }
        // Nor beside the first request a thawed copy answers: that request is what the thaw was
        // for (a replacement's restore beside it took a first request at zero from ~10 to ~17 ms).
        // Its answer (release) or failure comes back here; a request times out at the latest.
        if slots.contains(where: { $0.instance.origin == .thawed && $0.served == 0 && $0.inFlight > 0 }) { return }
        if let until = standbyBlockedUntil, now < until { return }
        refreshPreparation()
        if case .failed = preparation { return }
        if preparation == .preparing { return }
        while standbys.count + standbyLaunching < policy.standby {
            if let budget = policy.standbyMemoryBytes, let perCopy = standbyCopyBytes, (standbys.count + standbyLaunching + 1) * perCopy > budget {
                break
            }
            standbyLaunching += 1
            let verify = preparation == .unprepared
            if verify { preparation = .preparing }
            effects.append(.launchStandby(verifyFirst: verify))
            if verify { break }
        }
    }

    /// Stops the standby copies beyond the policy's number or its memory budget (newest first).
    private mutating func trimStandbys() {
        var held = standbys.reduce(0) { $0 + ($1.memoryBytes ?? 0) }
        while let last = standbys.last,
            standbys.count > policy.standby || (policy.standbyMemoryBytes.map { held > $0 } ?? false)
        {
            standbys.removeLast()
            held -= last.memoryBytes ?? 0
            terminating += 1
            effects.append(.stop(last.instance))
        }
    }

    /// Stops every standby copy (the pool closes, or its snapshot is replaced).
    private mutating func stopStandbys() {
        for standby in standbys {
            terminating += 1
            effects.append(.stop(standby.instance))
        }
        standbys = []
    }

    // MARK: Standby copies

    /// A standby copy is restored and frozen: it waits for a request (stopped at once if the pool
    /// closed or no longer wants it).
    mutating func standbyLaunched(_ report: StandbyReport, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        standbyLaunching -= 1
        standbyBlockedUntil = nil
        effects.append(.metric(.standbyRestored(report.duration)))
        if let bytes = report.memoryBytes { standbyCopyBytes = bytes }
        let held = standbys.reduce(report.memoryBytes ?? 0) { $0 + ($1.memoryBytes ?? 0) }
        if closed || standbys.count >= policy.standby || policy.standbyMemoryBytes.map({ held > $0 }) ?? false {
            terminating += 1
            effects.append(.stop(report.instance))
        } else {
            standbys.append(StandbySlot(instance: report.instance, readyAt: self.now, memoryBytes: report.memoryBytes))
            log(.info, "standby copy ready", ["instance": "\(report.instance.id)", "restore_ms": "\(Int(report.duration.milliseconds))"])
        }
        settle()
        return takeEffects()
    }

    /// No standby copy could be restored: the next try waits for ``PoolTiming/launchFailureBackoff``.
    mutating func standbyLaunchFailed(_ error: any Error, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        standbyLaunching -= 1
        standbyBlockedUntil = self.now + timing.launchFailureBackoff
        wake(at: self.now + timing.launchFailureBackoff)
        effects.append(.metric(.standbyRestoreFailed))
        log(.error, "could not restore a standby copy", ["error": "\(error)"])
        settle()
        return takeEffects()
    }

    /// A thawed standby copy answers: it is an instance now, and takes the waiting requests.
    mutating func thawed(_ report: LaunchReport, duration: Duration, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        thawing -= 1
        thaws += 1
        lastThaw = duration
        effects.append(.metric(.thawSucceeded(duration)))
        log(.info, "standby copy thawed", ["instance": "\(report.instance.id)", "thaw_ms": "\(String(format: "%.1f", duration.milliseconds))"])
        var instance = report.instance
        instance.origin = .thawed
        slots.append(Slot(instance: instance, startedAt: self.now, lastUsed: self.now, retiring: closed, recordPending: true))
        stopIfDone(slots.count - 1)
        settle()
        return takeEffects()
    }

    /// A thaw failed (the copy is gone): the requests it was for are served by what comes next
    /// (another standby copy, or a restore).
    mutating func thawFailed(_ instance: GatewayInstance, error: any Error, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        thawing -= 1
        effects.append(.metric(.thawFailed))
        log(.error, "could not thaw a standby copy", ["instance": "\(instance.id)", "error": "\(error)"])
        settle()
        return takeEffects()
    }

    /// A snapshot that failed verification is verified again once the retry interval is over.
    private mutating func refreshPreparation() {
        if case .failed(_, let at) = preparation, now >= at + timing.verificationRetry { preparation = .unprepared }
    }

    // MARK: Launches

    /// The snapshot passed verification.
    mutating func prepared(now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        preparation = .prepared
        settle()
        return takeEffects()
    }

    /// The snapshot failed verification: the launch is off, waiting requests get 503, and
    /// requests get 503 at once until ``PoolTiming/verificationRetry`` is over.
    /// `forStandby`: the verification was the first step of a standby copy's restore.
    mutating func preparationFailed(_ error: any Error, forStandby: Bool = false, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        if forStandby { standbyLaunching -= 1 } else { launching -= 1 }
        let reason = "snapshot '\(function)' cannot be used: \(error)"
        preparation = .failed(reason: reason, at: self.now)
        effects.append(.metric(.verificationFailed))
        log(.error, "snapshot failed verification; not using it", ["error": "\(error)"])
        failWaiters(.snapshotUnusable(reason: reason))
        settle()
        return takeEffects()
    }

    /// An instance is up: it joins the pool (and is stopped at once if the pool closed meanwhile).
    mutating func launched(_ report: LaunchReport, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        launching -= 1
        launches += 1
        var metadata: Logger.Metadata = ["instance": "\(report.instance.id)", "pid": "\(report.instance.pid)"]
        if let duration = report.restoreDuration {
            effects.append(.metric(.restoreSucceeded(duration)))
            metadata["restore_ms"] = "\(Int(duration.milliseconds))"
        }
        if let failure = report.restoreFailure {
            coldStarts += 1
            effects.append(.metric(.restoreFailed))
            effects.append(.metric(.coldStartSucceeded(report.coldStartDuration)))
            if let duration = report.coldStartDuration { metadata["cold_start_ms"] = "\(Int(duration.milliseconds))" }
            metadata["restore_error"] = "\(failure)"
            log(.warning, "restore failed; fell back to a cold start of the function's command", metadata)
        } else {
            log(.info, "instance up", metadata)
        }
        slots.append(Slot(instance: report.instance, startedAt: self.now, lastUsed: self.now, retiring: closed))
        launchesBlockedUntil = nil
        stopIfDone(slots.count - 1)
        settle()
        return takeEffects()
    }

    /// No instance could be started: launches pause for ``PoolTiming/launchFailureBackoff``, and
    /// with no instance left to wait for, the waiting requests get 503.
    mutating func launchFailed(_ error: any Error, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        launching -= 1
        effects.append(.metric(.restoreFailed))
        if let failure = error as? LaunchFailure, failure.coldStartError != nil { effects.append(.metric(.coldStartFailed)) }
        lastLaunchFailure = "\(error)"
        launchesBlockedUntil = self.now + timing.launchFailureBackoff
        log(.error, "could not start an instance", ["error": "\(error)"])
        if usableCount == 0, launching == 0 { failWaiters(.launchFailed(reason: "\(error)")) }
        settle()
        return takeEffects()
    }

    /// An instance asked for by ``Effect/stop(_:)`` is gone.
    mutating func terminated(_ instance: GatewayInstance, now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        terminating -= 1
        log(.info, "instance stopped", ["instance": "\(instance.id)"])
        settle()
        return takeEffects()
    }

    // MARK: Admin

    /// A new policy, acted on at once (e.g. instances started up to a new minimum).
    mutating func setPolicy(_ policy: ScalingPolicy, now: ContinuousClock.Instant) -> [Effect] {
        self.policy = policy
        return tick(now: now)
    }

    /// Retires every instance (each stops after its last request); with `reverify`, the
    /// snapshot is verified again before the next launch. Returns the ids retired.
    mutating func drain(reverify: Bool, now: ContinuousClock.Instant) -> ([String], [Effect]) {
        advance(to: now)
        var retired: [String] = []
        for index in slots.indices where !slots[index].retiring {
            slots[index].retiring = true
            retired.append(slots[index].instance.id)
        }
        if reverify, preparation != .preparing { preparation = .unprepared }
        // Copies of the snapshot being replaced must not be thawed later.
        stopStandbys()
        launchesBlockedUntil = nil
        for index in slots.indices.reversed() { stopIfDone(index) }
        settle()
        return (retired, takeEffects())
    }

    /// Takes no more requests (waiting ones get 503) and retires every instance; a launch that
    /// completes from now on is stopped. ``Effect/emptied`` comes once nothing is left, and
    /// again for every later call.
    mutating func close(now: ContinuousClock.Instant) -> [Effect] {
        advance(to: now)
        if !closed {
            closed = true
            failWaiters(.shuttingDown)
            stopStandbys()
            for index in slots.indices { slots[index].retiring = true }
            for index in slots.indices.reversed() { stopIfDone(index) }
        } else if emptied {
            effects.append(.emptied)
        }
        settle()
        return takeEffects()
    }

    // MARK: Maintenance

    /// The periodic tick, or a ``Effect/wake(at:)``: waits past their deadline fail, the
    /// instances in `dead` (whose processes the owner found gone) are forgotten and replaced as
    /// needed, idle instances past keep-alive above the minimum (or above a lowered maximum) are
    /// stopped, newest first, and the next wake is asked for.
    mutating func tick(now: ContinuousClock.Instant, dead: Set<String> = []) -> [Effect] {
        advance(to: now)
        var index = 0
        while index < waiters.count {
            if waiters[index].deadline <= self.now {
                let waiter = waiters.remove(at: index)
                effects.append(.fail(waiter.waiter, .queueTimeout(seconds: policy.queueTimeoutSeconds)))
            } else {
                index += 1
            }
        }
        if !dead.isEmpty {
            for index in slots.indices.reversed() where dead.contains(slots[index].instance.id) {
                remove(at: index, because: "its process is gone")
            }
            for index in standbys.indices.reversed() where dead.contains(standbys[index].instance.id) {
                let standby = standbys.remove(at: index)
                deaths += 1
                effects.append(.metric(.instanceDied))
                log(.error, "standby copy died; removing it", ["instance": "\(standby.instance.id)"])
                terminating += 1
                effects.append(.stop(standby.instance))
            }
        }
        trimStandbys()
        var active = usableCount
        for index in slots.indices.reversed() where !slots[index].retiring && slots[index].inFlight == 0 && waiters.isEmpty {
            let idleFor = slots[index].lastUsed.duration(to: self.now)
            if (active > policy.minInstances && idleFor >= policy.keepAlive) || active > policy.maxInstances {
                log(.info, "stopping idle instance", ["instance": "\(slots[index].instance.id)", "idle_s": "\(Int(idleFor.milliseconds / 1000))"])
                slots[index].retiring = true
                active -= 1
            }
        }
        for index in slots.indices.reversed() { stopIfDone(index) }
        settle()
        if let deadline = waiters.lazy.map(\.deadline).min() { wake(at: deadline) }
        if !waiters.isEmpty {
            for slot in slots { if let until = slot.quarantinedUntil, until > self.now { wake(at: until) } }
        }
        return takeEffects()
    }

    /// Asks for a ``tick(now:dead:)`` at `instant`, unless one is due by then already.
    private mutating func wake(at instant: ContinuousClock.Instant) {
        if let pending = nextWake, pending > now, pending <= instant { return }
        nextWake = instant
        effects.append(.wake(at: instant))
    }

    /// After any change: hand out room, launch what is needed, publish the gauges, and say when
    /// a closed pool has emptied.
    private mutating func settle() {
        dispatch()
        scale()
        replenishStandbys()
        publishGauges()
        if closed, !emptied, slots.isEmpty, launching == 0, terminating == 0, standbys.isEmpty, standbyLaunching == 0, thawing == 0 {
            emptied = true
            effects.append(.emptied)
        }
    }

    /// Stops a retiring instance once its last request is over.
    private mutating func stopIfDone(_ index: Int) {
        guard slots[index].retiring, slots[index].inFlight == 0 else { return }
        let slot = slots.remove(at: index)
        terminating += 1
        effects.append(.stop(slot.instance))
    }

    /// Forgets an instance whose process died, and has it cleaned up. Requests still on it fail
    /// by themselves; their release finds no slot.
    private mutating func remove(at index: Int, because reason: String) {
        let slot = slots.remove(at: index)
        deaths += 1
        effects.append(.metric(.instanceDied))
        log(.error, "instance died; removing it", ["instance": "\(slot.instance.id)", "reason": "\(reason)", "in_flight": "\(slot.inFlight)"])
        terminating += 1
        effects.append(.stop(slot.instance))
    }

    private mutating func failWaiters(_ failure: GatewayFailure) {
        for waiter in waiters { effects.append(.fail(waiter.waiter, failure)) }
        waiters = []
    }

    /// The queue length and the instances per state, when they changed (this runs after every
    /// request, and most requests change none of them).
    private mutating func publishGauges() {
        var counts = PoolGauges(queue: waiters.count, starting: launching, stopping: terminating)
        for slot in slots { counts[slot.state(at: now)] += 1 }
        counts.standby = standbys.count
        counts.standbyStarting = standbyLaunching
        counts.thawing = thawing
        counts.standbyBytes = standbys.reduce(0) { $0 + ($1.memoryBytes ?? 0) }
        guard counts != published else { return }
        published = counts
        generation += 1
        effects.append(.gauges(counts, generation: generation))
    }

    private mutating func log(_ level: Logger.Level, _ message: Logger.Message, _ metadata: Logger.Metadata) {
        effects.append(.log(level, message, metadata))
    }

    private mutating func advance(to instant: ContinuousClock.Instant) {
        if instant > now { now = instant }
    }

    private mutating func takeEffects() -> [Effect] {
        var taken: [Effect] = []
        swap(&taken, &effects)
        return taken
    }
}
