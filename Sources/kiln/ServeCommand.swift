import ArgumentParser
import Foundation
import KilnCore
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

    @OptionGroup var keys: KeyOptions

    @OptionGroup var common: CommonOptions

    func run() async throws {
        try await reporting(common) {
            var logger = Logger(label: "kiln.gateway") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = common.verbose ? .debug : .info
            // runc and CRIU calls are logged only with -v, as in every other command.
            let keyring = try keys.keyring()
            var kiln = try Kiln.open(logger: common.makeLogger(), toDo: "run the gateway")
            kiln.keys = keyring
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
            let configuration = try makeConfiguration()
            let gateway = Gateway(
                configuration: configuration, provider: KilnInstanceProvider(
                    kiln: kiln, readinessTimeout: configuration.readinessTimeout, coldStartFallback: !noColdStartFallback, logger: logger),
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

        @Option(help: "Path of the throughput runs (as the service sees it).")
        var path = "/greet"

        @Option(help: "Concurrent keep-alive connections of the load generator.")
        var connections = 8

        @Option(help: "Seconds per throughput run.")
        var seconds: Double = 3

        @Option(help: "Throughput rounds (each: one direct run and one through the gateway, alternating which goes first).")
        var rounds = 6

        @OptionGroup var keys: KeyOptions

        @OptionGroup var common: CommonOptions

        func run() async throws {
            try await reporting(common) {
                let kiln = try common.openKiln(toDo: "measure the gateway", keys: keys)
                let (manifest, _) = try kiln.loadVerified(name)
                let json = common.json
                let report = try await kiln.benchmarkGateway(
                    manifest, trials: trials, loadPath: path, connections: connections, seconds: seconds, rounds: rounds
                ) { line in
                    if !json { Output.progress(line) }
                }
                if json {
                    Output.printJSON(report)
                    return
                }
                func row(_ label: String, _ p: Percentiles) -> [String] {
                    [label, String(p.count), Output.ms(p.min), Output.ms(p.p50), Output.ms(p.p99), Output.ms(p.max)]
                }
                print("")
                print("First request to '\(report.snapshot)' at zero instances (GET \(report.firstRequestPath)), each trial from zero:")
                print(Output.table(["WHAT", "TRIALS", "MIN", "P50", "P99", "MAX"], [
                    row("bare restore (restoreOne to first 2xx)", report.bareRestore),
                    row("first request through the gateway", report.firstRequest),
                ]))
                print(String(format: "first request p50 / bare restore p50 = %.2fx (target <= 3x)", report.firstRequestOverRestore))
                print("")
                print("Steady state, GET \(report.loadPath), \(report.connections) keep-alive connections, one instance:")
                var rows: [[String]] = []
                for (index, (direct, gateway)) in zip(report.direct, report.throughGateway).enumerated() {
                    for (label, run) in [("\(index + 1) direct", direct), ("\(index + 1) gateway", gateway)] {
                        rows.append([
                            label, String(format: "%.0f", run.requestsPerSecond), Output.ms(run.p50Ms), Output.ms(run.p99Ms), String(run.failures),
                            String(format: "%.3f ms", run.kilnCpuMsPerRequest), String(format: "%.3f ms", run.instanceCpuMsPerRequest),
                        ])
                    }
                }
                print(Output.table(["ROUND", "REQ/S", "P50", "P99", "FAILED", "KILN CPU/REQ", "INSTANCE CPU/REQ"], rows))
                print(String(format: "gateway overhead: %.1f%% of direct throughput over all rounds, %.1f%% median of rounds (target <= 15%%)",
                             report.gatewayOverhead * 100, report.gatewayOverheadMedianOfRounds * 100))
                print(String(format: "gateway CPU: %.3f ms per request (median over rounds); CPU-bound overhead it predicts: %.1f%%",
                             report.gatewayCpuMsPerRequest, report.cpuBoundOverhead * 100))
                if let wrk = report.externalClient {
                    print(String(
                        format: "with an external client (%@, its own process): %.0f-%.0f req/s through the gateway vs %.0f-%.0f direct: overhead %.1f%% median of rounds (target <= 15%%)",
                        wrk.client, wrk.throughGateway.min() ?? 0, wrk.throughGateway.max() ?? 0, wrk.direct.min() ?? 0, wrk.direct.max() ?? 0,
                        wrk.overheadMedianOfRounds * 100))
                }
                print(report.notes)
            }
        }
    }
}
