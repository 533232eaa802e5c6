import CoreMetrics
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Prometheus
import Synchronization

/// The gateway's Prometheus metrics, served as text on the admin listener's `/metrics`.
///
/// Metrics are made through swift-metrics with an explicit factory over a registry of the
/// gateway's own, never through `MetricsSystem.bootstrap`: that is global and once per process,
/// and tests run several gateways in one process.
public final class GatewayMetrics: Sendable {
    /// How a request through the gateway ended (the `outcome` label).
    public enum Outcome: String, Sendable, CaseIterable {
        /// The service answered (whatever its status).
        case answered
        /// It waited for an instance longer than the queue timeout.
        case queueTimeout = "queue_timeout"
        /// The function's queue was full.
        case queueFull = "queue_full"
        /// No instance could be had: the snapshot failed verification, or launches are failing.
        case unavailable
        /// The instance failed to answer (connection lost, response cut short).
        case upstreamError = "upstream_error"
        /// The instance took longer than the request timeout.
        case upstreamTimeout = "upstream_timeout"
        /// The gateway is shutting down.
        case shuttingDown = "shutting_down"
    }

    /// The states of the `kiln_gateway_instances` gauge: those of the admin API.
    public typealias InstanceState = GatewayInstanceState

    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let perFunction = Mutex<[String: FunctionMetrics]>([:])
    let unknownFunctionRequests: CoreMetrics.Counter
    private let heldProgramBytes: CoreMetrics.Gauge
    private let heldPageBudgetBytes: CoreMetrics.Gauge

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        // Restores take 0.1-1 s, cold starts seconds; requests take milliseconds.
        factory.durationHistogramBuckets = [
            "kiln_gateway_restore_duration_seconds": [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30].map { .milliseconds(Int($0 * 1000)) },
            "kiln_gateway_standby_restore_duration_seconds": [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30].map {
                .milliseconds(Int($0 * 1000))
            },
            "kiln_gateway_thaw_duration_seconds": [0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1].map {
                .microseconds(Int($0 * 1_000_000))
            },
            "kiln_gateway_cold_start_duration_seconds": [0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60].map { .milliseconds(Int($0 * 1000)) },
            "kiln_gateway_request_duration_seconds": [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map {
                .microseconds(Int($0 * 1_000_000))
            },
        ]
        self.factory = factory
        unknownFunctionRequests = CoreMetrics.Counter(label: "kiln_gateway_unknown_function_requests_total", factory: factory)
        heldProgramBytes = CoreMetrics.Gauge(label: "kiln_gateway_held_program_bytes", factory: factory)
        heldPageBudgetBytes = CoreMetrics.Gauge(label: "kiln_gateway_held_page_budget_bytes", factory: factory)
    }

    /// Records what the provider holds against the host's idle page-out (at each scrape: pins
    /// come and go in the background). A function whose pin was let go shows 0.
    func record(_ usage: HeldPageUsage) {
        for name in Set(usage.functions.keys).union(perFunction.withLock { Array($0.keys) }) {
            function(name).heldPages.record(usage.functions[name] ?? 0)
        }
        heldProgramBytes.record(usage.programs)
        heldPageBudgetBytes.record(usage.budget)
    }

    /// The metrics of one function, made once and reused (a lookup in the registry per request
    /// would take its lock).
    func function(_ name: String) -> FunctionMetrics {
        perFunction.withLock { table in
            if let existing = table[name] { return existing }
            let made = FunctionMetrics(function: name, factory: factory)
            table[name] = made
            return made
        }
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}

/// The metric handles of one function, labelled `function=NAME`.
final class FunctionMetrics: Sendable {
    let restoresSucceeded: CoreMetrics.Counter
    let restoresFailed: CoreMetrics.Counter
    let restoreDuration: CoreMetrics.Timer
    let coldStartFallbacksSucceeded: CoreMetrics.Counter
    let coldStartFallbacksFailed: CoreMetrics.Counter
    let coldStartDuration: CoreMetrics.Timer
    let verificationFailures: CoreMetrics.Counter
    let instanceFailures: CoreMetrics.Counter
    let retries: CoreMetrics.Counter
    let queueLength: CoreMetrics.Gauge
    let instances: [GatewayMetrics.InstanceState: CoreMetrics.Gauge]
    let requestDurations: [GatewayMetrics.Outcome: CoreMetrics.Timer]
    /// Answered requests by how they were answered (``ServedBy``).
    let served: [ServedBy: CoreMetrics.Counter]
    let standbyRestores: CoreMetrics.Counter
    let standbyRestoresFailed: CoreMetrics.Counter
    let standbyRestoreDuration: CoreMetrics.Timer
    let thaws: CoreMetrics.Counter
    let thawsFailed: CoreMetrics.Counter
    /// From the thaw to the copy's first response (identity and afterRestore included).
    let thawDuration: CoreMetrics.Timer
    let standbyCopies: [StandbyGauge: CoreMetrics.Gauge]
    /// The standby copies' memory (PSS measured once each was frozen), together.
    let standbyMemory: CoreMetrics.Gauge
    /// Page cache pages held (locked) for the function's restores against the host's idle
    /// page-out (``HeldPageUsage``).
    let heldPages: CoreMetrics.Gauge

    /// The states of the `kiln_gateway_standby_copies` gauge.
    enum StandbyGauge: String, CaseIterable {
        case ready, starting, thawing
    }
    /// `requestDurations[.answered]`, looked up once: nearly every request ends so.
    private let answeredDurations: CoreMetrics.Timer?

    init(function: String, factory: MetricsFactory) {
        let label = [("function", function)]
        restoresSucceeded = CoreMetrics.Counter(label: "kiln_gateway_restores_total", dimensions: label + [("result", "ok")], factory: factory)
        restoresFailed = CoreMetrics.Counter(label: "kiln_gateway_restores_total", dimensions: label + [("result", "failed")], factory: factory)
        restoreDuration = CoreMetrics.Timer(label: "kiln_gateway_restore_duration_seconds", dimensions: label, factory: factory)
        coldStartFallbacksSucceeded = CoreMetrics.Counter(
            label: "kiln_gateway_cold_start_fallbacks_total", dimensions: label + [("result", "ok")], factory: factory)
        coldStartFallbacksFailed = CoreMetrics.Counter(
            label: "kiln_gateway_cold_start_fallbacks_total", dimensions: label + [("result", "failed")], factory: factory)
        coldStartDuration = CoreMetrics.Timer(label: "kiln_gateway_cold_start_duration_seconds", dimensions: label, factory: factory)
        verificationFailures = CoreMetrics.Counter(label: "kiln_gateway_verification_failures_total", dimensions: label, factory: factory)
        instanceFailures = CoreMetrics.Counter(label: "kiln_gateway_instance_failures_total", dimensions: label, factory: factory)
        retries = CoreMetrics.Counter(label: "kiln_gateway_retries_total", dimensions: label, factory: factory)
        queueLength = CoreMetrics.Gauge(label: "kiln_gateway_queue_length", dimensions: label, factory: factory)
        var instances: [GatewayMetrics.InstanceState: CoreMetrics.Gauge] = [:]
        for state in GatewayMetrics.InstanceState.allCases {
            instances[state] = CoreMetrics.Gauge(label: "kiln_gateway_instances", dimensions: label + [("state", state.rawValue)], factory: factory)
        }
        self.instances = instances
        var durations: [GatewayMetrics.Outcome: CoreMetrics.Timer] = [:]
        for outcome in GatewayMetrics.Outcome.allCases {
            durations[outcome] = CoreMetrics.Timer(
                label: "kiln_gateway_request_duration_seconds", dimensions: label + [("outcome", outcome.rawValue)], factory: factory)
        }
        requestDurations = durations
        answeredDurations = durations[.answered]
        var served: [ServedBy: CoreMetrics.Counter] = [:]
        for way in ServedBy.allCases {
            served[way] = CoreMetrics.Counter(
                label: "kiln_gateway_requests_served_total", dimensions: label + [("served_by", way.rawValue)], factory: factory)
        }
        self.served = served
        standbyRestores = CoreMetrics.Counter(label: "kiln_gateway_standby_restores_total", dimensions: label + [("result", "ok")], factory: factory)
        standbyRestoresFailed = CoreMetrics.Counter(
            label: "kiln_gateway_standby_restores_total", dimensions: label + [("result", "failed")], factory: factory)
        standbyRestoreDuration = CoreMetrics.Timer(label: "kiln_gateway_standby_restore_duration_seconds", dimensions: label, factory: factory)
        thaws = CoreMetrics.Counter(label: "kiln_gateway_thaws_total", dimensions: label + [("result", "ok")], factory: factory)
        thawsFailed = CoreMetrics.Counter(label: "kiln_gateway_thaws_total", dimensions: label + [("result", "failed")], factory: factory)
        thawDuration = CoreMetrics.Timer(label: "kiln_gateway_thaw_duration_seconds", dimensions: label, factory: factory)
        var copies: [StandbyGauge: CoreMetrics.Gauge] = [:]
        for state in StandbyGauge.allCases {
            copies[state] = CoreMetrics.Gauge(label: "kiln_gateway_standby_copies", dimensions: label + [("state", state.rawValue)], factory: factory)
        }
        standbyCopies = copies
        standbyMemory = CoreMetrics.Gauge(label: "kiln_gateway_standby_memory_bytes", dimensions: label, factory: factory)
        heldPages = CoreMetrics.Gauge(label: "kiln_gateway_held_page_bytes", dimensions: label, factory: factory)
    }

    func recordRequest(_ outcome: GatewayMetrics.Outcome, _ duration: Duration) {
        (outcome == .answered ? answeredDurations : requestDurations[outcome])?.recordInterval(duration)
    }
}

extension CoreMetrics.Timer {
    func recordInterval(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
