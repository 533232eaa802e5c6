import KilnEngine
import Logging

/// A gateway over kiln's snapshot store, put together the one way `kiln serve`, `kiln bench
/// serve` and `kiln soak` use: instances from ``KilnInstanceProvider`` (restores, with a cold
/// start of the command when a restore fails, unless told not to), requests over a
/// ``PooledInstanceTransport``, the ``Gateway`` deciding, and the ``GatewayServer`` with its
/// public and admin listeners. Run it with ``GatewayServer/run()``; the gateway is its `gateway`.
///
/// - Parameters:
///   - kiln: the store and runtime instances come from; with `ownsInstances`, they die with the
///     gateway.
///   - configuration: listeners, policies and timeouts (its `readinessTimeout` bounds each
///     restore's wait for the service to answer).
///   - coldStartFallback: cold-start the function's command when a restore fails.
///   - idleConnectionsPerInstance: idle connections kept per instance (nil: the transport's
///     default, 32).
///   - stopsOnSignals: SIGTERM and SIGINT start the graceful shutdown (`kiln serve`); without,
///     only ``GatewayServer/shutdown()`` does (benchmarks and tests).
///   - logger: the gateway's log, and that of its launches.
public func buildGateway(
    kiln: Kiln, configuration: GatewayConfiguration, coldStartFallback: Bool = true, idleConnectionsPerInstance: Int? = nil,
    stopsOnSignals: Bool = true, remote: RemoteFunctions = RemoteFunctions(), network: String? = nil, logger: Logger
) -> GatewayServer {
    let provider = KilnInstanceProvider(
        kiln: kiln, readinessTimeout: configuration.readinessTimeout, coldStartFallback: coldStartFallback, remote: remote, logger: logger,
        network: network, standbyMode: configuration.standbyMode, pageHoldBudgetBytes: configuration.pageHoldBudgetBytes)
    let transport = idleConnectionsPerInstance.map { PooledInstanceTransport(maxIdlePerInstance: $0) } ?? PooledInstanceTransport()
    let gateway = Gateway(configuration: configuration, provider: provider, transport: transport, logger: logger)
    return stopsOnSignals ? GatewayServer(gateway: gateway, logger: logger) : GatewayServer(gateway: gateway, signals: [], logger: logger)
}
