import ArgumentParser
import Foundation
import KilnEngine
import KilnGateway
import KilnSnapshot
import Logging

/// `kiln serve`: the HTTP gateway. It restores functions (snapshots) on demand, scales them out
/// under load and to zero when idle, and serves the admin API and /metrics.
struct Serve: AsyncParsableCommand, ReportingCommand, HandlesStopSignals {
    static let configuration = CommandConfiguration(
        commandName: "serve",
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

    @Option(
        help: ArgumentHelp(
            "Keep N standby copies of a function, NAME=N (repeatable; default 0): restored ahead of demand and frozen, thawed in milliseconds when a request finds no instance, then replaced in the background.",
            valueName: "name=n"))
    var standby: [String] = []

    @Option(help: ArgumentHelp("Most memory (PSS) the standby copies of one function may hold together, in MiB.", valueName: "mib"))
    var standbyMemory: Int?

    @Option(help: ArgumentHelp(StandbyMode.help, valueName: "mode"))
    var standbyMode: StandbyMode = .thaw

    @Option(
        help: ArgumentHelp(
            "Most memory, in MiB, the gateway locks in the page cache on a host that pages idle memory out (kiln doctor says whether it does), so restores and thaws after a quiet minute need no disk reads; the functions restored longest ago are let go first (default: a quarter of the host's memory; 0: hold nothing).",
            valueName: "mib"))
    var holdPages: Int?

    @Option(help: "Threads forwarding requests (default: a quarter of the cores, at least 1; the instances need the rest).")
    var threads: Int?

    @Flag(help: "When a restore fails, answer 503 instead of cold-starting the function's command.")
    var noColdStartFallback = false

    @Option(
        help: ArgumentHelp(
            "Pull function NAME from this registry reference on its first request when the store lacks it (repeatable); see kiln pull.",
            valueName: "NAME=HOST[:PORT]/REPO[:TAG]"))
    var pull: [String] = []

    @Option(help: "Functions pulled with --pull must be signed by this public key (KEYFILE.pub of kiln keygen --signing; repeatable: any of them).")
    var verify: [String] = []

    @OptionGroup var registry: RegistryOptions

    @OptionGroup var networkOption: RestoreNetworkOption

    @OptionGroup var keys: KeyOptions

    @OptionGroup var common: CommonOptions

    func run() async throws {
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
            logger.notice(
                "removed what a previous kiln left behind",
                metadata: [
                    "instances": "\(garbage.instances)", "containers": "\(garbage.containers)",
                    "network_namespaces": "\(garbage.networkNamespaces.count)", "directories": "\(garbage.directories.count)",
                    "cgroups": "\(garbage.cgroups.count)",
                ])
        }
        let server = buildGateway(
            kiln: kiln, configuration: configuration, coldStartFallback: !noColdStartFallback,
            idleConnectionsPerInstance: max(concurrency, 8), remote: remote, network: networkOption.network, logger: logger)
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

    func makeConfiguration() throws -> GatewayConfiguration {
        let policy = ScalingPolicy(
            minInstances: minInstances, maxInstances: maxInstances, concurrency: concurrency, keepAliveSeconds: keepAlive,
            queueLimit: queueLimit, queueTimeoutSeconds: queueTimeout, standbyMemoryBytes: standbyMemory.map { $0 << 20 })
        return try GatewayConfiguration.parsing(
            listen: listen, admin: admin, defaultPolicy: policy, warm: warm, standby: standby, requestTimeoutSeconds: requestTimeout,
            listenerThreads: threads, standbyMode: standbyMode, holdPagesMiB: holdPages)
    }
}
