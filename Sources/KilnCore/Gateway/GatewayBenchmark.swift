import Foundation
import Logging

/// Percentiles of a set of samples (milliseconds), nearest rank.
public struct Percentiles: Codable, Sendable, Equatable {
    public var count: Int
    public var min: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var max: Double

    public init(_ samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        func rank(_ quantile: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            return sorted[Swift.min(sorted.count - 1, Swift.max(0, Int((quantile * Double(sorted.count)).rounded(.up)) - 1))]
        }
        min = sorted.first ?? 0
        max = sorted.last ?? 0
        p50 = rank(0.5)
        p90 = rank(0.9)
        p99 = rank(0.99)
    }
}

/// `kiln bench serve`: what the gateway costs, measured against going without it in one run.
public struct ServeBenchmarkReport: Codable, Sendable {
    /// One closed-loop load run.
    public struct Throughput: Codable, Sendable {
        public var requests: Int
        public var failures: Int
        public var seconds: Double
        public var requestsPerSecond: Double
        public var p50Ms: Double
        public var p99Ms: Double
        /// CPU time this process spent per request: the load generator's, plus the gateway's on
        /// the gateway path. The difference between the two paths is what the gateway costs,
        /// and unlike requests/s it hardly depends on what else the machine runs.
        public var kilnCpuMsPerRequest: Double
        /// CPU time the instance (its JVM, every thread) spent per request.
        public var instanceCpuMsPerRequest: Double
    }

    public var snapshot: String
    /// The path of the first requests (the snapshot's readiness path, as a restore's own first
    /// response is timed on it).
    public var firstRequestPath: String
    /// `restoreOne` from start to the first 2xx of the readiness path, per trial.
    public var bareRestoreMs: [Double]
    /// A request through the gateway to the function at zero instances, sent to answered.
    public var firstRequestMs: [Double]
    public var bareRestore: Percentiles
    public var firstRequest: Percentiles
    /// p50 of the first request at zero over p50 of the bare restore (target <= 3).
    public var firstRequestOverRestore: Double
    /// The path of the throughput runs.
    public var loadPath: String
    public var connections: Int
    public var direct: [Throughput]
    public var throughGateway: [Throughput]
    /// 1 - (gateway requests/s) / (direct requests/s), over all rounds (target <= 0.15).
    public var gatewayOverhead: Double
    /// The same, as the median over rounds of each round's pair (less sensitive to one noisy run).
    public var gatewayOverheadMedianOfRounds: Double
    /// CPU the gateway adds per request (ms): median over rounds of this process's CPU per
    /// request through the gateway minus that of the direct run of the same round.
    public var gatewayCpuMsPerRequest: Double
    /// The overhead the CPU figures predict when the machine's cores are the bottleneck (this
    /// benchmark's case: service, load generator and gateway share them): 1 - (direct CPU per
    /// request) / (gateway path CPU per request), medians over rounds. Less noisy than the
    /// throughput ratio on a machine that others load.
    public var cpuBoundOverhead: Double
    public var notes: String
    /// How long both paths were loaded before the counted rounds (until the service was warm).
    public var warmupSeconds: Double
    /// The same comparison with a lean client in its own process (nil when `wrk` is missing).
    public var externalClient: ExternalClientRounds?

    /// Throughput rounds driven by Debian's `wrk` instead of the in-process load generator, which
    /// costs more CPU per request than the gateway and shares its event loops, and so flatters
    /// the ratio. The direct runs enter the instance's network namespace (`nsenter --net`).
    public struct ExternalClientRounds: Codable, Sendable {
        public var client: String
        public var direct: [Double]
        public var throughGateway: [Double]
        /// 1 - gateway/direct requests per second, median of rounds.
        public var overheadMedianOfRounds: Double
    }
}

extension Kiln {
    /// Measures the gateway on one snapshot, in-process, on loopback:
    ///
    /// 1. `trials` times, interleaved: a bare `restoreOne` (timed to its first readiness 2xx)
    ///    and a request through the gateway to the function at zero instances (timed from send
    ///    to answer, on a new connection); the gateway is drained back to zero between trials.
    /// 2. With one instance up, `rounds` alternating closed-loop runs of `seconds` each: the
    ///    same load generator against the instance directly (a socket in its network namespace)
    ///    and through the gateway (which forwards to that same instance).
    ///
    /// Every instance is stopped before this returns.
    public func benchmarkGateway(
        _ manifest: SnapshotManifest, trials: Int = 20, loadPath: String = "/greet", connections: Int = 8, seconds: Double = 3,
        rounds: Int = 6, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> ServeBenchmarkReport {
        guard (1...200).contains(trials), (1...256).contains(connections), (0.1...3600).contains(seconds), (1...20).contains(rounds) else {
            throw KilnError(
                .invalidArgument, "bench serve takes trials 1-200, connections 1-256, seconds 0.1-3600 and rounds 1-20",
                hint: "e.g. kiln bench serve hello --trials 20 --seconds 3")
        }
        // Concurrency matches the load so the gateway queues nothing the instance would not.
        let policy = ScalingPolicy(minInstances: 0, maxInstances: 1, concurrency: connections, keepAliveSeconds: 3600)
        let configuration = GatewayConfiguration(
            listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
            defaultPolicy: policy, maintenanceInterval: .milliseconds(20))
        let gateway = Gateway(
            configuration: configuration, provider: KilnInstanceProvider(kiln: self), transport: PooledInstanceTransport(), logger: logger)
        let server = GatewayServer(gateway: gateway, signals: [], logger: logger)

        return try await withThrowingTaskGroup(of: ServeBenchmarkReport?.self) { group in
            group.addTask {
                try await server.run()
                return nil
            }
            do {
                let report = try await measure(
                    manifest, gateway: gateway, port: await server.boundPorts().listen, trials: trials, loadPath: loadPath,
                    connections: connections, seconds: seconds, rounds: rounds, progress: progress)
                await server.shutdown()
                try await group.waitForAll()
                return report
            } catch {
                await server.shutdown()
                try? await group.waitForAll()
                throw error
            }
        }
    }

    private func measure(
        _ manifest: SnapshotManifest, gateway: Gateway, port: Int, trials: Int, loadPath: String, connections: Int, seconds: Double,
        rounds: Int, progress: @Sendable (String) -> Void
    ) async throws -> ServeBenchmarkReport {
        let function = manifest.name
        let firstPath = manifest.readiness.path
        // Not counted: the gateway verifies the snapshot before its first restore, once.
        progress("first request (verifies the snapshot, not counted)...")
        _ = try await firstRequest(port: port, path: "/\(function)\(firstPath)")
        try await drainToZero(gateway, function)

        var bare: [Double] = []
        var first: [Double] = []
        for trial in 1...trials {
            let record = try await restoreOne(manifest, pollInterval: .milliseconds(2))
            bare.append(record.firstResponseMs)
            try await stop(record)
            first.append(try await firstRequest(port: port, path: "/\(function)\(firstPath)"))
            try await drainToZero(gateway, function)
            progress(String(format: "trial %d/%d: bare restore %.0f ms, first request at zero %.0f ms", trial, trials, bare.last!, first.last!))
        }

        // Throughput: one instance, kept up.
        _ = try gateway.scale(function, ScalingPolicyUpdate(min: 1, max: 1))
        let instance = try await waitForInstance(gateway, function)
        let direct = LoadTarget.instance(instance.endpoint)
        let viaGateway = LoadTarget.loopback(port: port)
        // A restored JVM is only as warm as the snapshot's warmup made it (a few hundred
        // requests): under load it goes on compiling for tens of seconds, and its CPU per request
        // falls several-fold (0.45 to 0.1 ms for /greet here). Rounds taken meanwhile compare a
        // moving target, and a heavier service makes any gateway look cheaper. So: load both
        // paths alternately until the service's CPU per request stops falling (no new low by
        // 5% in the last five 3-s slices; CPU per request, unlike requests/s, hardly depends on
        // what else loads the machine, though on a loaded one the JIT, starved, takes longer),
        // 20 s at least and 90 s at most; not counted.
        progress("warming up until the service's CPU per request stops falling (20-90 s, not counted)...")
        let warmupStart = ContinuousClock.now
        var warmupCost: [Double] = []
        var warmupRates: [Double] = []
        while true {
            let before = ProcessInspector.cpuSeconds(of: instance.pid) ?? 0
            let slice = await LoadGenerator.run(direct, path: loadPath, connections: connections, duration: .seconds(2))
            let used = (ProcessInspector.cpuSeconds(of: instance.pid) ?? 0) - before
            warmupCost.append(used * 1000 / Double(max(slice.samples.count, 1)))
            warmupRates.append(slice.requestsPerSecond)
            _ = await LoadGenerator.run(viaGateway, path: "/\(function)\(loadPath)", connections: connections, duration: .seconds(1))
            let elapsed = warmupStart.duration(to: .now)
            if elapsed >= .seconds(90) { break }
            if elapsed >= .seconds(20), warmupCost.count >= 6, warmupCost.suffix(5).min()! > 0.95 * warmupCost.dropLast(5).min()! { break }
        }
        let warmupSeconds = warmupStart.duration(to: .now).seconds
        progress(String(
            format: "warmed up in %.0f s: the service's CPU per request went from %.3f to %.3f ms (direct: %.0f to %.0f req/s)", warmupSeconds,
            warmupCost.first ?? 0, warmupCost.last ?? 0, warmupRates.first ?? 0, warmupRates.last ?? 0))
        var directRuns: [ServeBenchmarkReport.Throughput] = []
        var gatewayRuns: [ServeBenchmarkReport.Throughput] = []
        // One run, with the CPU time this process and the instance spent during it.
        func run(_ target: LoadTarget, _ path: String) async -> ServeBenchmarkReport.Throughput {
            let ownBefore = ProcessInspector.ownCPUTime()
            let instanceBefore = ProcessInspector.cpuSeconds(of: instance.pid) ?? 0
            let result = await LoadGenerator.run(target, path: path, connections: connections, duration: .seconds(seconds))
            let ownMs = (ProcessInspector.ownCPUTime() - ownBefore).milliseconds
            let instanceMs = ((ProcessInspector.cpuSeconds(of: instance.pid) ?? 0) - instanceBefore) * 1000
            let requests = Double(max(result.samples.count, 1))
            return ServeBenchmarkReport.Throughput(
                requests: result.samples.count, failures: result.samples.count - result.ok, seconds: result.elapsed.seconds,
                requestsPerSecond: result.requestsPerSecond, p50Ms: result.latencyMs(0.5), p99Ms: result.latencyMs(0.99),
                kilnCpuMsPerRequest: ownMs / requests, instanceCpuMsPerRequest: instanceMs / requests)
        }
        for round in 1...rounds {
            // Alternate which goes first, so drift on a busy machine hits both alike.
            let order = round % 2 == 1 ? [false, true] : [true, false]
            for throughGateway in order {
                let result = throughGateway ? await run(viaGateway, "/\(function)\(loadPath)") : await run(direct, loadPath)
                if throughGateway { gatewayRuns.append(result) } else { directRuns.append(result) }
                progress(String(
                    format: "round %d/%d %@: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d failed; CPU per request: kiln %.3f ms, instance %.3f ms",
                    round, rounds, throughGateway ? "gateway" : "direct ", result.requestsPerSecond, result.p50Ms, result.p99Ms, result.failures,
                    result.kilnCpuMsPerRequest, result.instanceCpuMsPerRequest))
            }
        }
        let external = await externalClientRounds(
            gatewayURL: "http://127.0.0.1:\(port)/\(function)\(loadPath)", instance: instance, path: loadPath, connections: connections,
            seconds: seconds, rounds: rounds, progress: progress)
        let total = { (runs: [ServeBenchmarkReport.Throughput]) in Double(runs.reduce(0) { $0 + $1.requests }) / runs.reduce(0) { $0 + $1.seconds } }
        let pairs = zip(gatewayRuns, directRuns)
        let cpuPerRequest = { (run: ServeBenchmarkReport.Throughput) in run.kilnCpuMsPerRequest + run.instanceCpuMsPerRequest }
        let bareSummary = Percentiles(bare)
        let firstSummary = Percentiles(first)
        return ServeBenchmarkReport(
            snapshot: function, firstRequestPath: firstPath, bareRestoreMs: bare, firstRequestMs: first, bareRestore: bareSummary,
            firstRequest: firstSummary, firstRequestOverRestore: bareSummary.p50 > 0 ? firstSummary.p50 / bareSummary.p50 : 0,
            loadPath: loadPath, connections: connections, direct: directRuns, throughGateway: gatewayRuns,
            gatewayOverhead: 1 - total(gatewayRuns) / total(directRuns),
            gatewayOverheadMedianOfRounds: 1 - Percentiles(pairs.map { $0.requestsPerSecond / $1.requestsPerSecond }).p50,
            gatewayCpuMsPerRequest: Percentiles(pairs.map { $0.kilnCpuMsPerRequest - $1.kilnCpuMsPerRequest }).p50,
            cpuBoundOverhead: 1 - Percentiles(pairs.map { cpuPerRequest($1) / cpuPerRequest($0) }).p50,
            notes: "gateway, load generator and service share this machine's \(ProcessInfo.processInfo.activeProcessorCount) cores; keep-alive connections on both paths; per-instance concurrency = connections",
            warmupSeconds: warmupSeconds, externalClient: external)
    }

    /// Alternating `wrk` runs through the gateway and straight into the instance; nil (said in
    /// the progress) when wrk or nsenter is not installed or a run fails.
    private func externalClientRounds(
        gatewayURL: String, instance: InstanceRecord, path: String, connections: Int, seconds: Double, rounds: Int,
        progress: @Sendable (String) -> Void
    ) async -> ServeBenchmarkReport.ExternalClientRounds? {
        let searchPath = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/bin:/bin"
        guard let wrk = ExecutableSearch.find("wrk", in: searchPath), let nsenter = ExecutableSearch.find("nsenter", in: searchPath) else {
            progress("external client: not measured (no wrk or nsenter on PATH; apt-get install wrk)")
            return nil
        }
        let arguments = ["-t1", "-c\(connections)", "-d\(max(1, Int(seconds.rounded())))s"]
        func run(_ executable: String, _ arguments: [String]) async -> Double? {
            guard let output = try? await Subprocess.run(executable, arguments), output.status.isSuccess else { return nil }
            return Self.wrkRequestsPerSecond(output.stdout)
        }
        var direct: [Double] = []
        var throughGateway: [Double] = []
        for round in 1...rounds {
            for viaGateway in round % 2 == 1 ? [false, true] : [true, false] {
                let rate = viaGateway
                    ? await run(wrk, arguments + [gatewayURL])
                    : await run(nsenter, ["--net=\(instance.networkNamespacePath)", wrk] + arguments + ["http://127.0.0.1:\(instance.port)\(path)"])
                guard let rate else {
                    progress("external client: a wrk run failed; not counted")
                    return nil
                }
                if viaGateway { throughGateway.append(rate) } else { direct.append(rate) }
                progress(String(format: "wrk round %d/%d %@: %.0f req/s", round, rounds, viaGateway ? "gateway" : "direct ", rate))
            }
        }
        return ServeBenchmarkReport.ExternalClientRounds(
            client: "wrk \(arguments.joined(separator: " "))", direct: direct, throughGateway: throughGateway,
            overheadMedianOfRounds: 1 - Percentiles(zip(throughGateway, direct).map { $0 / $1 }).p50)
    }

    /// The `Requests/sec:` figure of wrk's report.
    static func wrkRequestsPerSecond(_ output: String) -> Double? {
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count == 2, fields[0] == "Requests/sec:" { return Double(fields[1]) }
        }
        return nil
    }

    /// Sends one request on a new connection and returns how long the answer took (ms).
    private func firstRequest(port: Int, path: String) async throws -> Double {
        let client = KeepAliveClient(.loopback(port: port))
        defer { client.close() }
        let sent = ContinuousClock.now
        let response = try await client.send(.get, path)
        let elapsed = sent.duration(to: .now).milliseconds
        guard response.status.code == 200 else {
            throw KilnError(.requestFailed, "GET \(path) through the gateway answered \(response.status.code): \(response.bodyText)")
        }
        return elapsed
    }

    private func drainToZero(_ gateway: Gateway, _ function: String) async throws {
        _ = try gateway.drain(function)
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let status = try gateway.function(function)
            if status.instances.isEmpty, status.stopping == 0, status.starting == 0 { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw KilnError(.runtimeFailed, "the gateway did not get '\(function)' back to zero instances within 30 s")
    }

    private func waitForInstance(_ gateway: Gateway, _ function: String) async throws -> InstanceRecord {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let summary = try gateway.function(function).instances.first(where: { $0.state == "idle" }) {
                return try instance(summary.id)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw KilnError(.runtimeFailed, "no instance of '\(function)' came up within 60 s")
    }
}
