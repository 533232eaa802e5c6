import Foundation
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What kiln holds on the host at one moment: the counts a leak would make grow.
public struct HostResources: Codable, Sendable, Equatable {
    /// Live processes in kiln's cgroups.
    public var processes = 0
    /// Containers runc knows.
    public var containers = 0
    public var networkNamespacePins = 0
    /// Container cgroups (directories under kiln's cgroup parent, over every controller).
    public var cgroups = 0
    /// Mounts under kiln's state directory, in kiln's mount namespace.
    public var mounts = 0
    public var instanceDirectories = 0
    /// Unreaped children of this process.
    public var zombies = 0
    /// This process's open file descriptors.
    public var openFileDescriptors = 0
    /// This process's resident memory.
    public var residentBytes: Int64 = 0

    /// The counts that must come back to where they were (descriptors and memory may move a
    /// little as caches and pools warm up; they are reported, not judged).
    public func leaks(since start: HostResources) -> [String] {
        [
            ("processes", processes, start.processes), ("containers", containers, start.containers),
            ("network namespace pins", networkNamespacePins, start.networkNamespacePins), ("cgroups", cgroups, start.cgroups),
            ("mounts", mounts, start.mounts), ("instance directories", instanceDirectories, start.instanceDirectories),
            ("zombies", zombies, start.zombies),
        ]
        .filter { $0.1 > $0.2 }.map { "\($0.0): \($0.2) -> \($0.1)" }
    }
}

/// `kiln bench soak`: many restore/stop cycles, then a long gateway load while instances are
/// killed at random, with the host's resources counted before, between and after.
public struct SoakReport: Codable, Sendable {
    public struct Cycles: Codable, Sendable {
        public var count: Int
        public var failures: Int
        /// The first few failures, as kiln reported them.
        public var errors: [String]
        public var seconds: Double
        /// `restoreOne` to first readiness 2xx, per cycle.
        public var firstResponse: SampleSummary
    }

    public struct Load: Codable, Sendable {
        public var seconds: Double
        public var connections: Int
        public var requests: Int
        public var ok: Int
        /// Failed requests the gateway had sent to an instance that was then killed (lost with
        /// it: the gateway does not resend a request an instance may have acted on).
        public var failedInFlightToKilled: Int
        /// Every other failed request (target: zero).
        public var failedOther: Int
        /// A few of those, for the report.
        public var otherErrors: [String]
        public var kills: Int
        /// Instances the gateway restored (initial ones and replacements).
        public var launches: Int
        public var coldStartFallbacks: Int
    }

    public var snapshot: String
    public var cycles: Cycles
    public var load: Load
    public var atStart: HostResources
    public var afterCycles: HostResources
    public var atEnd: HostResources
    /// What grew and did not come back (target: nothing).
    public var leaks: [String]
}

extension Kiln {
    /// Counts what kiln holds on the host now.
    public func hostResources() async -> HostResources {
        var resources = HostResources()
        resources.containers = ((try? await runtime.list()) ?? []).count
        let fileManager = FileManager.default
        resources.networkNamespacePins = ((try? fileManager.contentsOfDirectory(atPath: paths.networkNamespaces)) ?? []).count
        resources.instanceDirectories = ((try? fileManager.contentsOfDirectory(atPath: paths.instances)) ?? []).count
        resources.cgroups = CgroupHierarchy.children(of: paths.cgroupParent).count
        resources.mounts = HostMounts.mountPoints().filter { $0.hasPrefix(paths.state + "/") }.count
        let me = getpid()
        for entry in (try? fileManager.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let fields = ProcessInspector.statFields(of: pid) else { continue }
            if fields.first == "Z" {
                if fields.count > 1, Int32(fields[1]) == me { resources.zombies += 1 }
                continue
            }
            let cgroup = ProcFile.text("/proc/\(pid)/cgroup") ?? ""
            if cgroup.contains(":\(paths.cgroupParent)/") { resources.processes += 1 }
        }
        resources.openFileDescriptors = ((try? fileManager.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
        resources.residentBytes = MemoryUsage.of(pids: [me]).rssBytes
        return resources
    }

    /// Runs `cycles` restore/request/stop cycles of `manifest`, then `loadSeconds` of closed-loop
    /// load through an in-process gateway (1 to 3 instances) while an instance is killed with
    /// SIGKILL every `killInterval`. Nothing of it is left running when this returns.
    public func soak(
        _ manifest: SnapshotManifest, cycles: Int = 1000, loadSeconds: Double = 600, connections: Int = 8, killInterval: Duration = .seconds(5),
        requestPath: String = "/greet", progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> SoakReport {
        // Closed ranges also refuse NaN and infinity, which `Duration` would trap on.
        guard (0...1_000_000).contains(cycles), (0...604_800).contains(loadSeconds), (1...256).contains(connections),
            (.milliseconds(100)...(.seconds(3600))).contains(killInterval)
        else {
            throw KilnError(
                .invalidArgument,
                "bench soak takes cycles 0-1000000, load seconds 0-604800 (a week), connections 1-256 and a kill interval of 0.1-3600 s",
                hint: "e.g. kiln bench soak hello --cycles 100 --load-seconds 60")
        }
        let atStart = await hostResources()
        progress("at start: \(atStart)")

        // 1. Restore, answer, stop; over and over.
        var failures: [String] = []
        var firstResponses: [Double] = []
        let cyclesStart = ContinuousClock.now
        for cycle in 0..<cycles {
            // Stopped (Ctrl-C): each cycle would only fail at once and count as a failure.
            try Task.checkCancellation()
            do {
                let record = try await restoreOne(manifest)
                firstResponses.append(record.firstResponseMs)
                do {
                    let reply = try await request(record, path: requestPath)
                    if reply.status != 200 { failures.append("cycle \(cycle + 1): GET \(requestPath) answered \(reply.status)") }
                } catch {
                    failures.append("cycle \(cycle + 1): \(error)")
                }
                try await stop(record)
            } catch {
                failures.append("cycle \(cycle + 1): \(error)")
            }
            progressEvery(cycle, cycles, firstResponses, failures.count, progress)
        }
        let cyclesSeconds = cyclesStart.duration(to: .now).seconds
        let afterCycles = await hostResources()
        progress("after \(cycles) cycles: \(afterCycles)")

        // 2. The gateway under load, instances killed under it.
        let load =
            loadSeconds > 0
            ? try await soakGateway(
                manifest, seconds: loadSeconds, connections: connections, killInterval: killInterval, path: requestPath, progress: progress)
            : SoakReport.Load(
                seconds: 0, connections: connections, requests: 0, ok: 0, failedInFlightToKilled: 0, failedOther: 0, otherErrors: [], kills: 0,
                launches: 0, coldStartFallbacks: 0)
        // Shims of stopped instances exit a moment after their container: give them that moment.
        try? await Task.sleep(for: .seconds(2))
        let atEnd = await hostResources()
        progress("at end: \(atEnd)")
        return SoakReport(
            snapshot: manifest.name,
            cycles: .init(
                count: cycles, failures: failures.count, errors: Array(failures.prefix(10)), seconds: cyclesSeconds,
                firstResponse: SampleSummary(firstResponses)),
            load: load, atStart: atStart, afterCycles: afterCycles, atEnd: atEnd,
            leaks: afterCycles.leaks(since: atStart).map { "after the cycles: \($0)" } + atEnd.leaks(since: atStart).map { "at the end: \($0)" })
    }

    private func progressEvery(_ cycle: Int, _ cycles: Int, _ samples: [Double], _ failures: Int, _ progress: @Sendable (String) -> Void) {
        guard (cycle + 1) % 50 == 0 || cycle + 1 == cycles else { return }
        let recent = SampleSummary(Array(samples.suffix(50)))
        progress(
            String(format: "cycle %d/%d: first response p50 %.0f ms over the last 50, %d failures so far", cycle + 1, cycles, recent.p50, failures))
    }

    private func soakGateway(
        _ manifest: SnapshotManifest, seconds: Double, connections: Int, killInterval: Duration, path: String,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> SoakReport.Load {
        let function = manifest.name
        // Only the soaked function gets instances (scaled to 1-3 below), whatever else the store holds.
        let policy = ScalingPolicy(minInstances: 0, maxInstances: 3, concurrency: max(1, connections / 2), keepAliveSeconds: 30)
        let configuration = GatewayConfiguration(
            listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
            defaultPolicy: policy, maintenanceInterval: .milliseconds(20))
        var quiet = logger
        quiet.logLevel = .error
        let server = buildGateway(kiln: self, configuration: configuration, stopsOnSignals: false, logger: quiet)
        let gateway = server.gateway

        return try await withThrowingTaskGroup(of: SoakReport.Load?.self) { group in
            group.addTask {
                try await server.run()
                return nil
            }
            let port = await server.boundPorts().listen
            let target = LoadTarget.loopback(port: port)
            // The first request restores the first instance (and verifies the snapshot).
            _ = await LoadGenerator.burst(target, path: "/\(function)\(path)", count: 1)
            _ = try gateway.scale(function, ScalingPolicyUpdate(min: 1, max: 3))

            let killed = Mutex<Set<String>>([])
            let end = ContinuousClock.now + .seconds(seconds)
            let killer = Task {
                while ContinuousClock.now < end {
                    try? await Task.sleep(for: killInterval)
                    guard ContinuousClock.now < end,
                        let status = try? gateway.function(function),
                        let victim = status.instances.filter({ $0.state != .draining }).randomElement()
                    else { continue }
                    killed.withLock { _ = $0.insert(victim.id) }
                    kill(victim.pid, SIGKILL)
                }
            }
            defer { killer.cancel() }
            var load = SoakReport.Load(
                seconds: 0, connections: connections, requests: 0, ok: 0, failedInFlightToKilled: 0, failedOther: 0, otherErrors: [], kills: 0,
                launches: 0, coldStartFallbacks: 0)
            let started = ContinuousClock.now
            // Slices of 10 s keep the samples held at once small over a long run.
            while ContinuousClock.now < end {
                // Stopped (Ctrl-C): the load would only fail until the end. Throwing cancels the
                // gateway, which stops its instances on the way out.
                try Task.checkCancellation()
                let slice = min(10, ContinuousClock.now.duration(to: end).seconds)
                let result = await LoadGenerator.run(target, path: "/\(function)\(path)", connections: connections, duration: .seconds(slice))
                let killedSoFar = killed.withLock { $0 }
                load.requests += result.samples.count
                load.ok += result.ok
                for sample in result.samples where sample.status != 200 {
                    if let instance = sample.instance, killedSoFar.contains(instance) {
                        load.failedInFlightToKilled += 1
                    } else {
                        load.failedOther += 1
                        if load.otherErrors.count < 10 { load.otherErrors.append("\(sample.status.map(String.init) ?? "-") \(sample.error ?? "")") }
                    }
                }
                progress(
                    String(
                        format: "load: %.0f s of %.0f, %d requests, %d ok, %d lost with killed instances, %d other failures, %d kills",
                        started.duration(to: .now).seconds, seconds, load.requests, load.ok, load.failedInFlightToKilled, load.failedOther,
                        killed.withLock { $0.count }))
            }
            load.seconds = started.duration(to: .now).seconds
            load.kills = killed.withLock { $0.count }
            if let status = try? gateway.function(function) {
                load.launches = status.launches
                load.coldStartFallbacks = status.coldStarts
            }
            await server.shutdown()
            try await group.waitForAll()
            return load
        }
    }
}
