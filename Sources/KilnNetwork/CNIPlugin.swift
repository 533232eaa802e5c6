import Foundation
import KilnSystem

/// One call of a CNI plugin executable, as the CNI 1.0 specification defines it.
///
/// The runtime (kiln) runs the plugin named by a network configuration's `type`, found in
/// `CNI_PATH`, with the operation in its environment and the plugin's configuration on stdin. A
/// plugin answers a successful ADD with a result on stdout, and any failure with exit status != 0
/// and an error object `{"cniVersion", "code", "msg", "details"}` on stdout.
public struct CNIPluginCall: Sendable {
    /// The operations kiln uses (VERSION and GC are not needed).
    public enum Command: String, Sendable {
        case add = "ADD"
        case del = "DEL"
        case check = "CHECK"
    }

    public var command: Command
    /// CNI_CONTAINERID: letters, digits, `_`, `.` and `-`.
    public var containerID: String
    /// CNI_NETNS: the path of the network namespace (may be empty for DEL).
    public var namespacePath: String
    /// CNI_IFNAME: the interface to create inside the namespace.
    public var interface: String
    /// CNI_PATH: where plugins are looked up, in order.
    public var pluginDirectories: [String]
    /// How long a plugin may run before it is killed (a hung plugin must not hold up a pool).
    public var timeoutSeconds: Int = 30

    public init(_ command: Command, containerID: String, namespacePath: String, interface: String, pluginDirectories: [String]) {
        self.command = command
        self.containerID = containerID
        self.namespacePath = namespacePath
        self.interface = interface
        self.pluginDirectories = pluginDirectories
    }

    /// The environment of the plugin: only what CNI defines plus a PATH for the tools plugins
    /// run (iptables, modprobe).
    public var environment: [String: String] {
        [
            "CNI_COMMAND": command.rawValue,
            "CNI_CONTAINERID": containerID,
            "CNI_NETNS": namespacePath,
            "CNI_IFNAME": interface,
            "CNI_PATH": pluginDirectories.joined(separator: ":"),
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    }

    /// The plugin's executable for `type`, or a `tool-missing` error naming the package.
    public func executable(for type: String) throws -> String {
        guard !type.isEmpty, !type.contains("/") else {
            throw KilnError(.invalidArgument, "the CNI plugin type '\(type)' is not a plain name")
        }
        for directory in pluginDirectories {
            let candidate = "\(directory)/\(type)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw KilnError(
            .toolMissing, "the CNI plugin '\(type)' is not in \(pluginDirectories.joined(separator: ":"))",
            hint:
                "install Debian's containernetworking-plugins (apt-get install containernetworking-plugins), or set KILN_CNI_PATH to the directory of your plugins"
        )
    }

    /// Runs plugin `type` with `configuration` (one plugin's JSON object) on stdin and returns
    /// what it printed on stdout (the result of an ADD, usually nothing for DEL and CHECK).
    public func run(type: String, configuration: Data) async throws -> Data {
        let executable = try executable(for: type)
        // Its own process group, SIGTERM at the limit and SIGKILL 2 s later: coreutils'
        // `timeout --kill-after=2`, without a `timeout` process started before every plugin
        // (3 ms each here, on the way of every restore on a network).
        let output = try await Subprocess.run(
            executable, [], environment: environment, input: String(decoding: configuration, as: UTF8.self),
            timeLimit: .seconds(timeoutSeconds))
        if output.timedOut {
            throw KilnError(
                .runtimeFailed, "the plugin did not finish within \(timeoutSeconds) s and was stopped",
                action: "CNI \(command.rawValue) of '\(containerID)' (plugin \(type))",
                details: output.stderr.split(separator: "\n").suffix(5).map(String.init))
        }
        guard output.status.isSuccess else {
            throw CNIPluginCall.error(
                type: type, command: command, containerID: containerID, status: output.status, stdout: output.stdout, stderr: output.stderr)
        }
        return Data(output.stdout.utf8)
    }

    /// The error object a plugin prints on failure.
    public struct PluginError: Decodable, Sendable {
        public var code: Int
        public var msg: String
        public var details: String?
    }

    /// Turns a failed plugin call into a ``KilnError``: the plugin's own message and details,
    /// what the CNI error code means, and a fix where one is known.
    static func error(type: String, command: Command, containerID: String, status: TerminationStatus, stdout: String, stderr: String) -> KilnError {
        let action = "CNI \(command.rawValue) of '\(containerID)' (plugin \(type))"
        guard let decoded = try? JSONDecoder().decode(PluginError.self, from: Data(stdout.utf8)) else {
            var details = [String]()
            let lines = (stderr + "\n" + stdout).split(separator: "\n").map(String.init).filter { !$0.isEmpty }
            details = Array(lines.suffix(5))
            return KilnError(.runtimeFailed, "the plugin \(status) without a CNI error object", action: action, details: details)
        }
        var details: [String] = ["CNI error code \(decoded.code): \(meaning(of: decoded.code))"]
        if let more = decoded.details, !more.isEmpty { details.append(more) }
        return KilnError(.runtimeFailed, decoded.msg, action: action, hint: hint(for: decoded), details: details)
    }

    /// The well-known error codes of the CNI specification (section "Error").
    static func meaning(of code: Int) -> String {
        switch code {
        case 1: "incompatible CNI version"
        case 2: "unsupported field in the network configuration"
        case 3: "container unknown or does not exist"
        case 4: "invalid necessary environment variables"
        case 5: "I/O failure"
        case 6: "failed to decode content"
        case 7: "invalid network configuration"
        case 11: "try again later"
        case 50: "the plugin is not available"
        case 51: "the plugin is not available: another plugin must be re-tried"
        case 100...999: "plugin-specific error"
        default: "unknown error code"
        }
    }

    static func hint(for error: PluginError) -> String? {
        let text = (error.msg + " " + (error.details ?? "")).lowercased()
        if text.contains("no ip addresses available") || text.contains("no free ip") {
            return
                "the network's subnet is full: stop instances, run `kiln gc` (it releases the addresses of instances that are gone), or choose a larger subnet (KILN_SUBNET)"
        }
        if text.contains("already has an ip address") || text.contains("duplicate allocation") {
            return "an address is still held for this id: run `kiln gc` to release the addresses of instances that are gone"
        }
        if text.contains("iptables") {
            return "install iptables (apt-get install iptables) and run kiln as root"
        }
        if error.code == 1 {
            return "the plugins are older than the configuration's cniVersion: install containernetworking-plugins 1.0 or later"
        }
        if text.contains("operation not permitted") || text.contains("permission denied") {
            return "CNI plugins need root (CAP_NET_ADMIN): run kiln as root"
        }
        return nil
    }
}

/// The parts of a CNI 1.0 result kiln reads (the full JSON is kept as well, for DEL and CHECK).
public struct CNIResult: Codable, Sendable, Equatable {
    public struct Interface: Codable, Sendable, Equatable {
        public var name: String
        public var mac: String?
        public var sandbox: String?
    }

    public struct IPConfig: Codable, Sendable, Equatable {
        public var interface: Int?
        public var address: String
        public var gateway: String?
    }

    public struct DNS: Codable, Sendable, Equatable {
        public var nameservers: [String]?
        public var domain: String?
        public var search: [String]?
        public var options: [String]?
    }

    public var cniVersion: String?
    public var interfaces: [Interface]?
    public var ips: [IPConfig]?
    public var dns: DNS?

    /// The first address on the container's interface `name` (or the first address at all).
    public func address(on name: String) -> IPConfig? {
        let container = interfaces?.firstIndex { $0.name == name && $0.sandbox != nil }
        return ips?.first { $0.interface == container } ?? ips?.first
    }

    /// The host end of the container's veth: the host-side interface (no sandbox) that is not the
    /// bridge.
    public func hostInterface(bridge: String?) -> String? {
        interfaces?.first { $0.sandbox == nil && $0.name != bridge }?.name
    }
}
