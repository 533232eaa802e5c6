import ArgumentParser
import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the HTTP gateway: restore functions (snapshots) on demand, scale them out, scale them to zero.",
        discussion: """
            GET http://LISTEN/<function>/<path> (or any method, or Host: <function>.<domain>) goes to an instance of the
            snapshot named <function>, which sees /<path>. With no instance running, one is restored and the request waits
            for it; busy instances make more, idle ones are stopped after --keep-alive. The admin listener serves
            GET /functions, GET /instances, PUT /functions/NAME/scale, POST /functions/NAME/drain and /metrics (Prometheus).
            SIGTERM or SIGINT: finish the requests in flight, stop every instance, exit.
            """)

    @Option(help: "Public address, HOST:PORT.")
    var listen = "127.0.0.1:8080"

    @Option(help: "Admin API and /metrics address, HOST:PORT (loopback only).")
    var admin = "127.0.0.1:8081"

    @Option(help: "Requests one instance serves at once; more wait in the gateway or go to another instance.")
    var concurrency = 8

    @Option(help: "Most instances per function.")
    var maxInstances = 4

    @Option(help: "Instances per function kept running even when idle.")
    var minInstances = 0

    @Option(help: "Seconds an idle instance is kept before it is stopped.")
    var keepAlive: Double = 60

    @Option(help: "Requests per function that may wait for an instance; more get 503.")
    var queueLimit = 256

    @Option(help: "Seconds a request may wait for an instance (a restore included) before it gets 503.")
    var queueTimeout: Double = 30

    @Option(help: "Seconds an instance may take to answer one request before the client gets 504.")
    var requestTimeout: Double = 60

    @Option(help: "Keep instances of a function warm from the start, NAME=N (repeatable).")
    var warm: [String] = []

    @Option(help: "Threads forwarding requests (default: a quarter of the cores, at least 1; the instances need the rest).")
    var threads: Int?

    @Flag(help: "When a restore fails, answer 503 instead of cold-starting the function's command.")
    var noColdStartFallback = false

    @Option(help: ArgumentHelp(
        "Pull function NAME from this registry reference on its first request when the store lacks it (repeatable); see kiln pull.",
        valueName: "NAME=HOST[:PORT]/REPO[:TAG]"))
    var pull: [String] = []

    @Option(help: "Functions pulled with --pull must be signed by this public key (KEYFILE.pub of kiln keygen --signing; repeatable: any of them).")
    var verify: [String] = []

    @OptionGroup var registry: RegistryOptions

    @OptionGroup var keys: KeyOptions

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            let remote = try RemoteFunctions(
                arguments: pull, access: registry.access, trusted: try verify.map { try SnapshotVerifyingKey(contentsOf: $0) })
            if let reference = remote.references.values.first { try registry.access.check(for: reference) }
            var logger = Logger(label: "kiln.gateway") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = common.verbose ? .debug : .info
            // Bad options are refused before anything is touched.
            let configuration = try makeConfiguration()
            // runc and CRIU calls are logged only with -v, as in every other command.
            let keyring = try keys.keyring()
            let ignored = try HostFact.parse(keys.ignoreHostCheck)
            var kiln = try Kiln.open(logger: common.makeLogger(), toDo: "run the gateway")
            kiln.keys = keyring
            kiln.hostCheck.ignored = ignored
            // The gateway's instances die with it; what an earlier, killed gateway left is removed
            // before this one starts.
            kiln.ownsInstances = true
            let garbage = try await kiln.collectGarbage()
            if !garbage.isEmpty {
                logger.notice("removed what a previous kiln left behind", metadata: [
                    "instances": "\(garbage.instances)", "containers": "\(garbage.containers)",
                    "network_namespaces": "\(garbage.networkNamespaces.count)", "directories": "\(garbage.directories.count)",
                    "cgroups": "\(garbage.cgroups.count)"])
            }
            let gateway = Gateway(
                configuration: configuration, provider: KilnInstanceProvider(
                    kiln: kiln, readinessTimeout: configuration.readinessTimeout, coldStartFallback: !noColdStartFallback, remote: remote,
                    logger: logger),
                transport: PooledInstanceTransport(maxIdlePerInstance: max(concurrency, 8)), logger: logger)
            let server = GatewayServer(gateway: gateway, logger: logger)
            let json = common.json
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run() }
                group.addTask {
                    let ports = await server.boundPorts()
                    let listen = ListenAddress(host: configuration.listen.host, port: ports.listen)
                    let admin = ListenAddress(host: configuration.admin.host, port: ports.admin)
                    if json {
                        Output.printJSON(["listen": "\(listen)", "admin": "\(admin)"])
                    } else {
                        Output.progress("kiln serve: functions on http://\(listen)/<function>/..., admin API and /metrics on http://\(admin)")
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    func makeConfiguration() throws -> GatewayConfiguration {
        let policy = ScalingPolicy(
            minInstances: minInstances, maxInstances: maxInstances, concurrency: concurrency, keepAliveSeconds: keepAlive,
            queueLimit: queueLimit, queueTimeoutSeconds: queueTimeout)
        return try GatewayConfiguration.parsing(
            listen: listen, admin: admin, defaultPolicy: policy, warm: warm, requestTimeoutSeconds: requestTimeout, listenerThreads: threads)
    }
}

extension Bench {
    struct ServeBenchmark: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "The gateway's cost: first request at zero instances vs a bare restore, and throughput through it vs direct.")

        @Argument(help: "Snapshot name.")
        var name: String

        @Option(help: "First-request-at-zero trials (each from zero instances), interleaved with bare restores.")
        var trials = 20

        @Option(name: .customLong("path"), help: "Path of the throughput runs, as the service sees it (repeatable; default /greet).")
        var paths: [String] = []

        @Option(help: "Concurrent keep-alive connections of the load generator (wrk).")
        var connections = 8

        @Option(help: "Seconds per throughput run.")
        var seconds = 5

        @Option(help: "Throughput rounds per path (each: the same load direct, through kiln and through nginx, the order rotating).")
        var rounds = 6

        @Flag(help: "Do not measure nginx as a reference proxy beside kiln.")
        var noReference = false

        @Option(
            name: .customLong("placement"),
            help: """
                Where the runs place the processes (repeatable; default both): isolated (the instance on half the cores, \
                the proxies and wrk on the others, as a function deployed with CPUs of its own) or shared (everything on every core).
                """)
        var placements: [CPUPlacement] = []

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            try await reporting(common) {
                let kiln = try common.openKiln(toDo: "measure the gateway", keys: keys)
                let (manifest, _) = try kiln.loadVerified(name)
                let json = common.json
                let report = try await kiln.benchmarkGateway(
                    manifest, trials: trials, loadPaths: paths.isEmpty ? ["/greet"] : paths, connections: connections, seconds: seconds,
                    rounds: rounds, withReference: !noReference, placements: placements.isEmpty ? CPUPlacement.allCases : placements
                ) { line in
                    if !json { Output.progress(line) }
                }
                if json {
                    Output.printJSON(report)
                    return
                }
                Self.print(report)
            }
        }

        static func print(_ report: ServeBenchmarkReport) {
            func row(_ label: String, _ p: Percentiles) -> [String] {
                [label, String(p.count), Output.ms(p.min), Output.ms(p.p50), Output.ms(p.p99), Output.ms(p.max)]
            }
            func percent(_ value: Double?) -> String { value.map { String(format: "%.1f%%", $0 * 100) } ?? "-" }
            func cpu(_ value: Double?) -> String { value.map { String(format: "%.3f ms", $0) } ?? "-" }
            func cores(_ list: [Int]) -> String { list.map(String.init).joined(separator: ",") }
            func rate(_ run: ServeBenchmarkReport.Run?) -> String {
                guard let run else { return "-" }
                return String(format: "%.0f", run.requestsPerSecond) + (run.errors > 0 ? " (\(run.errors) errors)" : "")
            }
            Swift.print("")
            Swift.print("First request to '\(report.snapshot)' at zero instances (GET \(report.firstRequestPath)), each trial from zero:")
            Swift.print(Output.table(["WHAT", "TRIALS", "MIN", "P50", "P99", "MAX"], [
                row("bare restore (restoreOne to first 2xx)", report.bareRestore),
                row("first request through the gateway", report.firstRequest),
            ]))
            Swift.print(String(format: "first request p50 / bare restore p50 = %.2fx (target <= 3x)", report.firstRequestOverRestore))
            Swift.print("")
            Swift.print("Steady state, one instance, \(report.client) per run, after \(Int(report.warmupSeconds)) s of warm-up; reference proxy: \(report.reference).")
            Swift.print("Requests per second, straight into the instance and through each proxy:")
            var rows: [[String]] = []
            for path in report.paths {
                for (placementIndex, placement) in path.placements.enumerated() {
                    for (index, round) in placement.rounds.enumerated() {
                        rows.append([
                            placementIndex == 0 && index == 0 ? path.path : "", index == 0 ? placement.placement.rawValue : "", String(index + 1),
                            rate(round.direct), rate(round.gateway), rate(round.nginx),
                        ])
                    }
                }
            }
            Swift.print(Output.table(["PATH", "PLACEMENT", "ROUND", "DIRECT", "KILN", "NGINX"], rows))
            Swift.print("Median of rounds (overhead: 1 - proxy/direct requests per second in the same round; CPU: per request):")
            Swift.print(Output.table(
                ["PATH", "PLACEMENT", "INSTANCE CORES", "KILN OVERHEAD", "NGINX OVERHEAD", "KILN CPU", "NGINX CPU", "SERVICE CPU"],
                report.paths.flatMap { path in
                    path.placements.map { result in
                        [path.path, result.placement.rawValue, cores(result.instanceCores), percent(result.gatewayOverhead), percent(result.nginxOverhead),
                         cpu(result.gatewayCpuMsPerRequest), cpu(result.nginxCpuMsPerRequest), cpu(result.instanceCpuMsPerRequest)]
                    }
                }))
            for placement in CPUPlacement.allCases {
                let results = report.paths.flatMap { path in path.placements.filter { $0.placement == placement }.map { (path.path, $0) } }
                guard !results.isEmpty else { continue }
                Swift.print("\(placement.rawValue): \(placement.summary)")
                for (path, result) in results {
                    Swift.print(
                        "  target: gateway overhead <= 15% of throughput on \(path): \(result.gatewayOverhead <= 0.15 ? "met" : "not met") "
                            + "(kiln \(percent(result.gatewayOverhead)), nginx \(percent(result.nginxOverhead)))")
                }
            }
            Swift.print(report.notes)
        }
    }
}

extension CPUPlacement: ExpressibleByArgument {}
