import Foundation
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

/// `kiln bench serve`: what the gateway costs, measured against going without it in one run.
public struct ServeBenchmarkReport: Codable, Sendable {
    public var snapshot: String
    /// The path of the first requests (the snapshot's readiness path, as a restore's own first
    /// response is timed on it).
    public var firstRequestPath: String
    /// `restoreOne` from start to the first 2xx of the readiness path, per trial.
    public var bareRestoreMs: [Double]
    /// A request through the gateway to the function at zero instances, sent to answered.
    public var firstRequestMs: [Double]
    public var bareRestore: SampleSummary
    public var firstRequest: SampleSummary
    /// p50 of the first request at zero over p50 of the bare restore (target <= 3).
    public var firstRequestOverRestore: Double

    /// The load generator of the throughput runs (`wrk -t1 -c8 -d5s`).
    public var client: String
    public var connections: Int
    /// How long every path was loaded before the counted rounds (until the service was warm).
    public var warmupSeconds: Double
    /// The throughput comparison, per path the service was loaded on.
    public var paths: [PathResult]
    /// The reference proxy, or why there is none.
    public var reference: String
    public var notes: String

    /// One wrk run and the CPU it cost.
    public struct Run: Codable, Sendable {
        public var requestsPerSecond: Double
        public var p50Ms: Double
        public var p99Ms: Double
        /// Responses other than 2xx/3xx and socket errors.
        public var errors: Int
        /// CPU the proxy on this path spent per request (kiln's process, or nginx's); nil direct.
        public var proxyCpuMsPerRequest: Double?
        /// CPU the instance (its JVM, every thread) spent per request.
        public var instanceCpuMsPerRequest: Double
    }

    /// One round: the same load straight into the instance, through kiln, and through nginx.
    public struct Round: Codable, Sendable {
        public var direct: Run
        public var gateway: Run
        public var nginx: Run?
    }

    /// The rounds of one path under one ``CPUPlacement``.
    public struct PlacementResult: Codable, Sendable {
        public var placement: CPUPlacement
        /// The cores the instance ran on, and those of the proxies and wrk.
        public var instanceCores: [Int]
        public var proxyCores: [Int]
        public var rounds: [Round]
        /// 1 - kiln/direct requests per second, median of the rounds' ratios (target <= 0.15).
        public var gatewayOverhead: Double
        /// The same for nginx.
        public var nginxOverhead: Double?
        /// Medians over rounds.
        public var gatewayCpuMsPerRequest: Double
        public var nginxCpuMsPerRequest: Double?
        public var instanceCpuMsPerRequest: Double
    }

    public struct PathResult: Codable, Sendable {
        /// As the service sees it (`/greet`; through the gateway `/<function>/greet`).
        public var path: String
        /// One per placement measured, in the order asked for.
        public var placements: [PlacementResult]
    }
}

extension Kiln {
    /// Measures the gateway on one snapshot, in-process, on loopback:
    ///
    /// 1. `trials` times, interleaved: a bare `restoreOne` (timed to its first readiness 2xx)
    ///    and a request through the gateway to the function at zero instances (timed from send
    ///    to answer, on a new connection); the gateway is drained back to zero between trials.
    /// 2. With one instance up, per path, `rounds` rounds of `seconds` each of the same `wrk`
    ///    load: straight into the instance (from inside its network namespace), through the
    ///    gateway, and through nginx (``ReferenceProxy``, when installed), in an order that
    ///    rotates from round to round.
    ///
    /// Every instance (and nginx) is stopped before this returns.
    public func benchmarkGateway(
        _ manifest: SnapshotManifest, trials: Int = 20, loadPaths: [String] = ["/greet"], connections: Int = 8, seconds: Int = 5,
        rounds: Int = 6, withReference: Bool = true, placements: [CPUPlacement] = CPUPlacement.allCases,
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> ServeBenchmarkReport {
        guard (1...200).contains(trials), (1...256).contains(connections), (1...3600).contains(seconds), (1...20).contains(rounds),
            (1...8).contains(loadPaths.count), loadPaths.allSatisfy(InputValidation.isRequestPath), !placements.isEmpty,
            Set(placements).count == placements.count
        else {
            throw KilnError(
                .invalidArgument,
                "bench serve takes trials 1-200, connections 1-256, seconds 1-3600, rounds 1-20, 1-8 paths starting with / and each placement at most once",
                hint: "e.g. kiln bench serve hello --trials 20 --path /greet --seconds 5 --placement isolated")
        }
        let cores = CPUAffinity.current()
        let splits = try placements.map { placement -> (CPUPlacement, CPUSplit) in
            switch placement {
            case .shared: return (placement, .sharing(cores))
            case .isolated:
                guard let split = CPUSplit.isolating(cores) else {
                    throw KilnError(
                        .invalidArgument,
                        "the isolated placement needs two cores or more (one for the instance, one for the rest); this process may use \(cores.count)",
                        hint: "measure with --placement shared")
                }
                return (placement, split)
            }
        }
        let wrk = try Wrk(connections: connections, seconds: seconds)
        // Concurrency matches the load so the gateway queues nothing the instance would not.
        let policy = ScalingPolicy(minInstances: 0, maxInstances: 1, concurrency: connections, keepAliveSeconds: 3600)
        let configuration = GatewayConfiguration(
            listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
            defaultPolicy: policy, maintenanceInterval: .milliseconds(20))
        let server = buildGateway(kiln: self, configuration: configuration, stopsOnSignals: false, logger: logger)
        let gateway = server.gateway

        return try await withThrowingTaskGroup(of: ServeBenchmarkReport?.self) { group in
            group.addTask {
                try await server.run()
                return nil
            }
            do {
                let setup = ThroughputSetup(
                    wrk: wrk, paths: loadPaths, rounds: rounds, withReference: withReference, threads: configuration.listenerThreads,
                    placements: splits, cores: cores)
                let report = try await measure(
                    manifest, gateway: gateway, port: await server.boundPorts().listen, trials: trials, setup, progress: progress)
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

    private struct ThroughputSetup {
        var wrk: Wrk
        var paths: [String]
        var rounds: Int
        var withReference: Bool
        var threads: Int
        /// The placements asked for, in order, with their cores.
        var placements: [(placement: CPUPlacement, split: CPUSplit)]
        /// Every core this process may use (what every process is put back on at the end).
        var cores: [Int]
    }

    private func measure(
        _ manifest: SnapshotManifest, gateway: Gateway, port: Int, trials: Int, _ setup: ThroughputSetup, progress: @Sendable (String) -> Void
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
        var reference: ReferenceProxy?
        let referenceNote: String
        if !setup.withReference {
            referenceNote = "none (--no-reference)"
        } else if let nginx = ReferenceProxy.executable {
            reference = try await ReferenceProxy.start(nginx, nsenter: setup.wrk.nsenter, function: function, endpoint: instance.endpoint)
            referenceNote = "nginx (\(nginx), one worker, keep-alive to the instance, inside its network namespace)"
        } else {
            referenceNote = "none: nginx is not installed (apt-get install nginx-light; make setup does)"
            progress("no reference proxy: nginx is not installed (apt-get install nginx-light)")
        }
        do {
            let result = try await throughput(
                function: function, instance: instance, gatewayPort: port, reference: reference, setup, progress: progress)
            await reference?.stop()
            let bareSummary = SampleSummary(bare)
            let firstSummary = SampleSummary(first)
            return ServeBenchmarkReport(
                snapshot: function, firstRequestPath: firstPath, bareRestoreMs: bare, firstRequestMs: first, bareRestore: bareSummary,
                firstRequest: firstSummary, firstRequestOverRestore: bareSummary.p50 > 0 ? firstSummary.p50 / bareSummary.p50 : 0,
                client: setup.wrk.description, connections: setup.wrk.connections, warmupSeconds: result.warmupSeconds, paths: result.paths,
                reference: referenceNote,
                notes:
                    "this process may use cores \(setup.cores.map(String.init).joined(separator: ",")); the gateway has \(setup.threads) listener thread\(setup.threads == 1 ? "" : "s"); keep-alive connections on every path; per-instance concurrency = connections"
            )
        } catch {
            await reference?.stop()
            throw error
        }
    }

    /// The warm-up, then the counted rounds, per path.
    private func throughput(
        function: String, instance: InstanceRecord, gatewayPort: Int, reference: ReferenceProxy?, _ setup: ThroughputSetup,
        progress: @Sendable (String) -> Void
    ) async throws -> (warmupSeconds: Double, paths: [ServeBenchmarkReport.PathResult]) {
        let wrk = setup.wrk
        let netns = instance.networkNamespacePath
        enum Target { case direct, gateway, nginx }
        func url(_ target: Target, _ path: String) -> String {
            switch target {
            case .direct: "http://127.0.0.1:\(instance.port)\(path)"
            case .gateway: "http://127.0.0.1:\(gatewayPort)/\(function)\(path)"
            case .nginx: "http://127.0.0.1:\(reference?.port ?? 0)/\(function)\(path)"
            }
        }
        /// CPU seconds the proxy on `target`'s path has used so far: the gateway is this process.
        func proxyCPUSeconds(_ target: Target) -> Double? {
            switch target {
            case .direct: nil
            case .gateway: ProcessInspector.ownCPUTime().milliseconds / 1000
            case .nginx: reference.flatMap { ProcessInspector.cpuSeconds(of: $0.pid) }
            }
        }
        /// One run with the CPU the proxy and the instance spent during it.
        func run(_ target: Target, _ path: String, seconds: Int? = nil) async throws -> ServeBenchmarkReport.Run {
            let proxyBefore = proxyCPUSeconds(target)
            let instanceBefore = ProcessInspector.cpuSeconds(of: instance.pid) ?? 0
            let result = try await wrk.run(url(target, path), inNetworkNamespace: target == .gateway ? nil : netns, seconds: seconds)
            let instanceSeconds = (ProcessInspector.cpuSeconds(of: instance.pid) ?? 0) - instanceBefore
            let proxyAfter = proxyCPUSeconds(target)
            let requests = Double(max(result.requests, 1))
            var proxyMs: Double?
            if let proxyBefore, let proxyAfter { proxyMs = (proxyAfter - proxyBefore) * 1000 / requests }
            return ServeBenchmarkReport.Run(
                requestsPerSecond: result.requestsPerSecond, p50Ms: result.p50Ms, p99Ms: result.p99Ms, errors: result.errors,
                proxyCpuMsPerRequest: proxyMs, instanceCpuMsPerRequest: instanceSeconds * 1000 / requests)
        }

        /// Moves the instance (every process in its cgroup) to `split.instance`, and this process
        /// (the gateway; wrk and nsenter are its children) and nginx to `split.front`.
        func place(_ split: CPUSplit) throws {
            for pid in ProcessInspector.pids(inCgroup: instance.cgroupPath) { try CPUAffinity.pin(pid, to: split.instance) }
            try CPUAffinity.pin(0, to: split.front)
            if let reference { try CPUAffinity.pin(reference.pid, to: split.front) }
        }

        // A restored JVM is only as warm as the snapshot's warmup made it (a few hundred
        // requests): under load it goes on compiling for tens of seconds, and its CPU per request
        // falls several-fold (~1 ms to ~0.07 ms for /greet here). Rounds taken meanwhile compare a
        // moving target, and a heavier service makes any proxy look cheaper. So: load every path
        // every way until the service's CPU per request stops falling on the first path (no new
        // low by 5% in the last five slices; CPU per request, unlike requests/s, hardly depends
        // on what else loads the machine), 20 s at least and 120 s at most; not counted.
        progress("warming up every path until the service's CPU per request stops falling (20-120 s, not counted)...")
        let warmupStart = ContinuousClock.now
        var warmupCost: [Double] = []
        var warmupRates: [Double] = []
        while true {
            for (index, path) in setup.paths.enumerated() {
                let slice = try await run(.direct, path, seconds: 2)
                if index == 0 {
                    warmupCost.append(slice.instanceCpuMsPerRequest)
                    warmupRates.append(slice.requestsPerSecond)
                }
                _ = try await run(.gateway, path, seconds: 1)
                if reference != nil { _ = try await run(.nginx, path, seconds: 1) }
            }
            let elapsed = warmupStart.duration(to: .now)
            if elapsed >= .seconds(120) { break }
            if elapsed >= .seconds(20), warmupCost.count >= 6, warmupCost.suffix(5).min()! > 0.95 * warmupCost.dropLast(5).min()! { break }
        }
        let warmupSeconds = warmupStart.duration(to: .now).seconds
        progress(
            String(
                format: "warmed up in %.0f s: the service's CPU per request on %@ went from %.3f to %.3f ms (direct: %.0f to %.0f req/s)",
                warmupSeconds,
                setup.paths[0], warmupCost.first ?? 0, warmupCost.last ?? 0, warmupRates.first ?? 0, warmupRates.last ?? 0))

        // Placements alternate within each round (and targets rotate within each placement), so
        // drift on a busy machine hits every figure alike.
        let targets: [Target] = reference == nil ? [.direct, .gateway] : [.direct, .gateway, .nginx]
        var results: [ServeBenchmarkReport.PathResult] = []
        do {
            for path in setup.paths {
                var rounds: [CPUPlacement: [ServeBenchmarkReport.Round]] = [:]
                for round in 0..<setup.rounds {
                    for (placement, split) in Self.rotated(setup.placements, by: round) {
                        try place(split)
                        var runs: [Target: ServeBenchmarkReport.Run] = [:]
                        for target in Self.rotated(targets, by: round) {
                            runs[target] = try await run(target, path)
                        }
                        let result = ServeBenchmarkReport.Round(direct: runs[.direct]!, gateway: runs[.gateway]!, nginx: runs[.nginx])
                        rounds[placement, default: []].append(result)
                        progress(
                            String(
                                format: "%@ round %d/%d, %@: direct %.0f req/s, kiln %.0f req/s (%.3f ms CPU/request)", path, round + 1, setup.rounds,
                                placement.rawValue, result.direct.requestsPerSecond, result.gateway.requestsPerSecond,
                                result.gateway.proxyCpuMsPerRequest ?? 0)
                                + (result.nginx.map {
                                    String(format: ", nginx %.0f req/s (%.3f ms CPU/request)", $0.requestsPerSecond, $0.proxyCpuMsPerRequest ?? 0)
                                } ?? ""))
                    }
                }
                results.append(
                    ServeBenchmarkReport.PathResult(
                        path: path, placements: setup.placements.map { Self.summarize($0, $1, rounds[$0] ?? []) }))
            }
            try place(.sharing(setup.cores))
        } catch {
            try? place(.sharing(setup.cores))
            throw error
        }
        return (warmupSeconds, results)
    }

    /// `items` starting from its `offset`-th (wrapping round).
    private static func rotated<Item>(_ items: [Item], by offset: Int) -> [Item] {
        let start = offset % items.count
        return Array(items[start...] + items[..<start])
    }

    private static func summarize(
        _ placement: CPUPlacement, _ split: CPUSplit, _ rounds: [ServeBenchmarkReport.Round]
    ) -> ServeBenchmarkReport.PlacementResult {
        let median = { (values: [Double]) in SampleSummary(values).p50 }
        let nginxRounds = rounds.compactMap { round in round.nginx.map { (round.direct, $0) } }
        return ServeBenchmarkReport.PlacementResult(
            placement: placement, instanceCores: split.instance, proxyCores: split.front, rounds: rounds,
            gatewayOverhead: 1 - median(rounds.map { $0.gateway.requestsPerSecond / max($0.direct.requestsPerSecond, 1) }),
            nginxOverhead: nginxRounds.isEmpty ? nil : 1 - median(nginxRounds.map { $1.requestsPerSecond / max($0.requestsPerSecond, 1) }),
            gatewayCpuMsPerRequest: median(rounds.compactMap(\.gateway.proxyCpuMsPerRequest)),
            nginxCpuMsPerRequest: nginxRounds.isEmpty ? nil : median(nginxRounds.compactMap(\.1.proxyCpuMsPerRequest)),
            instanceCpuMsPerRequest: median(rounds.map(\.direct.instanceCpuMsPerRequest)))
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
            if let summary = try gateway.function(function).instances.first(where: { $0.state == .idle }) {
                return try instance(summary.id)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw KilnError(.runtimeFailed, "no instance of '\(function)' came up within 60 s")
    }
}
