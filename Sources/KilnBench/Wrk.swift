import Foundation
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

/// Debian's `wrk`, the HTTP load generator of `kiln bench serve`: a closed loop of keep-alive
/// connections from one thread of its own process, as lean a client as there is, so the CPU it
/// takes from the machine is small and the same whichever path it loads.
struct Wrk: Sendable {
    /// One run's figures.
    struct Result: Codable, Sendable, Equatable {
        var requests: Int
        var requestsPerSecond: Double
        var p50Ms: Double
        var p99Ms: Double
        /// Responses other than 2xx or 3xx, and connect, read, write and timeout errors.
        var errors: Int
    }

    let executable: String
    let nsenter: String
    let connections: Int
    let seconds: Int

    /// wrk and nsenter from PATH, or `tool-missing` saying how to install them.
    init(connections: Int, seconds: Int) throws {
        guard let wrk = ExecutableSearch.find("wrk") else {
            throw KilnError(
                .toolMissing, "wrk is not installed: the gateway's throughput is measured with it", hint: "apt-get install wrk (make setup does)")
        }
        guard let nsenter = ExecutableSearch.find("nsenter") else {
            throw KilnError(
                .toolMissing, "nsenter is not installed: the direct runs load the instance from inside its network namespace",
                hint: "apt-get install util-linux")
        }
        executable = wrk
        self.nsenter = nsenter
        self.connections = connections
        self.seconds = seconds
    }

    /// How the runs are made, for the report.
    var description: String { "wrk -t1 -c\(connections) -d\(seconds)s" }

    /// Loads `url` for `seconds` (from inside the network namespace at `netns`, when given).
    func run(_ url: String, inNetworkNamespace netns: String? = nil, seconds: Int? = nil) async throws -> Result {
        let arguments = ["-t1", "-c\(connections)", "-d\(seconds ?? self.seconds)s", "--latency", url]
        let output =
            if let netns {
                try await Subprocess.run(nsenter, ["--net=\(netns)", executable] + arguments)
            } else {
                try await Subprocess.run(executable, arguments)
            }
        guard output.status.isSuccess, let result = Self.parse(output.stdout) else {
            throw KilnError(
                .requestFailed,
                "wrk against \(url) \(output.status): \((output.stderr + output.stdout).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return result
    }

    /// The figures of wrk's `--latency` report; nil when it has no `Requests/sec`.
    static func parse(_ output: String) -> Result? {
        var result = Result(requests: 0, requestsPerSecond: -1, p50Ms: 0, p99Ms: 0, errors: 0)
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            switch first {
            case "Requests/sec:" where fields.count == 2:
                result.requestsPerSecond = Double(fields[1]) ?? -1
            case "50%" where fields.count == 2:
                result.p50Ms = milliseconds(fields[1]) ?? 0
            case "99%" where fields.count == 2:
                result.p99Ms = milliseconds(fields[1]) ?? 0
            case "Non-2xx" where fields.count == 5:
                result.errors += Int(fields[4]) ?? 0
            case "Socket" where fields.count == 10:
                // Socket errors: connect 0, read 0, write 0, timeout 0
                for index in stride(from: 3, to: 10, by: 2) { result.errors += Int(fields[index].trimmingCharacters(in: [","])) ?? 0 }
            default:
                if fields.count >= 3, fields[1] == "requests", fields[2] == "in", let count = Int(first) { result.requests = count }
            }
        }
        return result.requestsPerSecond >= 0 ? result : nil
    }

    /// `392.00us`, `5.33ms` or `1.02s` in milliseconds.
    static func milliseconds(_ text: Substring) -> Double? {
        for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] where text.hasSuffix(unit) {
            return Double(text.dropLast(unit.count)).map { $0 * scale }
        }
        return nil
    }
}
