import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// The files of kiln's side of the CRaC agent protocol (agent/PROTOCOL.md).
package enum AgentFile {
    package static let ready = "agent.ready"
    package static let checkpointRequest = "checkpoint.request"
    package static let checkpointAppRequest = "checkpoint.app-request"
    package static let checkpointReady = "checkpoint.ready"
    package static let checkpointFailed = "checkpoint.failed"
    package static let restoreRequest = "restore.request"
    package static let restoreDone = "restore.done"
    package static let restoreFailed = "restore.failed"
    package static let trimRequest = "trim.request"
    package static let trimDone = "trim.done"

    /// `key=value` lines (unknown keys kept, blank and `#` lines skipped).
    package static func properties(_ text: String) -> [String: String] {
        var map: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let line = line.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#"), let equals = line.firstIndex(of: "="), equals != line.startIndex else { continue }
            map[line[..<equals].trimmingCharacters(in: .whitespaces)] = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        }
        return map
    }

    /// A `*.failed` report (`{"phase", "exception", "errors": [{"class", "message", "stack"}]}`) as
    /// a one-line summary and detail lines (each error's class and message, then its stack).
    package static func failure(_ text: String) -> (summary: String, details: [String]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            return ("the agent's report is not JSON", text.split(separator: "\n").prefix(20).map(String.init))
        }
        let exception = object["exception"] as? String ?? "an exception"
        let errors = object["errors"] as? [[String: Any]] ?? []
        let named = errors.map { error -> String in
            let name = error["class"] as? String ?? "?"
            let message = error["message"] as? String
            return message.map { "\(name): \($0)" } ?? name
        }
        var details: [String] = []
        for error in errors {
            let stack = (error["stack"] as? String ?? "").split(separator: "\n").map { $0.replacingOccurrences(of: "\t", with: "    ") }
            details += stack.prefix(12)
        }
        let summary = named.isEmpty ? exception : "\(exception) with \(named.joined(separator: "; "))"
        return (summary, details)
    }
}

/// What the agent reported for a checkpoint.
package struct AgentCheckpoint: Sendable, Equatable {
    /// The JVM's pid inside the sandbox (from `agent.ready`).
    package var namespacePid: Int32
    /// How many resources the global context held.
    package var resources: Int?
    /// From the request (or, with `onRequest`, from `checkpoint.app-request`) to `checkpoint.ready`.
    package var elapsedMs: Double
}

/// What the agent reported for a restore.
package struct AgentRestore: Sendable, Equatable {
    /// From writing `restore.request` to reading `restore.done`, as kiln saw it.
    package var elapsedMs: Double
    /// The `identity_us` (from the agent's wake-up to its identity refreshed) and `elapsed_us`
    /// (from its wake-up to `restore.done`) the agent measured, in ms.
    package var identityMs: Double?
    package var agentMs: Double?
    /// When the agent woke (`signal_ns`: the JVM's CLOCK_MONOTONIC, in its time namespace) and
    /// when kiln woke it (the host's CLOCK_MONOTONIC; a byte into the wake FIFO, or the signal), in ns.
    package var handledNanos: Int64?
    package var signalledNanos: Int64

    /// How long the JVM took from kiln's wake to the agent's wake-up (ms), given the JVM's clock
    /// offset (``ProcessInspector/monotonicOffsetNanos(of:)``).
    package func deliveryMs(clockOffsetNanos offset: Int64?) -> Double? {
        guard let handledNanos, let offset else { return nil }
        return Double(handledNanos - offset - signalledNanos) / 1e6
    }
    /// `warning.N` lines (e.g. the kernel's hostname is not the one asked for).
    package var warnings: [String]
    /// The copy's agent answers `trim.request` (`trim=1`; agents older than it do not say).
    package var answersTrim: Bool = false
}

/// What the agent reported for a native heap trim (`trim.done`).
package struct NativeHeapTrim: Sendable, Equatable {
    /// The JVM's own line, e.g. `Trim native heap: RSS+Swap: 129M->124M (-4656K)`.
    package var report: String
    /// From writing `trim.request` to reading `trim.done`, as kiln saw it.
    package var elapsedMs: Double

    /// What the trim gave back, in bytes, from the report's change in parentheses (HotSpot prints
    /// a whole number and a unit, B, K, M or G); nil when the report has none.
    package var returnedBytes: Int64? {
        guard let open = report.lastIndex(of: "("), let close = report.lastIndex(of: ")"), open < close else { return nil }
        var change = report[report.index(after: open)..<close].trimmingCharacters(in: .whitespaces)
        guard let sign = change.first, sign == "-" || sign == "+" else { return nil }
        change.removeFirst()
        let digits = change.prefix { $0.isASCII && $0.isNumber }
        let units: [String: Int64] = ["B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        guard let value = Int64(digits), let unit = units[String(change.dropFirst(digits.count))] else { return nil }
        return sign == "-" ? value * unit : -value * unit
    }
}

extension SandboxLifecycle {
    /// The agent's control directory on the host (bound at ``CRaCAgent/controlInSandbox``).
    package var agentDirectory: String { instance.agentDirectory ?? "\(directory)/agent" }

    /// Whether a JVM's agent has started in the sandbox (`agent.ready` is there).
    package var agentStarted: Bool { FileManager.default.fileExists(atPath: "\(agentDirectory)/\(AgentFile.ready)") }

    /// Waits until the JVM's agent has started (`agent.ready`), then returns the JVM's pid inside
    /// the sandbox.
    package func waitForAgent(timeout: Duration, interval: Duration = .milliseconds(5)) async throws -> Int32 {
        let text = try await awaitFile(
            [AgentFile.ready], step: .beforeCheckpoint, timeout: timeout, interval: interval,
            missing: "kiln's CRaC agent did not start in the service's JVM (no \(AgentFile.ready) in \(agentDirectory))",
            hint: "the service must run a JVM (JAVA_TOOL_OPTIONS carries -javaagent); bake a service that is no JVM with --no-agent"
        ).text
        guard let pid = AgentFile.properties(text)["pid"].flatMap({ Int32($0) }) else {
            throw KilnError(.checkpointFailed, "the agent's \(AgentFile.ready) names no pid: \(text.prefix(200))").during(action(.beforeCheckpoint))
        }
        return pid
    }

    /// The `beforeCheckpoint` step: asks the JVM's agent to run every resource's
    /// `beforeCheckpoint` (or, with `onRequest`, waits for the application's own
    /// `Core.checkpointRestore()`), and returns once the process may be dumped. A failing
    /// resource fails the step with its exception; the agent has then run `afterRestore` in the
    /// process already (PROTOCOL.md), so nothing more is asked of it.
    package func beforeCheckpoint(onRequest: Bool, timeout: Duration, interval: Duration = .milliseconds(5)) async throws -> AgentCheckpoint {
        guard let container else { throw notRunning(.beforeCheckpoint) }
        let pid = try await waitForAgent(timeout: timeout, interval: interval)
        let start: ContinuousClock.Instant
        if onRequest {
            _ = try await awaitFile(
                [AgentFile.checkpointAppRequest], step: .beforeCheckpoint, timeout: timeout, interval: interval, watching: container.pid,
                missing: "the application did not ask for a checkpoint (no \(AgentFile.checkpointAppRequest)) within \(timeout.seconds) s",
                hint:
                    "with --on-request the application calls org.crac.Core.checkpointRestore() (Spring: -Dspring.context.checkpoint=onRefresh); or allow more time with --ready-timeout"
            )
            start = .now
        } else {
            remove(AgentFile.checkpointReady)
            remove(AgentFile.checkpointFailed)
            try writeFile(AgentFile.checkpointRequest, "", step: .beforeCheckpoint)
            start = .now
            try wake(pid, step: .beforeCheckpoint)
        }
        let (name, text) = try await awaitFile(
            [AgentFile.checkpointReady, AgentFile.checkpointFailed], step: .beforeCheckpoint, timeout: timeout, interval: interval,
            watching: container.pid,
            missing: "the service's CRaC beforeCheckpoint did not finish within \(timeout.seconds) s",
            hint: "a resource's beforeCheckpoint blocks; see the service's output, or allow more time with --ready-timeout")
        if name == AgentFile.checkpointFailed {
            let failure = AgentFile.failure(text)
            throw KilnError(
                .checkpointFailed,
                "the service's CRaC beforeCheckpoint failed: \(failure.summary); nothing was dumped (afterRestore ran in the service)",
                hint: "fix the resource's beforeCheckpoint (its stack is below), or bake with --no-agent to checkpoint without the callbacks",
                details: failure.details, logPath: logPath
            ).during(action(.beforeCheckpoint))
        }
        let fields = AgentFile.properties(text)
        return AgentCheckpoint(
            namespacePid: pid, resources: fields["resources"].flatMap { Int($0) }, elapsedMs: start.duration(to: .now).milliseconds)
    }

    /// The `afterRestore` step of a restored copy (or of the original whose dump failed, with
    /// `checkpointError`): tells the agent in JVM `namespacePid` who the copy is and waits until
    /// every resource's `afterRestore` ran. `restore.failed` fails the step with the exception.
    package func afterRestore(
        namespacePid: Int32, instance id: String, hostname: String, checkpointError: String? = nil, timeout: Duration,
        interval: Duration = .milliseconds(1)
    ) async throws -> AgentRestore {
        guard let container else { throw notRunning(.afterRestore) }
        remove(AgentFile.restoreDone)
        remove(AgentFile.restoreFailed)
        var request = "instance=\(id)\nhostname=\(hostname)\n"
        if let checkpointError {
            request += "checkpoint.error=\(checkpointError.replacingOccurrences(of: "\n", with: " ").prefix(500))\n"
        }
        try writeFile(AgentFile.restoreRequest, request, step: .afterRestore)
        let start = ContinuousClock.now
        var signalled = timespec()
        clock_gettime(CLOCK_MONOTONIC, &signalled)
        try wake(namespacePid, step: .afterRestore)
        let (name, text) = try await awaitFile(
            [AgentFile.restoreDone, AgentFile.restoreFailed], step: .afterRestore, timeout: timeout, interval: interval, watching: container.pid,
            missing: "the service's CRaC afterRestore did not finish within \(timeout.seconds) s",
            hint: "a resource's afterRestore blocks; see the service's output")
        let elapsed = start.duration(to: .now).milliseconds
        if name == AgentFile.restoreFailed {
            let failure = AgentFile.failure(text)
            throw KilnError(
                .restoreFailed, "the copy's CRaC afterRestore failed: \(failure.summary)",
                hint: "fix the resource's afterRestore (its stack is below); the copy was removed",
                details: failure.details, logPath: logPath
            ).during(action(.afterRestore))
        }
        let fields = AgentFile.properties(text)
        let warnings = fields.filter { $0.key.hasPrefix("warning.") }.sorted { $0.key < $1.key }.map(\.value)
        return AgentRestore(
            elapsedMs: elapsed, identityMs: fields["identity_us"].flatMap { Double($0) }.map { $0 / 1000 },
            agentMs: fields["elapsed_us"].flatMap { Double($0) }.map { $0 / 1000 },
            handledNanos: fields["signal_ns"].flatMap { Int64($0) },
            signalledNanos: Int64(signalled.tv_sec) * 1_000_000_000 + Int64(signalled.tv_nsec),
            warnings: warnings, answersTrim: fields["trim"] == "1")
    }

    /// Asks the agent in JVM `namespacePid` to give the JVM's free malloc memory back to the
    /// kernel (`trim.request`, answered with `trim.done`; see the agent's `NativeHeap`). Only for
    /// a copy whose ``AgentRestore/answersTrim`` said so.
    package func trimNativeHeap(namespacePid: Int32, timeout: Duration, interval: Duration = .milliseconds(1)) async throws -> NativeHeapTrim {
        guard let container else { throw notRunning(.trimNativeHeap) }
        remove(AgentFile.trimDone)
        try writeFile(AgentFile.trimRequest, "", step: .trimNativeHeap)
        let start = ContinuousClock.now
        try wake(namespacePid, step: .trimNativeHeap)
        let text: String
        do {
            text = try await awaitFile(
                [AgentFile.trimDone], step: .trimNativeHeap, timeout: timeout, interval: interval, watching: container.pid,
                missing: "the JVM's agent did not answer \(AgentFile.trimRequest) within \(timeout.seconds) s",
                hint: "see the service's output; the copy is frozen untrimmed"
            ).text
        } catch {
            // Not left for the agent's next wake, whenever that comes.
            remove(AgentFile.trimRequest)
            throw error
        }
        let elapsed = start.duration(to: .now).milliseconds
        remove(AgentFile.trimDone)
        let fields = AgentFile.properties(text)
        if let error = fields["error"] {
            throw KilnError(
                .runtimeFailed, "the JVM could not trim its native heap: \(error)", hint: "the copy is frozen untrimmed", logPath: logPath
            ).during(action(.trimNativeHeap))
        }
        return NativeHeapTrim(report: fields["result"] ?? "", elapsedMs: elapsed)
    }

    // MARK: - The control directory

    private func remove(_ name: String) {
        unlink("\(agentDirectory)/\(name)")
    }

    /// Written whole under a hidden name and renamed into place, as the protocol asks.
    private func writeFile(_ name: String, _ content: String, step: Step) throws {
        let temporary = "\(agentDirectory)/.\(name).tmp-\(getpid())"
        do {
            try RuntimeFile.write(content, to: temporary)
            guard rename(temporary, "\(agentDirectory)/\(name)") == 0 else { throw KilnError.systemCall("rename", errno: errno, name) }
        } catch {
            unlink(temporary)
            throw KilnError.wrapping(error, as: .systemCall, "could not write \(name) in \(agentDirectory): \(error)").during(action(step))
        }
    }

    private func wake(_ namespacePid: Int32, step: Step) throws {
        guard let container else { throw notRunning(step) }
        do {
            try host.wakeAgent(
                namespacePid: namespacePid, inCgroup: instance.cgroupPath, containerPid: container.pid,
                wakeFIFO: "\(agentDirectory)/\(CRaCAgent.wakeName)")
        } catch {
            throw KilnError.wrapping(error, as: .runtimeFailed).during(action(step))
        }
    }

    /// Waits until one of `names` exists and returns it; a timeout, or the container's process
    /// `watching` dying, is an error with the service's last output. Woken by inotify when a
    /// file arrives (the agent renames its results into place), else every `interval`: a poll
    /// every millisecond cost up to a millisecond per wait, and a tighter one took CPU from the
    /// copy it waited for.
    private func awaitFile(
        _ names: [String], step: Step, timeout: Duration, interval: Duration, watching pid: Int32? = nil, missing: @autoclosure () -> String,
        hint: String
    ) async throws -> (name: String, text: String) {
        let deadline = ContinuousClock.now + timeout
        // Before the first look: whatever arrives after it is reported.
        let arrivals = DirectoryArrivals(watching: agentDirectory)
        while true {
            try Task.checkCancellation()
            for name in names {
                if let data = FileManager.default.contents(atPath: "\(agentDirectory)/\(name)") {
                    return (name, String(decoding: data, as: UTF8.self))
                }
            }
            let died = pid.map { !ProcessInspector.isAlive($0) && !host.isFake } ?? false
            if died || ContinuousClock.now >= deadline {
                throw KilnError(
                    step == .afterRestore || step == .trimNativeHeap ? .restoreFailed : .checkpointFailed,
                    died ? "the service exited while kiln waited for \(names.joined(separator: " or "))" : missing(),
                    hint: hint, details: ProcessInspector.lastLines(ofFile: logPath, count: 15), logPath: logPath
                ).during(action(step))
            }
            if let arrivals {
                // Wakes at an arrival; every 20 ms regardless, to notice a dead service or the deadline.
                _ = await arrivals.next(timeout: min(.milliseconds(20), deadline - ContinuousClock.now))
            } else {
                try await Task.sleep(for: interval)
            }
        }
    }
}

extension SandboxHost {
    /// Fake hosts (tests) have no real processes to watch.
    var isFake: Bool { !(self is LinuxSandboxHost) }
}

extension Duration {
    /// Seconds, for messages: "30" for whole seconds, "0.2" for a shorter wait (never "0").
    var seconds: String { String(format: "%g", milliseconds / 1000) }
}

extension SandboxLifecycle {
    /// Waits until the sandbox's TCP sockets (inode and state) have not changed for `quiet`, or
    /// `limit` has passed; returns whether they settled. A pool resumed by an afterRestore
    /// refills on its own threads (HikariCP): a connection still being opened when the next
    /// beforeCheckpoint suspends the pool is added after it, open at the dump.
    package func settleSockets(quiet: Duration, limit: Duration, interval: Duration = .milliseconds(50)) async throws -> Bool {
        guard let container else { throw notRunning(.beforeCheckpoint) }
        func sockets() -> Set<String> {
            let snapshot = host.preflightSnapshot(ofCgroup: instance.cgroupPath, containerPid: container.pid)
            return Set(CheckpointPreflight.parseInet(snapshot.tcp).map { "\($0.key) \($0.value.state)" })
        }
        let deadline = ContinuousClock.now + limit
        var seen = sockets()
        var since = ContinuousClock.now
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: interval)
            let now = sockets()
            if now != seen {
                seen = now
                since = .now
            } else if since.duration(to: .now) >= quiet {
                return true
            }
        }
        return false
    }

    /// The preflight step: what the sandbox's processes hold that would break restored copies.
    /// `serviceNamespacePid` is the JVM whose agent answered (nil: the container's first process).
    package func preflight(servicePort: Int, serviceNamespacePid: Int32?) throws -> [CheckpointPreflight.Finding] {
        guard let container else { throw notRunning(.preflight) }
        let snapshot = host.preflightSnapshot(ofCgroup: instance.cgroupPath, containerPid: container.pid)
        let service = serviceNamespacePid.flatMap { pid in snapshot.processes.first { $0.namespacePid == pid }?.pid } ?? container.pid
        let findings = CheckpointPreflight.analyze(snapshot, servicePort: servicePort, servicePid: service)
        // Written by the agent at checkpoint.ready when it recorded I/O stacks (--preflight).
        guard let data = FileManager.default.contents(atPath: "\(agentDirectory)/\(CheckpointPreflight.IOStacks.fileName)"),
            let stacks = CheckpointPreflight.IOStacks(json: String(decoding: data, as: UTF8.self))
        else { return findings }
        return CheckpointPreflight.attach(stacks, to: findings)
    }
}
