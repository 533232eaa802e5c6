import Foundation
import HTTPTypes
import Logging
import NIOCore
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("gateway queueing and scaling (fake instances)")
struct GatewayScalingTests {
    @Test func concurrentFirstRequestsShareOneRestore() async throws {
        // More first requests than one instance takes at once: still one restore (and one
        // verification); the rest wait for it, then for the scale-up it triggers.
        try await withFakeGateway(policy: ScalingPolicy(maxInstances: 4, concurrency: 8), provider: FakeProvider(launchDelay: .milliseconds(200))) {
            gateway, provider, _ in
            let responses = await concurrently(gateway, count: 8) { GatewayRequest(.get, "/hello/greet") }
            #expect(responses.allSatisfy { $0.status == .ok })
            #expect(provider.launches == 1, "8 concurrent first requests must share one restore")
            #expect(provider.prepares == 1, "the snapshot is verified once")
            #expect(Set(responses.compactMap { $0.head.headerFields[Gateway.instanceHeader] }) == ["hello-1"])
        }
    }

    @Test func burstFromZeroRestoresOnceThenScalesUp() async throws {
        try await withFakeGateway(
            policy: ScalingPolicy(maxInstances: 3, concurrency: 2), provider: FakeProvider(launchDelay: .milliseconds(100)),
            transport: FakeTransport(delay: .milliseconds(300))
        ) { gateway, provider, transport in
            let task = Task { await concurrently(gateway, count: 12) { GatewayRequest(.get, "/hello/greet") } }
            // Until the first instance is up, nothing else is launched. (Launches are read before
            // the status: if no instance existed then, none existed when they were read.)
            while true {
                let launches = provider.launches
                let status = try gateway.function("hello")
                guard status.instances.isEmpty else { break }
                #expect(launches <= 1)
                try await Task.sleep(for: .milliseconds(2))
            }
            let responses = await task.value
            #expect(responses.allSatisfy { $0.status == .ok })
            #expect(provider.launches == 3, "queued requests scale up to max instances, no further")
            #expect(transport.peakInFlight <= 3 * 2, "never more in flight than instances x concurrency")
            let status = try gateway.function("hello")
            #expect(status.instances.count == 3)
            #expect(status.instances.allSatisfy { $0.inFlight == 0 })
        }
    }

    @Test func perInstanceConcurrencyLimitQueuesTheRest() async throws {
        let gate = Gate()
        let transport = FakeTransport()
        transport.behaviour.withLock {
            $0 = { _, _ in
                await gate.wait()
                return nil
            }
        }
        try await withFakeGateway(policy: ScalingPolicy(maxInstances: 1, concurrency: 3), transport: transport) { gateway, _, _ in
            let task = Task { await concurrently(gateway, count: 7) { GatewayRequest(.get, "/hello/greet") } }
            #expect(await eventually { (try? gateway.function("hello"))?.queueLength == 4 })
            let status = try gateway.function("hello")
            #expect(status.instances.first?.inFlight == 3)
            // Leased means sent soon after: wait for the three sends, then check none more came.
            #expect(await eventually { transport.peakInFlight == 3 })
            try await Task.sleep(for: .milliseconds(50))
            #expect(transport.peakInFlight == 3)
            let metrics = String(decoding: gateway.metrics.exposition(), as: UTF8.self)
            #expect(metrics.contains(#"kiln_gateway_queue_length{function="hello"} 4"#))
            gate.open()
            let responses = await task.value
            #expect(responses.allSatisfy { $0.status == .ok })
        }
    }

    @Test func queueTimeoutIs503JSON() async throws {
        let gate = Gate()
        let transport = FakeTransport()
        // Only the first request is held: were the second one to reach the instance (the first
        // timed out in the queue on a starved machine), waiting for it must not block the test.
        transport.behaviour.withLock {
            $0 = { _, request in
                if request.head.uri == "/one" { await gate.wait() }
                return nil
            }
        }
        try await withFakeGateway(policy: ScalingPolicy(maxInstances: 1, concurrency: 1, queueTimeoutSeconds: 0.3), transport: transport) {
            gateway, _, _ in
            // The instance first: from zero, the held request itself would wait for the restore
            // under the same 0.3 s queue timeout, and on a loaded machine time out before it.
            _ = try gateway.scale("hello", ScalingPolicyUpdate(min: 1))
            try #require(await eventually { (try? gateway.function("hello"))?.instances.count == 1 })
            let held = Task { await gateway.handle(GatewayRequest(.get, "/hello/one")) }
            defer { gate.open() }
            // A precondition, not the claim: on a loaded 2-core machine the restore can take a while.
            try #require(await eventually(timeout: .seconds(60)) { (try? gateway.function("hello"))?.instances.first?.inFlight == 1 })
            let started = ContinuousClock.now
            let late = await gateway.handle(GatewayRequest(.get, "/hello/two"))
            let waited = started.duration(to: .now)
            #expect(late.status == .serviceUnavailable)
            #expect(errorBody(late)["code"] == "queue-timeout")
            #expect(errorBody(late)["function"] == "hello")
            #expect(waited >= .milliseconds(250) && waited < .seconds(2))
            gate.open()
            #expect(await held.value.status == .ok)
            let metrics = String(decoding: gateway.metrics.exposition(), as: UTF8.self)
            #expect(metrics.contains(#"kiln_gateway_request_duration_seconds_count{function="hello",outcome="queue_timeout"} 1"#))
        }
    }

    @Test func fullQueueIs503AtOnce() async throws {
        let gate = Gate()
        let transport = FakeTransport()
        // Only the first request is held (it keeps the one slot busy): a later one that reached
        // the instance after all must not block the test.
        transport.behaviour.withLock {
            $0 = { _, request in
                if request.head.uri == "/first" { await gate.wait() }
                return nil
            }
        }
        try await withFakeGateway(policy: ScalingPolicy(maxInstances: 1, concurrency: 1, queueLimit: 2), transport: transport) { gateway, _, _ in
            // From zero even the first request waits (for the restore): get one in flight first.
            let first = Task { await gateway.handle(GatewayRequest(.get, "/hello/first")) }
            defer { gate.open() }
            #expect(await eventually { (try? gateway.function("hello"))?.instances.first?.inFlight == 1 })
            let held = Task { await concurrently(gateway, count: 2) { GatewayRequest(.get, "/hello/x") } }
            #expect(await eventually { (try? gateway.function("hello"))?.queueLength == 2 })
            let rejected = await gateway.handle(GatewayRequest(.get, "/hello/y"))
            #expect(rejected.status == .serviceUnavailable)
            #expect(errorBody(rejected)["code"] == "queue-full")
            gate.open()
            #expect(await first.value.status == .ok)
            #expect(await held.value.allSatisfy { $0.status == .ok })
        }
    }

    @Test func idleInstancesScaleToZeroAfterKeepAlive() async throws {
        try await withFakeGateway(policy: ScalingPolicy(keepAliveSeconds: 0.2)) { gateway, provider, _ in
            // Timed from before the request: its instance is idle from the request's end, which a
            // busy machine may report to this task well after it happened.
            let started = ContinuousClock.now
            #expect(await gateway.handle(GatewayRequest(.get, "/hello/greet")).status == .ok)
            #expect(provider.running == ["hello-1"])
            #expect(await eventually { provider.terminated == ["hello-1"] })
            #expect(started.duration(to: .now) >= .milliseconds(200), "kept for its keep-alive first")
            let status = try gateway.function("hello")
            #expect(status.instances.isEmpty && status.stopping == 0)
            // The next request restores again.
            #expect(await gateway.handle(GatewayRequest(.get, "/hello/greet")).status == .ok)
            #expect(provider.launches == 2)
            #expect(provider.prepares == 1, "verified once per gateway, not per restore")
        }
    }

    @Test func minWarmInstancesStartAtOnceAndStay() async throws {
        try await withFakeGateway(
            policy: ScalingPolicy(keepAliveSeconds: 0.05), policies: ["hello": ScalingPolicy(minInstances: 2, keepAliveSeconds: 0.05)]
        ) { gateway, provider, _ in
            #expect(await eventually { provider.running.count == 2 })
            try await Task.sleep(for: .milliseconds(300))
            #expect(provider.running.count == 2, "min instances are not scaled away")
            #expect(provider.terminated.isEmpty)
            // Lowering the minimum lets them go.
            _ = try gateway.scale("hello", ScalingPolicyUpdate(min: 0))
            #expect(await eventually { provider.running.isEmpty })
        }
    }

    @Test func requestNotSentIsRetriedOnAnotherInstance() async throws {
        let transport = FakeTransport()
        let provider = FakeProvider()
        // hello-1 is dead: connecting to it fails, and its process is gone.
        transport.behaviour.withLock {
            $0 = { instance, _ in
                if instance.id == "hello-1" { throw TransportFailure.notSent("connection refused") }
                return nil
            }
        }
        // No maintenance tick during the test: the gateway learns of the death from the request.
        try await withFakeGateway(
            policy: ScalingPolicy(minInstances: 2), policies: ["hello": ScalingPolicy(minInstances: 2)], provider: provider, transport: transport,
            configure: { $0.maintenanceInterval = .seconds(60) }
        ) { gateway, provider, transport in
            #expect(await eventually { (try? gateway.function("hello"))?.instances.count == 2 })
            provider.kill("hello-1")
            let responses = await concurrently(gateway, count: 4) { GatewayRequest(.post, "/hello/owners") }
            #expect(responses.allSatisfy { $0.status == .ok }, "requests that never reached an instance go to another one, POST included")
            #expect(responses.allSatisfy { $0.head.headerFields[Gateway.instanceHeader] != "hello-1" })
            // The dead one is removed and cleaned up, and replaced to keep the minimum.
            #expect(await eventually { provider.terminated.contains("hello-1") })
            #expect(await eventually { provider.running.count == 2 })
            let metrics = String(decoding: gateway.metrics.exposition(), as: UTF8.self)
            #expect(metricValue(metrics, #"kiln_gateway_retries_total{function="hello"}"#) ?? 0 >= 1, "the request sent to hello-1 was retried")
            #expect(metrics.contains(#"kiln_gateway_instance_failures_total{function="hello"} 1"#))
            _ = transport
        }
    }

    @Test func nonIdempotentRequestThatMayHaveArrivedIsNotRetried() async throws {
        let transport = FakeTransport()
        transport.behaviour.withLock { $0 = { _, _ in throw TransportFailure.noResponse("connection reset") } }
        try await withFakeGateway(transport: transport) { gateway, _, transport in
            let post = await gateway.handle(GatewayRequest(.post, "/hello/owners"))
            #expect(post.status == .badGateway)
            #expect(errorBody(post)["code"] == "instance-failed")
            #expect(errorBody(post)["instance"] == "hello-1")
            #expect(post.head.headerFields[Gateway.instanceHeader] == "hello-1")
            #expect(transport.requests.count == 1, "a POST that may have reached the service is not sent twice")
            let get = await gateway.handle(GatewayRequest(.get, "/hello/greet"))
            #expect(get.status == .badGateway)
            #expect(transport.requests.count == 1 + 3, "an idempotent request is tried up to maxAttempts times")
        }
    }

    @Test func deadInstanceFoundByMaintenanceIsReplacedForWaitingRequests() async throws {
        let provider = FakeProvider()
        try await withFakeGateway(policy: ScalingPolicy(maxInstances: 2), provider: provider) { gateway, provider, _ in
            #expect(await gateway.handle(GatewayRequest(.get, "/hello/a")).status == .ok)
            provider.kill("hello-1")
            #expect(await eventually { provider.terminated == ["hello-1"] })
            #expect(await gateway.handle(GatewayRequest(.get, "/hello/b")).head.headerFields[Gateway.instanceHeader] == "hello-2")
        }
    }

    @Test func snapshotFailingVerificationIsNotUsed() async throws {
        let provider = FakeProvider()
        provider.state.withLock { $0.failPrepare = "image pages-1.img: sha256 mismatch" }
        try await withFakeGateway(provider: provider) { gateway, provider, _ in
            let first = await gateway.handle(GatewayRequest(.get, "/hello/greet"))
            #expect(first.status == .serviceUnavailable)
            #expect(errorBody(first)["code"] == "snapshot-unusable")
            #expect(errorBody(first)["message"]?.contains("sha256 mismatch") == true)
            // Not retried on every request: it stays unusable until verificationRetry.
            let second = await gateway.handle(GatewayRequest(.get, "/hello/greet"))
            #expect(second.status == .serviceUnavailable)
            #expect(provider.prepares == 1)
            #expect(provider.launches == 0)
            let metrics = String(decoding: gateway.metrics.exposition(), as: UTF8.self)
            #expect(metrics.contains(#"kiln_gateway_verification_failures_total{function="hello"} 1"#))
            let state = try gateway.function("hello").state
            #expect(state == .unusable)
        }
    }

    @Test func failedRestoreFallsBackToColdStartAndSaysSo() async throws {
        let provider = FakeProvider()
        provider.state.withLock { $0.failRestore = true }
        try await withFakeGateway(provider: provider) { gateway, _, _ in
            let response = await gateway.handle(GatewayRequest(.get, "/hello/greet"))
            #expect(response.status == .ok)
            let status = try gateway.function("hello")
            #expect(status.coldStarts == 1)
            #expect(status.instances.first?.origin == .coldStart)
            let metrics = String(decoding: gateway.metrics.exposition(), as: UTF8.self)
            #expect(metrics.contains(#"kiln_gateway_cold_start_fallbacks_total{function="hello",result="ok"} 1"#))
            #expect(metrics.contains(#"kiln_gateway_restores_total{function="hello",result="failed"} 1"#))
        }
    }

    @Test func launchesThatFailAnswer503AndBackOff() async throws {
        let provider = FakeProvider()
        provider.state.withLock {
            $0.failRestore = true
            $0.coldStartWorks = false
        }
        try await withFakeGateway(provider: provider) { gateway, provider, _ in
            let first = await gateway.handle(GatewayRequest(.get, "/hello/greet"))
            #expect(first.status == .serviceUnavailable)
            #expect(errorBody(first)["code"] == "launch-failed")
            let second = await gateway.handle(GatewayRequest(.get, "/hello/greet"))
            #expect(second.status == .serviceUnavailable)
            #expect(provider.launches == 1, "within the back-off, no new launch per request")
        }
    }

    @Test func shutdownAnswersWaitersAndStopsEverything() async throws {
        // Long enough that the second launch is still under way when the shutdown comes, on a
        // loaded machine too (300 ms was not always).
        let provider = FakeProvider(launchDelay: .seconds(2))
        try await withFakeGateway(policy: ScalingPolicy(minInstances: 1), provider: provider) { gateway, provider, _ in
            #expect(await eventually { provider.running.count == 1 })
            // A second function mid-launch when the shutdown comes: its instance is stopped too.
            provider.state.withLock { _ = $0.functions.insert("other") }
            let waiting = Task { await gateway.handle(GatewayRequest(.get, "/other/x")) }
            #expect(await eventually { provider.launches == 2 })
            await gateway.shutdown()
            let answer = await waiting.value
            #expect(answer.status == .serviceUnavailable)
            #expect(errorBody(answer)["code"] == "shutting-down")
            #expect(provider.running.isEmpty)
            #expect(Set(provider.terminated) == ["hello-1", "other-2"])
        }
    }

    /// A gateway inside a command that Ctrl-C cancels (`kiln bench serve`) stops what it
    /// started: the instance that was running and the one whose restore was under way.
    @Test(arguments: [Duration.milliseconds(0), .milliseconds(300)])
    func cancellationStopsEveryInstanceTheGatewayStarted(secondLaunchDelay: Duration) async throws {
        let provider = FakeProvider()
        var logger = Logger(label: "gateway-test")
        logger.logLevel = .critical
        let gateway = Gateway(
            configuration: GatewayConfiguration(
                defaultPolicy: ScalingPolicy(minInstances: 1, maxInstances: 2, concurrency: 1, keepAliveSeconds: 3600),
                maintenanceInterval: .milliseconds(10)),
            provider: provider, transport: FakeTransport(), logger: logger)
        let running = Task { try await gateway.run() }
        #expect(await eventually { provider.running.count == 1 })
        // A second instance on its way when the cancellation comes (or already up).
        provider.state.withLock { $0.launchDelay = secondLaunchDelay }
        _ = try gateway.scale("hello", ScalingPolicyUpdate(min: 2, max: 2))
        #expect(await eventually { provider.launches == 2 })
        running.cancel()
        try await running.value
        #expect(provider.running.isEmpty, "left running: \(provider.running)")
        #expect(Set(provider.terminated).count == provider.launches)
    }

    @Test func adminViewAndScalingPolicyValidation() async throws {
        try await withFakeGateway { gateway, _, _ in
            #expect(await gateway.handle(GatewayRequest(.get, "/hello/greet")).status == .ok)
            let all = gateway.functions()
            #expect(all.map(\.name) == ["hello"])
            #expect(all.first?.instances.first?.served == 1)
            #expect(throws: KilnError.self) { try gateway.scale("hello", ScalingPolicyUpdate(min: 5, max: 2)) }
            #expect(throws: KilnError.self) { try gateway.function("nope") }
            let drained = try gateway.drain("hello")
            #expect(drained == ["hello-1"])
        }
    }

    @Test func configurationValidation() throws {
        #expect(throws: KilnError.self) {
            try GatewayConfiguration(admin: ListenAddress(host: "0.0.0.0", port: 8081)).validate()
        }
        #expect(throws: KilnError.self) { try ScalingPolicy(concurrency: 0).validate() }
        try GatewayConfiguration().validate()
        #expect(try ListenAddress(parsing: ":9000") == ListenAddress(host: "127.0.0.1", port: 9000))
        #expect(try ListenAddress(parsing: "[::1]:9000").isLoopback)
        #expect(throws: KilnError.self) { try ListenAddress(parsing: "localhost") }
    }
}
