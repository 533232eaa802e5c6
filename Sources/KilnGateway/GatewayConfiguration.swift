import Foundation
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import NIOCore

/// How one function's instances scale: the knobs of `kiln serve` and of the admin API's
/// `PUT /functions/NAME/scale`. A value type, so a pool's policy can be swapped whole.
public struct ScalingPolicy: Codable, Sendable, Equatable {
    /// Instances kept running even when idle (0 = scale to zero).
    public var minInstances: Int
    /// Upper bound on instances, counting those still starting.
    public var maxInstances: Int
    /// Requests one instance serves at once. A JVM web service handles a handful of concurrent
    /// requests per core well; beyond that they only queue inside it, where the gateway can no
    /// longer move them to another instance, so the default is small.
    public var concurrency: Int
    /// An instance that has served nothing for this long is stopped (down to ``minInstances``).
    public var keepAliveSeconds: Double
    /// Requests that may wait for an instance, per function; more get 503 at once.
    public var queueLimit: Int
    /// How long a request may wait for an instance (a restore included) before it gets 503.
    public var queueTimeoutSeconds: Double
    /// Standby copies kept per function: restored ahead of demand and frozen, thawed when a
    /// request finds no instance with room, then replaced in the background. Default 0: a
    /// standby copy holds memory and a network address for a function that may never be called,
    /// and a gateway serves every snapshot of its store; an operator asks for them per function
    /// (`--standby NAME=N`), where a few milliseconds at zero are worth it.
    public var standby: Int
    /// The most memory (PSS) the function's standby copies may hold together; nil: no limit but
    /// ``standby``.
    public var standbyMemoryBytes: Int?

    public init(
        minInstances: Int = 0, maxInstances: Int = 4, concurrency: Int = 8, keepAliveSeconds: Double = 60,
        queueLimit: Int = 256, queueTimeoutSeconds: Double = 30, standby: Int = 0, standbyMemoryBytes: Int? = nil
    ) {
        self.standby = standby
        self.standbyMemoryBytes = standbyMemoryBytes
        self.minInstances = minInstances
        self.maxInstances = maxInstances
        self.concurrency = concurrency
        self.keepAliveSeconds = keepAliveSeconds
        self.queueLimit = queueLimit
        self.queueTimeoutSeconds = queueTimeoutSeconds
    }

    /// Most instances per function.
    public static let maximumInstances = 256
    /// Most requests one instance may serve at once. The pool adds up the room of its instances
    /// (up to ``maximumInstances`` times this), which must not overflow.
    public static let maximumConcurrency = 10_000

    /// Rejects settings that cannot work, naming the one at fault.
    public func validate() throws {
        func invalid(_ message: String) -> KilnError {
            KilnError(.invalidArgument, message, hint: "e.g. min 0, max 4, concurrency 8, keep-alive 60 s")
        }
        guard minInstances >= 0 else { throw invalid("min instances must be 0 or more (got \(minInstances))") }
        guard (1...Self.maximumInstances).contains(maxInstances) else {
            throw invalid("max instances must be 1-\(Self.maximumInstances) (got \(maxInstances))")
        }
        guard minInstances <= maxInstances else { throw invalid("min instances (\(minInstances)) exceeds max instances (\(maxInstances))") }
        guard (1...Self.maximumConcurrency).contains(concurrency) else {
            throw invalid("concurrency must be 1-\(Self.maximumConcurrency) (got \(concurrency))")
        }
        guard InputValidation.isSeconds(keepAliveSeconds, allowZero: true) else {
            throw invalid("keep-alive must be 0 to a year in seconds (got \(keepAliveSeconds))")
        }
        guard queueLimit >= 0 else { throw invalid("queue limit must not be negative") }
        guard (0...Self.maximumInstances).contains(standby) else {
            throw invalid("standby copies must be 0-\(Self.maximumInstances) (got \(standby))")
        }
        if let standbyMemoryBytes, standbyMemoryBytes <= 0 { throw invalid("the standby memory budget must be positive") }
        guard InputValidation.isSeconds(queueTimeoutSeconds) else {
            throw invalid("queue timeout must be positive and at most a year in seconds (got \(queueTimeoutSeconds))")
        }
    }

    var keepAlive: Duration { .seconds(keepAliveSeconds) }
    var queueTimeout: Duration { .seconds(queueTimeoutSeconds) }
}

/// A partial update of a ``ScalingPolicy`` (the admin API's scale request): absent fields keep
/// their value.
public struct ScalingPolicyUpdate: Codable, Sendable, Equatable {
    public var min: Int?
    public var max: Int?
    public var concurrency: Int?
    public var keepAliveSeconds: Double?
    public var standby: Int?

    public init(min: Int? = nil, max: Int? = nil, concurrency: Int? = nil, keepAliveSeconds: Double? = nil, standby: Int? = nil) {
        self.standby = standby
        self.min = min
        self.max = max
        self.concurrency = concurrency
        self.keepAliveSeconds = keepAliveSeconds
    }

    public func applied(to policy: ScalingPolicy) -> ScalingPolicy {
        var updated = policy
        if let min { updated.minInstances = min }
        if let max { updated.maxInstances = max }
        if let concurrency { updated.concurrency = concurrency }
        if let keepAliveSeconds { updated.keepAliveSeconds = keepAliveSeconds }
        if let standby { updated.standby = standby }
        return updated
    }
}

/// A `host:port` to listen on.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    /// 0 picks a free port (tests).
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `127.0.0.1:8080`, `[::1]:8080` or `:8080` (loopback). The host is a name or an
    /// address (IPv6 in brackets): no whitespace, control characters, `/` or stray brackets.
    public init(parsing text: String) throws {
        let invalid = KilnError(.invalidArgument, "'\(text)' is not HOST:PORT", hint: "e.g. --listen 127.0.0.1:8080 or --listen [::1]:8080")
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), port == 0 || InputValidation.isServicePort(port)
        else {
            throw invalid
        }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]"), host.count >= 2 { host = host.dropFirst().dropLast() }
        guard !host.utf8.contains(where: { InputValidation.isSpaceOrControl($0) || "[]/".utf8.contains($0) }) else { throw invalid }
        self.init(host: host.isEmpty ? "127.0.0.1" : String(host), port: port)
    }

    /// Whether only this machine can reach it. The admin API has no authentication, so it must
    /// listen on loopback: `localhost`, or an address literal in 127.0.0.0/8 or `::1`. (A name
    /// that merely starts with `127.`, like `127.0.0.1.example.com`, can resolve anywhere.)
    public var isLoopback: Bool {
        if host == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        return withUnsafeBytes(of: &v6) { $0.elementsEqual([UInt8](repeating: 0, count: 15) + [1]) }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Everything `kiln serve` is told: where to listen, how functions scale, how patient to be.
public struct GatewayConfiguration: Sendable {
    /// The public front door: `/<function>/<path>` and `Host: <function>.<domain>`.
    public var listen: ListenAddress
    /// The admin API and `/metrics`; never served on the public listener.
    public var admin: ListenAddress
    /// The policy of every function without one of its own.
    public var defaultPolicy: ScalingPolicy
    /// Per-function policies (e.g. `--warm hello=2`).
    public var policies: [String: ScalingPolicy]
    /// How long an instance may take to answer one forwarded request.
    public var requestTimeout: Duration
    /// Attempts per request when an instance cannot be reached (the first one included).
    public var maxAttempts: Int
    /// Largest request body the gateway buffers (it buffers so a retry can resend it).
    public var maxBodyBytes: Int
    /// How often each function's instances are checked: queue deadlines, dead processes, idle
    /// keep-alive, min warm instances.
    public var maintenanceInterval: Duration
    /// After both a restore and the cold start behind it failed, requests that find no instance
    /// get 503 at once for this long instead of each starting another doomed launch.
    public var launchFailureBackoff: Duration
    /// After a snapshot failed verification it is not used; it is verified again after this long
    /// (so a re-baked snapshot is picked up).
    public var verificationRetry: Duration
    /// An instance that could not be reached twice in a row (its process still there) gets no
    /// new requests for this long.
    public var quarantine: Duration
    /// How long `restoreOne` waits for a restored copy's readiness path.
    public var readinessTimeout: Duration
    /// When every function's standby copies run their afterRestore (`kiln serve --standby-mode`).
    public var standbyMode: StandbyMode
    /// Threads (event loops) of the public listener; each request and its exchange with the
    /// instance stay on one of them. See ``defaultListenerThreads``.
    public var listenerThreads: Int
    /// Most memory the gateway locks in the page cache, on a host that pages idle memory out, so
    /// that restores and thaws after a quiet minute do not read their files back from disk
    /// (`kiln serve --hold-pages`; 0: nothing is held; nil:
    /// ``KilnInstanceProvider/defaultPageHoldBudgetBytes``).
    public var pageHoldBudgetBytes: Int?

    /// A quarter of the cores, at least one. The gateway shares its machine with the instances
    /// it runs, and a few loops batch more work per wake-up than many: measured on 2 cores
    /// under `wrk`, one loop cost 40-45 µs of CPU per proxied request where two cost 55-74 µs
    /// (two threads also wake each other and share the pools' locks and counters). One loop
    /// forwards some 25,000 small requests a second.
    public static var defaultListenerThreads: Int { max(1, System.coreCount / 4) }

    public init(
        listen: ListenAddress = ListenAddress(host: "127.0.0.1", port: 8080),
        admin: ListenAddress = ListenAddress(host: "127.0.0.1", port: 8081),
        defaultPolicy: ScalingPolicy = ScalingPolicy(), policies: [String: ScalingPolicy] = [:],
        requestTimeout: Duration = .seconds(60), maxAttempts: Int = 3, maxBodyBytes: Int = 8 << 20,
        maintenanceInterval: Duration = .milliseconds(100), launchFailureBackoff: Duration = .seconds(5),
        verificationRetry: Duration = .seconds(30), quarantine: Duration = .milliseconds(500), readinessTimeout: Duration = .seconds(30),
        listenerThreads: Int = GatewayConfiguration.defaultListenerThreads, standbyMode: StandbyMode = .thaw,
        pageHoldBudgetBytes: Int? = nil
    ) {
        self.pageHoldBudgetBytes = pageHoldBudgetBytes
        self.standbyMode = standbyMode
        self.listen = listen
        self.admin = admin
        self.defaultPolicy = defaultPolicy
        self.policies = policies
        self.requestTimeout = requestTimeout
        self.maxAttempts = maxAttempts
        self.maxBodyBytes = maxBodyBytes
        self.maintenanceInterval = maintenanceInterval
        self.launchFailureBackoff = launchFailureBackoff
        self.verificationRetry = verificationRetry
        self.quarantine = quarantine
        self.readinessTimeout = readinessTimeout
        self.listenerThreads = listenerThreads
    }

    public func policy(for function: String) -> ScalingPolicy { policies[function] ?? defaultPolicy }

    /// More listener threads than this are never useful (and a typo's thousands would exhaust
    /// the process).
    public static let maximumListenerThreads = 256

    public func validate() throws {
        try defaultPolicy.validate()
        for policy in policies.values { try policy.validate() }
        guard admin.isLoopback else {
            throw KilnError(
                .invalidArgument, "the admin API must listen on loopback, not \(admin)",
                hint: "it can scale, drain and bake without authentication: use --admin 127.0.0.1:PORT")
        }
        guard listen != admin || listen.port == 0 else {
            throw KilnError(.invalidArgument, "--listen and --admin are both \(listen)", hint: "give the admin API its own port")
        }
        guard maxAttempts >= 1 else { throw KilnError(.invalidArgument, "max attempts must be 1 or more") }
        guard (1...Self.maximumListenerThreads).contains(listenerThreads) else {
            throw KilnError(
                .invalidArgument, "the listener needs 1-\(Self.maximumListenerThreads) threads (got \(listenerThreads))",
                hint: "e.g. --threads \(Self.defaultListenerThreads) (this machine's default)")
        }
        if let pageHoldBudgetBytes, pageHoldBudgetBytes < 0 {
            throw KilnError(
                .invalidArgument, "the held pages' budget must be 0 or more MiB (got \(pageHoldBudgetBytes >> 20))",
                hint: "e.g. --hold-pages 2048, or --hold-pages 0 to hold nothing")
        }
        guard requestTimeout > .zero, requestTimeout <= .seconds(InputValidation.maximumSeconds) else {
            throw KilnError(
                .invalidArgument, "the request timeout must be positive and at most a year (got \(requestTimeout))", hint: "e.g. --request-timeout 60"
            )
        }
    }

    /// The configuration `kiln serve` is given on its command line, parsed and validated:
    /// addresses as HOST:PORT, `--warm NAME=N` entries (a function kept at N warm instances; its
    /// max raised to N if need be), seconds as the CLI takes them.
    public static func parsing(
        listen: String, admin: String, defaultPolicy: ScalingPolicy, warm: [String] = [], standby: [String] = [],
        requestTimeoutSeconds: Double = 60, listenerThreads: Int? = nil, standbyMode: StandbyMode = .thaw, holdPagesMiB: Int? = nil
    ) throws -> GatewayConfiguration {
        var policies: [String: ScalingPolicy] = [:]
        for entry in warm {
            let setting = try WarmSetting(parsing: entry)
            var warmed = defaultPolicy
            warmed.minInstances = setting.count
            warmed.maxInstances = Swift.max(defaultPolicy.maxInstances, setting.count)
            policies[setting.function] = warmed
        }
        for entry in standby {
            let setting = try WarmSetting(parsing: entry, option: "--standby")
            policies[setting.function, default: defaultPolicy].standby = setting.count
        }
        guard InputValidation.isSeconds(requestTimeoutSeconds) else {
            throw KilnError(
                .invalidArgument, "the request timeout must be positive and at most a year (got \(requestTimeoutSeconds) s)",
                hint: "e.g. --request-timeout 60")
        }
        let configuration = GatewayConfiguration(
            listen: try ListenAddress(parsing: listen), admin: try ListenAddress(parsing: admin), defaultPolicy: defaultPolicy,
            policies: policies, requestTimeout: .seconds(requestTimeoutSeconds), listenerThreads: listenerThreads ?? Self.defaultListenerThreads,
            standbyMode: standbyMode,
            pageHoldBudgetBytes: try holdPagesMiB.map { mib in
                // Checked here, before the shift: a typo's huge number must not wrap around.
                guard (0...(1 << 40)).contains(mib) else {
                    throw KilnError(
                        .invalidArgument, "--hold-pages must be 0 to \(1 << 40) MiB (got \(mib))",
                        hint: "e.g. --hold-pages 2048, or --hold-pages 0 to hold nothing")
                }
                return mib << 20
            })
        try configuration.validate()
        return configuration
    }
}

/// `--warm NAME=N`: keep N instances of a function running from the start (`NAME` alone: 1).
public struct WarmSetting: Sendable, Equatable, CustomStringConvertible {
    public var function: String
    public var count: Int

    public init(function: String, count: Int) {
        self.function = function
        self.count = count
    }

    /// Parses `NAME=N` (or `NAME`: 1) given to `option` (`--warm`, `--standby`).
    public init(parsing text: String, option: String = "--warm") throws {
        let invalid = { (problem: String) in
            KilnError(.invalidArgument, "\(option) '\(text)' \(problem)", hint: "write it as NAME=N, e.g. \(option) hello=2")
        }
        let (name, countText): (Substring, Substring) =
            if let equals = text.firstIndex(of: "=") { (text[..<equals], text[text.index(after: equals)...]) } else { (text[...], "1") }
        guard (try? SnapshotStore.validate(name: String(name))) != nil else { throw invalid("does not start with a snapshot name") }
        guard let count = Int(countText), (1...ScalingPolicy.maximumInstances).contains(count) else {
            throw invalid("needs a count of 1-\(ScalingPolicy.maximumInstances) instances")
        }
        self.init(function: String(name), count: count)
    }

    public var description: String { "\(function)=\(count)" }
}
