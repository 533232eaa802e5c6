import Foundation
import KilnNetwork
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A kiln network of its own for one test: a private state directory, a bridge `kt<random>` and a
/// /24 out of 10.213.0.0/16 (never kiln's default bridge), removed with everything on it at the end.
struct NetworkTestBed {
    let state: String
    let network: CNINetwork
    let configuration: NetworkConfiguration

    init(dns: DNSConfiguration = DNSConfiguration(nameservers: ["10.213.0.53"], search: ["kiln.test"])) throws {
        let random = UInt32.random(in: 0...UInt32.max)
        state = "/tmp/kiln-nettest-\(getpid())-\(random)"
        configuration = NetworkConfiguration(
            bridge: "kt\(String(random & 0xffffff, radix: 16))", subnet: "10.213.\(100 + Int(random % 150)).0/24", dns: dns)
        network = try CNINetwork.kiln(stateDirectory: state, configuration: configuration)
    }

    var namespaces: String { "\(state)/netns" }

    /// A pinned namespace like the engine makes for a sandbox (with `lo` up).
    func makeNamespace(_ id: String) throws -> String {
        let path = "\(namespaces)/\(id)"
        try NetworkNamespace.create(at: path)
        return path
    }

    /// A namespace made and attached with `tag`.
    func sandbox(_ id: String, tag: String) async throws -> NetworkAttachment {
        try await network.attach(namespacePath: makeNamespace(id), id: id, tag: tag)
    }

    func remove(_ attachment: NetworkAttachment) async throws {
        try await network.detach(attachment)
        NetworkNamespace.remove(at: attachment.namespacePath)
    }

    /// Removes the network and the state directory.
    func tearDown() async {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: namespaces)) ?? [] {
            NetworkNamespace.remove(at: "\(namespaces)/\(entry)")
        }
        do { try await network.tearDown() } catch { Issue.record("tearing the network down: \(error)") }
        try? FileManager.default.removeItem(atPath: state)
    }
}

/// Runs `body` with a fresh network; always tears it down and checks nothing of it is left on
/// the host (bridge, rules, veths).
func withNetwork(dns: DNSConfiguration? = nil, _ body: (NetworkTestBed) async throws -> Void) async throws {
    let bed = try dns.map { try NetworkTestBed(dns: $0) } ?? NetworkTestBed()
    do {
        try await body(bed)
    } catch {
        await bed.tearDown()
        throw error
    }
    await bed.tearDown()
    let rules = (try await bed.network.firewall?.allRules()) ?? []
    #expect(rules == [], "the network's iptables rules outlive it")
    let link = try await Subprocess.run("/usr/sbin/ip", ["link", "show", bed.configuration.bridge])
    #expect(!link.status.isSuccess, "the bridge \(bed.configuration.bridge) outlives the network")
}

/// Runs a command inside the network namespace at `path` (what `ip netns exec` does for a named one).
func inNamespace(_ path: String, _ command: [String], environment: [String: String]? = nil) async throws -> CommandOutput {
    try await Subprocess.run("/usr/bin/nsenter", ["--net=\(path)", "--"] + command, environment: environment)
}

let netProbe = "\(packageRoot)/Tests/KilnIntegrationTests/Fixtures/net-probe.py"

/// A TCP connection attempt from the namespace at `path` (nil: the host): "ok peer=<address>",
/// "refused", "timeout" or "error ...".
func probe(from path: String?, _ host: String, _ port: Int, timeout: Double = 1.5) async throws -> String {
    let command = ["/usr/bin/python3", netProbe, "connect", host, "\(port)", "\(timeout)"]
    let output: CommandOutput
    if let path {
        output = try await inNamespace(path, command)
    } else {
        output = try await Subprocess.run(command[0], Array(command.dropFirst()), environment: nil, input: nil)
    }
    return output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A TCP server answering "peer=<client address>" on 0.0.0.0:`port` in the namespace at
/// `path` (nil: the host's own namespace), stopped with ``stop()``.
struct ProbeServer {
    let pid: pid_t

    static func start(in path: String?, port: Int) async throws -> ProbeServer {
        let command = ["/usr/bin/python3", netProbe, "serve", "\(port)"]
        let pid =
            try path.map { try Subprocess.spawn("/usr/bin/nsenter", ["--net=\($0)", "--"] + command, stdout: .null, stderr: .null) }
            ?? Subprocess.spawn(command[0], Array(command.dropFirst()), stdout: .null, stderr: .null)
        let server = ProbeServer(pid: pid)
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if try await probe(from: path, "127.0.0.1", port).hasPrefix("ok") { return server }
            try await Task.sleep(for: .milliseconds(50))
        }
        server.stop()
        throw KilnError(.serviceNeverReady, "the probe server on port \(port) did not start")
    }

    func stop() {
        kill(pid, SIGKILL)
        _ = Subprocess.wait(pid)
    }
}

/// Figures for the report: min, median and max of some durations, in milliseconds.
func summary(_ values: [Duration]) -> (min: Double, median: Double, max: Double) {
    let ms = values.map { Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15 }.sorted()
    return (ms.first ?? 0, ms.isEmpty ? 0 : ms[ms.count / 2], ms.last ?? 0)
}

func formatted(_ figures: (min: Double, median: Double, max: Double)) -> String {
    String(format: "min %.1f ms, median %.1f ms, max %.1f ms", figures.min, figures.median, figures.max)
}

/// The IPv6 link-local address of `interface` in the namespace at `path` (nil: the host), once
/// duplicate address detection is over; nil if it has none.
func linkLocalAddress(in path: String?, interface: String) async throws -> String? {
    let command = ["/usr/sbin/ip", "-6", "-o", "addr", "show", "dev", interface, "scope", "link"]
    let deadline = ContinuousClock.now + .seconds(5)
    while ContinuousClock.now < deadline {
        let output: CommandOutput
        if let path {
            output = try await inNamespace(path, command)
        } else {
            output = try await Subprocess.run(command[0], Array(command.dropFirst()), environment: nil, input: nil)
        }
        let line = output.stdout.split(separator: "\n").first.map(String.init) ?? ""
        if line.isEmpty { return nil }
        if !line.contains("tentative"), let range = line.range(of: #"fe80::[0-9a-f:]+"#, options: .regularExpression) {
            return String(line[range])
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    return nil
}
