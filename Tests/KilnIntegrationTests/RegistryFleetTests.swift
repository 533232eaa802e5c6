import Foundation
import KilnEngine
import KilnOCI
import KilnSnapshot
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Network namespaces this test makes, one per simulated host, on a bridge of their own in the
/// host's namespace (which holds the registry and nginx): `10.231.N.1` is the bridge, host i is
/// `10.231.N.(i+2)`. Traffic goes only to these namespaces and to loopback.
struct TestFleetNetwork {
    let bridge: String
    let namespaces: [String]
    let subnet: String

    var gateway: String { "\(subnet).1" }
    func address(_ host: Int) -> String { "\(subnet).\(host + 2)" }
    func namespacePath(_ host: Int) -> String { "/run/netns/\(namespaces[host])" }

    static func make(hosts: Int) throws -> TestFleetNetwork {
        let tag = String(format: "%06x", UInt32.random(in: 0..<0x100_0000))
        let network = TestFleetNetwork(
            bridge: "kbr\(tag)", namespaces: (0..<hosts).map { "kiln-fleet-\(tag)-\($0)" }, subnet: "10.231.\(Int.random(in: 100...199))")
        do {
            try ip(["link", "add", network.bridge, "type", "bridge"])
            try ip(["addr", "add", "\(network.gateway)/24", "dev", network.bridge])
            try ip(["link", "set", network.bridge, "up"])
            for (index, namespace) in network.namespaces.enumerated() {
                let outside = "kv\(index)h\(tag)", inside = "kv\(index)n\(tag)"
                try ip(["netns", "add", namespace])
                try ip(["link", "add", outside, "type", "veth", "peer", "name", inside])
                try ip(["link", "set", inside, "netns", namespace])
                try ip(["link", "set", outside, "master", network.bridge, "up"])
                try ip(["-n", namespace, "addr", "add", "\(network.address(index))/24", "dev", inside])
                try ip(["-n", namespace, "link", "set", inside, "up"])
                try ip(["-n", namespace, "link", "set", "lo", "up"])
            }
        } catch {
            network.remove()
            throw error
        }
        return network
    }

    /// Deletes the namespaces (their veth pairs go with them) and the bridge.
    func remove() {
        for namespace in namespaces { try? Self.ip(["netns", "del", namespace]) }
        try? Self.ip(["link", "del", bridge])
    }

    static func ip(_ arguments: [String]) throws {
        let output = try Subprocess.run("/usr/sbin/ip", arguments)
        guard output.status.isSuccess else { throw KilnError(.systemCall, "ip \(arguments.joined(separator: " ")): \(output.stderr)") }
    }
}

extension Integration {
    /// Issue item 5, simulated on one machine: three kiln hosts, each a network namespace with its
    /// own store and state running `kiln serve`, a registry, and nginx balancing across them. The
    /// snapshot is baked on host A and pushed signed; B and C pull it on their first request,
    /// restore and answer; stopping B's kiln keeps every request answered by the others.
    @Suite(
        "three kiln hosts behind nginx, one registry", .serialized,
        .enabled(if: TestRegistry.isInstalled && ExecutableSearch.find("nginx") != nil, "needs docker-registry, htpasswd and nginx (make setup)"))
    struct RegistryFleetTests {
        @Test func threeHostsServeASnapshotBakedOnOne() async throws {
            try await withTestHost { a in
                try await withTestHost { b in
                    try await withTestHost { c in
                        let network = try TestFleetNetwork.make(hosts: 3)
                        defer { network.remove() }
                        let registry = try await TestRegistry.start(in: "\(a.scratch)/registry", host: network.gateway)
                        defer { registry.stop() }
                        try await run([a, b, c], network: network, registry: registry)
                    }
                }
            }
        }

        func run(_ hosts: [TestHost], network: TestFleetNetwork, registry: TestRegistry) async throws {
            let (a, b, c) = (hosts[0], hosts[1], hosts[2])
            _ = try await a.kiln.bake(
                BakeRequest(
                    name: "hello", sandbox: a.sandbox([helloJdk]), readiness: ReadinessCheck(path: "/health"),
                    warmup: [WarmupStep(count: 20, path: "/greet")]))
            let key = "\(a.scratch)/publisher.key"
            #expect(try runKiln(["keygen", "--signing", key], environment: a.environment).status == .exited(0))
            let reference = "\(registry.address)/kiln/hello:v1"
            let push = try runKiln(["push", "hello", reference, "--sign", key, "--json"] + registry.accessArguments, environment: a.environment)
            #expect(push.status == .exited(0), "\(push.stdout) \(push.stderr)")

            var servers: [(pid: pid_t, log: String)] = []
            defer {
                for server in servers where kill(server.pid, 0) == 0 {
                    kill(server.pid, SIGTERM)
                    _ = Subprocess.wait(server.pid)
                }
            }
            for (index, host) in hosts.enumerated() {
                let log = "\(host.scratch)/serve.log"
                let fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
                defer { close(fd) }
                let pid = try Subprocess.spawn(
                    "/usr/bin/nsenter",
                    [
                        "--net=\(network.namespacePath(index))", kilnBinary, "serve", "--listen", "\(network.address(index)):8080", "--admin",
                        "127.0.0.1:0",
                        "--pull", "hello=\(reference)", "--verify", "\(key).pub",
                    ] + registry.accessArguments,
                    environment: host.environment, stdout: .descriptor(fd), stderr: .descriptor(fd))
                servers.append((pid, log))
            }
            for (index, server) in servers.enumerated() {
                let up = await poll(timeout: .seconds(30)) {
                    (try? String(contentsOfFile: server.log, encoding: .utf8))?.contains("kiln serve: functions on") == true
                }
                try #require(up, "kiln serve on host \(index) did not start: \((try? String(contentsOfFile: server.log, encoding: .utf8)) ?? "")")
            }

            // B and C have never seen the function: their first request pulls, verifies, restores.
            #expect(!b.kiln.store.exists("hello") && !c.kiln.store.exists("hello"))
            var firstRequests: [String] = []
            for index in [1, 2] {
                let reply = try await get("http://\(network.address(index)):8080/hello/greet")
                #expect(reply.status == "200", "host \(index): \((try? String(contentsOfFile: servers[index].log, encoding: .utf8)) ?? "")")
                firstRequests.append("\(Int(reply.ms)) ms")
                #expect(hosts[index].kiln.store.exists("hello"))
            }
            #expect(try b.kiln.store.load("hello").files == a.kiln.store.load("hello").files)

            // nginx in front of the three; every request answered, each host serving.
            let nginx = try await TestNginx.start(in: "\(a.scratch)/nginx", upstreams: (0..<3).map { "\(network.address($0)):8080" })
            defer { nginx.stop() }
            var steady: [Double] = []
            for _ in 0..<30 {
                let reply = try await get("http://127.0.0.1:\(nginx.port)/hello/greet")
                #expect(reply.status == "200")
                steady.append(reply.ms)
            }
            for (index, host) in hosts.enumerated() { #expect(!host.kiln.instanceRecords().isEmpty, "host \(index) served no request") }

            // Host B's kiln stops: the others answer everything.
            kill(servers[1].pid, SIGTERM)
            #expect(Subprocess.wait(servers[1].pid) == .exited(0))
            #expect(b.kiln.instanceRecords().isEmpty)
            var afterStop = 0
            for _ in 0..<30 where try await get("http://127.0.0.1:\(nginx.port)/hello/greet").status == "200" { afterStop += 1 }
            #expect(afterStop == 30, "\(afterStop) of 30 requests answered with host B stopped")
            steady.sort()
            print(
                "three hosts: push \((try? JSONSerialization.jsonObject(with: Data(push.stdout.utf8)) as? [String: Any])?["pushMs"] ?? "?") ms; first request on a host that never saw the function (pull + verify + restore): \(firstRequests.joined(separator: ", ")); through nginx, 30 requests: median \(Int(steady[15])) ms, max \(Int(steady[29])) ms; with host B stopped: \(afterStop)/30 answered"
            )

            for server in servers where kill(server.pid, 0) == 0 {
                kill(server.pid, SIGTERM)
                #expect(Subprocess.wait(server.pid) == .exited(0))
            }
            for host in hosts {
                try host.kiln.removeSnapshot("hello")
                try await expectNoLeftovers(host)
            }
        }

        func get(_ url: String) async throws -> (status: String, ms: Double) {
            let start = ContinuousClock.now
            let reply = try await Subprocess.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", url])
            return (reply.stdout, start.duration(to: .now).milliseconds)
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

/// nginx on 127.0.0.1 balancing round-robin across kiln serve on the test hosts, passing a
/// request to the next host when one refuses the connection or answers 502/503.
struct TestNginx {
    let directory: String
    let port: Int
    let pid: pid_t

    static func start(in directory: String, upstreams: [String]) async throws -> TestNginx {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let nginx = try #require(ExecutableSearch.find("nginx"))
        for _ in 0..<5 {
            let port = Int.random(in: 20_000...40_000)
            let configuration = """
                worker_processes 1;
                pid \(directory)/nginx.pid;
                error_log \(directory)/error.log;
                events { worker_connections 256; }
                http {
                    access_log off;
                    client_body_temp_path \(directory)/body;
                    proxy_temp_path \(directory)/proxy;
                    upstream fleet {
                \(upstreams.map { "        server \($0) max_fails=1 fail_timeout=10s;" }.joined(separator: "\n"))
                    }
                    server {
                        listen 127.0.0.1:\(port);
                        location / {
                            proxy_pass http://fleet;
                            proxy_connect_timeout 2s;
                            proxy_read_timeout 60s;
                            proxy_next_upstream error timeout http_502 http_503;
                        }
                    }
                }

                """
            try configuration.write(toFile: "\(directory)/nginx.conf", atomically: true, encoding: .utf8)
            let pid = try Subprocess.spawn(
                nginx, ["-p", directory, "-c", "\(directory)/nginx.conf", "-e", "\(directory)/error.log", "-g", "daemon off; master_process off;"],
                stdout: .null, stderr: .null)
            let proxy = TestNginx(directory: directory, port: port, pid: pid)
            for _ in 0..<100 {
                let probe = try await Subprocess.run(
                    "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://127.0.0.1:\(port)/"])
                if probe.stdout != "000" { return proxy }
                if waitpid(pid, nil, WNOHANG) == pid { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            proxy.stop(removing: false)
        }
        throw KilnError(.runtimeFailed, "nginx did not start: \((try? String(contentsOfFile: "\(directory)/error.log", encoding: .utf8)) ?? "")")
    }

    func stop(removing: Bool = true) {
        kill(pid, SIGTERM)
        for _ in 0..<100 where waitpid(pid, nil, WNOHANG) != pid { usleep(20_000) }
        if kill(pid, 0) == 0 {
            kill(pid, SIGKILL)
            waitpid(pid, nil, 0)
        }
        if removing { try? FileManager.default.removeItem(atPath: directory) }
    }
}
