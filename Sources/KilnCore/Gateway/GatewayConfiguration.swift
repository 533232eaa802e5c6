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

    public init(
        minInstances: Int = 0, maxInstances: Int = 4, concurrency: Int = 8, keepAliveSeconds: Double = 60,
        queueLimit: Int = 256, queueTimeoutSeconds: Double = 30
    ) {
        self.minInstances = minInstances
        self.maxInstances = maxInstances
        self.concurrency = concurrency
        self.keepAliveSeconds = keepAliveSeconds
        self.queueLimit = queueLimit
        self.queueTimeoutSeconds = queueTimeoutSeconds
    }

    /// Rejects settings that cannot work, naming the one at fault.
    public func validate() throws {
        func invalid(_ message: String) -> KilnError {
            KilnError(.invalidArgument, message, hint: "e.g. min 0, max 4, concurrency 8, keep-alive 60 s")
        }
        guard minInstances >= 0 else { throw invalid("min instances must be 0 or more (got \(minInstances))") }
        guard maxInstances >= 1, maxInstances <= 256 else { throw invalid("max instances must be 1-256 (got \(maxInstances))") }
        guard minInstances <= maxInstances else { throw invalid("min instances (\(minInstances)) exceeds max instances (\(maxInstances))") }
        guard concurrency >= 1 else { throw invalid("concurrency must be 1 or more (got \(concurrency))") }
        guard keepAliveSeconds >= 0 else { throw invalid("keep-alive must not be negative") }
        guard queueLimit >= 0 else { throw invalid("queue limit must not be negative") }
        guard queueTimeoutSeconds > 0 else { throw invalid("queue timeout must be positive") }
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

    public init(min: Int? = nil, max: Int? = nil, concurrency: Int? = nil, keepAliveSeconds: Double? = nil) {
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

    /// Parses `127.0.0.1:8080`, `[::1]:8080` or `:8080` (loopback).
    public init(parsing text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw KilnError(.invalidArgument, "'\(text)' is not HOST:PORT", hint: "e.g. --listen 127.0.0.1:8080")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.init(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }

    /// Whether only this machine can reach it. The admin API has no authentication, so it must
    /// listen on loopback.
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
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

    public init(
        listen: ListenAddress = ListenAddress(host: "127.0.0.1", port: 8080),
        admin: ListenAddress = ListenAddress(host: "127.0.0.1", port: 8081),
        defaultPolicy: ScalingPolicy = ScalingPolicy(), policies: [String: ScalingPolicy] = [:],
        requestTimeout: Duration = .seconds(60), maxAttempts: Int = 3, maxBodyBytes: Int = 8 << 20,
        maintenanceInterval: Duration = .milliseconds(100), launchFailureBackoff: Duration = .seconds(5),
        verificationRetry: Duration = .seconds(30), quarantine: Duration = .milliseconds(500), readinessTimeout: Duration = .seconds(30)
    ) {
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
    }

    public func policy(for function: String) -> ScalingPolicy { policies[function] ?? defaultPolicy }

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
    }
}
