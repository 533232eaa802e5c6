import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Integration {
    @Suite("kiln serve: the gateway over real restores", .serialized)
    struct GatewayTests {
        /// The acceptance test of the gateway, on the Spring sample: a burst from zero gets only
        /// 200s, load scales out, idleness scales to zero, a kill -9 under load loses nothing
        /// that had not reached the killed instance, and shutdown leaves nothing behind.
        @Test func springScalesFromZeroOutAndBackAndSurvivesAKill() async throws {
            try await withTestHost { host in
                _ = try await host.kiln.bake(
                    BakeRequest(
                        name: "spring", sandbox: host.sandbox([helloSpring]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 120),
                        warmup: [WarmupStep(count: 100, path: "/greet"), WarmupStep(count: 50, path: "/owners/1")]))
                let configuration = GatewayConfiguration(
                    listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
                    defaultPolicy: ScalingPolicy(maxInstances: 3, concurrency: 4, keepAliveSeconds: 2, queueTimeoutSeconds: 60),
                    maintenanceInterval: .milliseconds(50))
                let provider = KilnInstanceProvider(kiln: host.kiln)
                let (gateway, server) = makeGateway(configuration, kiln: host.kiln, provider: provider)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await server.run() }
                    let port = await server.boundPorts().listen

                    // 1. From zero, a burst: one restore, and only 200s.
                    let burst = await LoadGenerator.burst(.loopback(port: port), path: "/spring/greet?name=burst", count: 24)
                    #expect(burst.filter { $0.status != 200 }.isEmpty, "burst failures: \(burst.compactMap(\.error).prefix(3))")
                    // Gateway instances are ordinary kiln instances: `kiln ps` lists them.
                    let listed = try await host.kiln.status()
                    #expect(!listed.isEmpty && listed.allSatisfy { $0.snapshot == "spring" && $0.state == "running" })

                    // 2. Sustained load beyond one instance's concurrency: it scales out.
                    let peak = Shared(0)
                    let load = await withTaskGroup(of: LoadGenerator.Result?.self) { watch in
                        watch.addTask {
                            await LoadGenerator.run(.loopback(port: port), path: "/spring/owners/1", connections: 12, duration: .seconds(6))
                        }
                        watch.addTask {
                            while !Task.isCancelled {
                                if let status = try? gateway.function("spring") {
                                    peak.value.withLock { $0 = max($0, status.instances.count) }
                                }
                                try? await Task.sleep(for: .milliseconds(50))
                            }
                            return nil
                        }
                        let result = await watch.next()!
                        watch.cancelAll()
                        return result!
                    }
                    #expect(load.samples.count > 100)
                    #expect(load.ok == load.samples.count, "load failures: \(load.samples.compactMap(\.error).prefix(3))")
                    #expect(peak.value.withLock { $0 } > 1, "12 connections over a concurrency of 4 must scale out")

                    // 3. Idle past the keep-alive: back to zero, every container gone.
                    let scaledToZero = await poll(timeout: .seconds(30)) {
                        guard let status = try? gateway.function("spring") else { return false }
                        return status.instances.isEmpty && status.stopping == 0 && status.starting == 0
                    }
                    #expect(scaledToZero)
                    #expect(host.kiln.instanceRecords().isEmpty)
                    #expect(try await host.kiln.runtime.list().isEmpty)
                    // On a host that pages out idle memory, what the next restore at zero needs
                    // stays resident: every image file of the snapshot (mapped by the copies, or
                    // read by CRIU) and runc, CRIU and kiln-shim. Elsewhere nothing is held.
                    if IdlePageOut.current().isEmpty {
                        #expect(provider.heldFiles(of: "spring") == nil)
                    } else {
                        let manifest = try host.kiln.store.load("spring")
                        let images = manifest.files.map { "\(host.kiln.store.dumpDirectory(of: "spring"))/\($0.path)" }
                        let held = try #require(provider.heldFiles(of: "spring"), "no pin 2 s after the restore")
                        #expect(images.compactMap(PageCachePin.fileIdentity(ofFileAt:)).allSatisfy(held.contains))
                        let programs = try #require(provider.heldPrograms)
                        #expect(host.kiln.runtime.programs.compactMap(PageCachePin.fileIdentity(ofFileAt:)).allSatisfy(programs.contains))
                        // /metrics shows the pin: at least half the image files' size (just written, so resident).
                        let exposition = String(decoding: gateway.metricsExposition(), as: UTF8.self)
                        let series = #"kiln_gateway_held_page_bytes{function="spring"} "#
                        let heldBytes = exposition.split(separator: "\n").first { $0.hasPrefix(series) }.flatMap {
                            Double($0.dropFirst(series.count))
                        }
                        #expect((heldBytes ?? 0) >= Double(manifest.sizeBytes) / 2, "\(heldBytes ?? -1) bytes held of \(manifest.sizeBytes)")
                    }

                    // 4. Two warm instances, load, and kill -9 one of them mid-load.
                    _ = try gateway.scale("spring", ScalingPolicyUpdate(min: 2, keepAliveSeconds: 60))
                    #expect(await poll(timeout: .seconds(30)) { (try? gateway.function("spring"))?.instances.count == 2 })
                    let killed = Shared<String?>(nil)
                    let underKill = await withTaskGroup(of: LoadGenerator.Result?.self) { work in
                        work.addTask {
                            await LoadGenerator.run(.loopback(port: port), path: "/spring/greet", connections: 8, duration: .seconds(6))
                        }
                        work.addTask {
                            try? await Task.sleep(for: .seconds(2))
                            guard let victim = try? gateway.function("spring").instances.max(by: { $0.inFlight < $1.inFlight }) else { return nil }
                            killed.value.withLock { $0 = victim.id }
                            kill(victim.pid, SIGKILL)
                            return nil
                        }
                        var result: LoadGenerator.Result?
                        for await finished in work where finished != nil { result = finished }
                        return result!
                    }
                    let victim = try #require(killed.value.withLock { $0 })
                    let failures = underKill.samples.filter { $0.status != 200 }
                    let inFlightToVictim = failures.filter { $0.instance == victim }
                    let others = failures.filter { $0.instance != victim }
                    print(
                        "kill -9 of \(victim) under load: \(underKill.samples.count) requests, \(inFlightToVictim.count) failed in flight to it, \(others.count) other failures"
                    )
                    #expect(
                        others.isEmpty,
                        "requests that had not reached the killed instance must not fail: \(others.prefix(3).map { "\($0.status.map(String.init) ?? "-") \($0.error ?? "")" })"
                    )
                    #expect(underKill.ok > 100)
                    let after = try gateway.function("spring")
                    #expect(after.deaths >= 1)
                    #expect(!after.instances.contains { $0.id == victim })
                    // The minimum is restored: the dead one is replaced.
                    #expect(await poll(timeout: .seconds(30)) { (try? gateway.function("spring"))?.instances.count == 2 })

                    // 5. A snapshot removed while the gateway runs (its copies keep running on
                    // the files they map) has its held pages let go: nothing else would unlock
                    // them before the gateway's end.
                    if !IdlePageOut.current().isEmpty {
                        #expect(provider.releaseStalePins().isEmpty, "the snapshot is still there")
                        #expect(provider.heldFiles(of: "spring") != nil)
                        try host.kiln.store.remove("spring")
                        #expect(provider.releaseStalePins() == ["spring"])
                        #expect(provider.heldFiles(of: "spring") == nil)
                    }

                    // 6. Shutdown stops everything it started.
                    await server.shutdown()
                    try await group.waitForAll()
                }
                #expect(host.kiln.instanceRecords().isEmpty)
                try await expectNoLeftovers(host)
            }
        }

        /// A restore that fails (here: runc is given a CRIU that does not work) falls back to a
        /// cold start of the function's command, and says so in the metrics.
        @Test func failedRestoreFallsBackToAColdStart() async throws {
            try await withTestHost { host in
                _ = try await host.kiln.bake(
                    BakeRequest(
                        name: "jdk", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 60)))
                var broken = host.kiln
                var runc = try #require(broken.runtime as? Runc)
                runc.criuPath = "/bin/false"
                broken.runtime = runc
                let configuration = GatewayConfiguration(
                    listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0))
                let (gateway, server) = makeGateway(configuration, kiln: broken)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await server.run() }
                    let port = await server.boundPorts().listen
                    let client = KeepAliveClient(.loopback(port: port))
                    defer { client.close() }
                    let reply = try await client.send(.get, "/jdk/id")
                    #expect(reply.status.code == 200)
                    let status = try gateway.function("jdk")
                    #expect(status.coldStarts == 1)
                    #expect(status.instances.first?.origin == .coldStart)
                    let hostname = (try JSONSerialization.jsonObject(with: Data(reply.bodyText.utf8)) as? [String: Any])?["hostname"] as? String
                    #expect(hostname == status.instances.first?.id)
                    let metrics = String(decoding: gateway.metrics.exposition(), as: UTF8.self)
                    #expect(metrics.contains(#"kiln_gateway_cold_start_fallbacks_total{function="jdk",result="ok"} 1"#))
                    #expect(metrics.contains(#"kiln_gateway_restores_total{function="jdk",result="failed"} 1"#))
                    await server.shutdown()
                    try await group.waitForAll()
                }
                try await expectNoLeftovers(host)
            }
        }

        func makeGateway(_ configuration: GatewayConfiguration, kiln: Kiln, provider: KilnInstanceProvider? = nil) -> (Gateway, GatewayServer) {
            var logger = Logger(label: "gateway-integration")
            logger.logLevel = .warning
            let gateway = Gateway(
                configuration: configuration, provider: provider ?? KilnInstanceProvider(kiln: kiln), transport: PooledInstanceTransport(),
                logger: logger)
            return (gateway, GatewayServer(gateway: gateway, signals: [], logger: logger))
        }

        func poll(timeout: Duration, _ condition: () async -> Bool) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if await condition() { return true }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return false
        }
    }
}

/// A value tasks of one test share.
final class Shared<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ initial: Value) { value = Mutex(initial) }
}
