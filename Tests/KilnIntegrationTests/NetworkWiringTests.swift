import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Integration {
    /// The engine puts sandboxes on the network itself (`--network kiln`): bake, restore, the
    /// gateway, stop and gc, on a test network of its own (``NetworkTestBed``).
    @Suite("network: bake and restore on the kiln network through the engine", .serialized)
    struct NetworkWiringTests {
        /// The host's kiln, opening the test bed's network wherever it would open `kiln`.
        func kiln(_ host: TestHost, on bed: NetworkTestBed) -> Kiln {
            var kiln = host.kiln
            let network = bed.network
            kiln.openNetwork = { _ in network }
            return kiln
        }

        @Test func copiesOfAJVMBakedOnTheNetworkEachHaveAnAddressAnswerThroughTheGatewayAndStayIsolated() async throws {
            try await withTestHost { host in
                try await withNetwork { bed in
                    let kiln = kiln(host, on: bed)
                    let manifest = try await kiln.bake(
                        BakeRequest(
                            name: "jdk", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 90),
                            warmup: [WarmupStep(count: 10, path: "/greet")], network: "kiln"))
                    #expect(manifest.network == "kiln")
                    // The bake's address is released with its sandbox.
                    let afterBake = try await bed.network.usage()
                    #expect(afterBake.isEmpty, "the bake left its address: \(afterBake)")

                    let (verified, _) = try kiln.loadVerified("jdk")
                    let copies = try await kiln.restore(verified, count: 2)
                    let addresses = copies.compactMap(\.address)
                    #expect(addresses.count == 2 && Set(addresses).count == 2, "each copy its own address: \(addresses)")
                    #expect(try await kiln.status().compactMap(\.address).sorted() == addresses.sorted(), "kiln ps shows the addresses")
                    let curl = ["/usr/bin/curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}"]
                    let stranger = try await bed.sandbox("other-1", tag: "other")
                    for copy in copies {
                        let address = try #require(copy.address)
                        // The copy's own resolv.conf is the network's.
                        let resolv = try await host.kiln.runtime.exec(id: copy.id, ["/bin/cat", "/etc/resolv.conf"], input: nil)
                        #expect(resolv.stdout.contains("nameserver 10.213.0.53"), "\(copy.id) resolv.conf: \(resolv.stdout)")
                        // Another snapshot's sandbox cannot reach it.
                        let blocked = try await inNamespace(stranger.namespacePath, curl + ["http://\(address):8080/health"])
                        #expect(blocked.stdout == "000", "another snapshot's sandbox must not reach \(copy.id)")
                        // The gateway's connection: to the address, no namespace switch.
                        let reply = try await InstanceHTTPClient.send(.GET, "/greet?name=net", to: copy.endpoint)
                        #expect(reply.status == 200)
                    }
                    try await bed.remove(stranger)
                    for copy in copies { try await kiln.stop(copy) }

                    // The gateway: instances restored on demand from prepared namespaces, reached at their address.
                    let configuration = GatewayConfiguration(
                        listen: ListenAddress(host: "127.0.0.1", port: 0), admin: ListenAddress(host: "127.0.0.1", port: 0),
                        defaultPolicy: ScalingPolicy(maxInstances: 2, concurrency: 4, keepAliveSeconds: 60, queueTimeoutSeconds: 60),
                        maintenanceInterval: .milliseconds(50))
                    var logger = Logger(label: "gateway-network")
                    logger.logLevel = .warning
                    var gatewayKiln = kiln
                    gatewayKiln.ownsInstances = true
                    let gateway = Gateway(
                        configuration: configuration, provider: KilnInstanceProvider(kiln: gatewayKiln, coldStartFallback: false),
                        transport: PooledInstanceTransport(), logger: logger)
                    let server = GatewayServer(gateway: gateway, signals: [], logger: logger)
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { try await server.run() }
                        let port = await server.boundPorts().listen
                        let burst = await LoadGenerator.burst(.loopback(port: port), path: "/jdk/greet?name=gw", count: 8)
                        #expect(burst.filter { $0.status != 200 }.isEmpty, "gateway failures: \(burst.compactMap(\.error).prefix(3))")
                        let instances = try gateway.function("jdk").instances
                        #expect(!instances.isEmpty)
                        for instance in instances {
                            let record = try kiln.instance(instance.id)
                            #expect(record.address != nil, "a gateway instance on the network has an address")
                            #expect(
                                record.networkNamespacePath.contains("/pool-"), "taken from the prepared namespaces: \(record.networkNamespacePath)")
                        }
                        await server.shutdown()
                        try await group.waitForAll()
                    }
                    let afterGateway = try await bed.network.usage()
                    #expect(afterGateway.isEmpty, "addresses left after the gateway stopped: \(afterGateway)")
                    try await expectNoLeftovers(host, network: bed.network)
                }
            }
        }

        /// A killed kiln's addresses: an instance whose process died and an attachment nothing
        /// records (a kiln killed between the CNI ADD and the record) are both released by gc.
        @Test func garbageCollectionReleasesTheAddressesOfAKilledKiln() async throws {
            try await withTestHost { host in
                try await withNetwork { bed in
                    let kiln = kiln(host, on: bed)
                    _ = try await kiln.bake(
                        BakeRequest(
                            name: "jdk", sandbox: host.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health", timeoutSeconds: 90),
                            network: "kiln"))
                    let (verified, _) = try kiln.loadVerified("jdk")
                    let copy = try await kiln.restoreOne(verified)
                    // An attachment no record names, in kiln's own namespace directory.
                    let ghost = try await bed.network.attach(
                        namespacePath: try {
                            let path = "\(host.paths.networkNamespaces)/jdk-dead01"
                            try NetworkNamespace.create(at: path)
                            return path
                        }(),
                        id: "jdk-dead01", tag: "jdk")
                    kill(copy.pid, SIGKILL)
                    try await Task.sleep(for: .milliseconds(300))
                    #expect(try await bed.network.usage().addresses.count == 2)
                    let report = try await kiln.collectGarbage()
                    #expect(report.instances == [copy.id])
                    #expect(report.network.contains { $0.contains(ghost.id) }, "\(report.network)")
                    let usage = try await bed.network.usage()
                    #expect(usage.isEmpty, "gc left \(usage)")
                    try await expectNoLeftovers(host, network: bed.network)
                }
            }
        }

        /// A service with a socket bound to its bake-time address: the copy cannot have it, and
        /// the restore says which socket and what to do.
        @Test func aSocketBoundToTheBakeAddressFailsTheRestoreNamingIt() async throws {
            try await withTestHost { host in
                try await withNetwork { bed in
                    let kiln = kiln(host, on: bed)
                    let script = """
                        import http.server, os, socket
                        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        probe.connect(("10.213.0.1", 9)); mine = probe.getsockname()[0]; probe.close()
                        pinned = socket.socket(socket.AF_INET, socket.SOCK_STREAM); pinned.bind((mine, 9000)); pinned.listen(8)
                        class H(http.server.BaseHTTPRequestHandler):
                            def do_GET(self):
                                self.send_response(200); self.end_headers(); self.wfile.write(mine.encode())
                            def log_message(self, *a): pass
                        http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
                        """.replacingOccurrences(of: "10.213.0.1", with: try bed.configuration.gatewayAddress())
                    var request = BakeRequest(
                        name: "pinned", sandbox: host.sandbox(["/usr/bin/python3", "-c", script]),
                        readiness: ReadinessCheck(path: "/", timeoutSeconds: 30), compact: false, network: "kiln")
                    // The preflight would refuse the second listener before the dump: accepted
                    // here, so that the restore's own check is what this test sees.
                    request.allow = [.listener]
                    _ = try await kiln.bake(request)
                    let (verified, _) = try kiln.loadVerified("pinned")
                    do {
                        let copy = try await kiln.restoreOne(verified, readinessTimeout: .seconds(5))
                        Issue.record("\(copy.id) restored at \(copy.address ?? "?") with a socket bound to the bake's address")
                    } catch let error as KilnError {
                        #expect(error.message.contains("port 9000"), "\(error)")
                        #expect(error.message.contains("bound to the address it had when the snapshot was baked"), "\(error)")
                        #expect(error.hint?.contains("0.0.0.0") == true)
                    }
                    #expect(try await bed.network.usage().isEmpty, "the failed restore released its address")
                    try await expectNoLeftovers(host, network: bed.network)
                }
            }
        }
    }
}
