import Foundation
import KilnSystem

/// A network kiln manages itself: a Linux bridge with a private subnet, an address per sandbox
/// from CNI's `host-local` IPAM, one masquerade rule for egress, and kiln's firewall (no access
/// to the host, no traffic between sandboxes of different snapshots).
///
/// ``conflist(ipamDirectory:)`` turns it into a CNI network configuration list that
/// ``CNINetwork`` runs; kiln keeps that file at `$KILN_STATE/cni/<name>.conflist` and host-local's
/// addresses under `$KILN_STATE/cni/ipam`, so they live and die with kiln's state.
public struct NetworkConfiguration: Codable, Sendable, Equatable {
    /// The CNI network name (`kiln` by default).
    public var name: String
    /// The Linux bridge the sandboxes' veths are attached to (at most 15 characters).
    public var bridge: String
    /// The IPv4 subnet, e.g. `10.213.0.0/16`.
    public var subnet: String
    /// The bridge's address and every sandbox's default route; the subnet's first address if nil.
    public var gateway: String?
    /// What a sandbox's resolv.conf says.
    public var dns: DNSConfiguration
    /// One `MASQUERADE` rule for the whole subnet, so sandboxes reach beyond the host.
    /// (kiln adds it once instead of the bridge plugin's `ipMasq`, which adds and removes a chain
    /// per sandbox: ADD 25-30 ms instead of ~10 ms, DEL 70-95 ms instead of 20-50 ms here.)
    public var masquerade: Bool
    /// The interface name inside each sandbox.
    public var interface: String
    /// The bridge's MTU, if not the default.
    public var mtu: Int?

    /// The default subnet: private and unlike Docker's (172.17/16) and Podman's (10.88/16).
    public static let defaultSubnet = "10.213.0.0/16"

    public init(
        name: String = "kiln", bridge: String = "kiln0", subnet: String = NetworkConfiguration.defaultSubnet,
        gateway: String? = nil, dns: DNSConfiguration = DNSConfiguration(), masquerade: Bool = true,
        interface: String = "eth0", mtu: Int? = nil
    ) {
        self.name = name
        self.bridge = bridge
        self.subnet = subnet
        self.gateway = gateway
        self.dns = dns
        self.masquerade = masquerade
        self.interface = interface
        self.mtu = mtu
    }

    /// kiln's default network, with overrides from the environment: `KILN_SUBNET` (an IPv4 CIDR),
    /// `KILN_BRIDGE` (a bridge name), `KILN_DNS` (comma-separated name servers; otherwise the
    /// host's own non-loopback name servers from `/etc/resolv.conf`).
    public static func kilnDefault(environment: [String: String] = ProcessInfo.processInfo.environment, hostResolvConf: String = "/etc/resolv.conf")
        throws -> NetworkConfiguration
    {
        var configuration = NetworkConfiguration()
        if let subnet = environment["KILN_SUBNET"], !subnet.isEmpty { configuration.subnet = subnet }
        if let bridge = environment["KILN_BRIDGE"], !bridge.isEmpty { configuration.bridge = bridge }
        if let servers = environment["KILN_DNS"], !servers.isEmpty {
            configuration.dns = DNSConfiguration(nameservers: servers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        } else {
            let host = (try? String(contentsOfFile: hostResolvConf, encoding: .utf8)) ?? ""
            configuration.dns = DNSConfiguration.fromHost(resolvConf: host)
        }
        try configuration.validate()
        return configuration
    }

    /// The subnet as (network address, prefix length); throws for anything but an IPv4 CIDR.
    public func parsedSubnet() throws -> (network: UInt32, prefix: Int) {
        let parts = subnet.split(separator: "/")
        guard parts.count == 2, let prefix = Int(parts[1]), (8...30).contains(prefix), let address = IPv4.parse(String(parts[0])) else {
            throw KilnError(
                .invalidArgument, "'\(subnet)' is not an IPv4 subnet with a prefix of /8 to /30", hint: "write it like 10.213.0.0/16 (KILN_SUBNET)")
        }
        let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << (32 - prefix)
        guard address & ~mask == 0 else {
            throw KilnError(
                .invalidArgument, "'\(subnet)' has host bits set", hint: "use the network address, e.g. \(IPv4.format(address & mask))/\(prefix)")
        }
        return (address, prefix)
    }

    /// The gateway address: the configured one, or the subnet's first address.
    public func gatewayAddress() throws -> String {
        if let gateway { return gateway }
        return IPv4.format(try parsedSubnet().network + 1)
    }

    /// Checks every field kiln passes on to the plugins and iptables.
    public func validate() throws {
        _ = try parsedSubnet()
        guard InputValidation.isASCIIName(name, punctuation: "_.-", alphanumericFirst: true) else {
            throw KilnError(.invalidArgument, "'\(name)' is not a valid CNI network name (letters, digits, '_', '.', '-')")
        }
        guard InputValidation.isASCIIName(bridge, punctuation: "_-", maxLength: 15) else {
            throw KilnError(.invalidArgument, "'\(bridge)' is not a valid bridge name (at most 15 letters, digits, '_' or '-')")
        }
        guard InputValidation.isASCIIName(interface, punctuation: "_-", maxLength: 15) else {
            throw KilnError(.invalidArgument, "'\(interface)' is not a valid interface name")
        }
        if let gateway, IPv4.parse(gateway) == nil {
            throw KilnError(.invalidArgument, "the gateway '\(gateway)' is not an IPv4 address")
        }
    }

    /// The CNI network configuration list: the `bridge` plugin with `host-local` IPAM keeping its
    /// addresses in `ipamDirectory`. No `firewall` or `portmap` plugin: kiln's own chains do the
    /// forwarding and isolation (``NetworkFirewall``), and the gateway reaches instances through
    /// their namespace, not through published ports.
    public func conflist(ipamDirectory: String) throws -> CNIConfigurationList {
        try validate()
        let hasDNS = !dns.nameservers.isEmpty || !dns.search.isEmpty
        let bridgePlugin = BridgePlugin(
            bridge: bridge, mtu: mtu,
            ipam: .init(dataDir: ipamDirectory, ranges: [[.init(subnet: subnet, gateway: try gatewayAddress())]]),
            dns: hasDNS ? dns : nil)
        // Codable rather than JSONSerialization: its first use costs ~2.5 ms here, on the way of
        // every restore on a network. Not read back: the document is the one
        // ``CNIConfigurationList/init(json:)`` would make of it (its keys in another order).
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(List(name: name, plugins: [bridgePlugin]))
        return CNIConfigurationList(name: name, cniVersion: List.version, pluginTypes: [bridgePlugin.type], json: json)
    }

    /// The conflist's shape for kiln's own network.
    private struct List: Encodable {
        static let version = "1.0.0"
        var cniVersion = version
        var name: String
        var plugins: [BridgePlugin]
    }

    private struct BridgePlugin: Encodable {
        struct IPAM: Encodable {
            struct Range: Encodable {
                var subnet: String
                var gateway: String
            }
            struct Route: Encodable { var dst = "0.0.0.0/0" }
            var type = "host-local"
            var dataDir: String
            var ranges: [[Range]]
            var routes = [Route()]
        }
        var type = "bridge"
        var bridge: String
        var isGateway = true
        var ipMasq = false
        var hairpinMode = false
        var mtu: Int?
        var ipam: IPAM
        var dns: DNSConfiguration?
    }
}

/// The name servers, search domains and options a sandbox's `/etc/resolv.conf` lists.
public struct DNSConfiguration: Codable, Sendable, Equatable {
    public var nameservers: [String]
    public var search: [String]
    public var options: [String]

    public init(nameservers: [String] = [], search: [String] = [], options: [String] = []) {
        self.nameservers = nameservers
        self.search = search
        self.options = options
    }

    /// The host's resolv.conf minus loopback name servers (127.0.0.0/8, ::1): a sandbox has its
    /// own loopback, and kiln's firewall refuses it the host anyway.
    public static func fromHost(resolvConf text: String) -> DNSConfiguration {
        var dns = DNSConfiguration()
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let keyword = fields.first, !keyword.hasPrefix("#"), !keyword.hasPrefix(";") else { continue }
            let values = Array(fields.dropFirst())
            switch keyword {
            case "nameserver":
                if let server = values.first, !server.hasPrefix("127."), server != "::1" { dns.nameservers.append(server) }
            case "search", "domain": dns.search = values
            case "options": dns.options += values
            default: break
            }
        }
        return dns
    }

    /// The text of the sandbox's `/etc/resolv.conf` (empty: no name resolution).
    public var resolvConf: String {
        var lines = nameservers.map { "nameserver \($0)" }
        if !search.isEmpty { lines.append("search " + search.joined(separator: " ")) }
        if !options.isEmpty { lines.append("options " + options.joined(separator: " ")) }
        return lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
    }
}

/// A CNI network configuration list (`*.conflist`): a name, a version and the plugins to chain.
/// Each plugin's configuration is kept as JSON, since plugins define their own fields.
public struct CNIConfigurationList: Sendable, Equatable {
    public var name: String
    public var cniVersion: String
    /// The `type` of each plugin, in ADD order.
    public var pluginTypes: [String]
    /// The whole list as JSON, as read or written.
    public var json: Data

    /// A list kiln made itself (its own network), `json` kept as it is: the document
    /// ``init(json:)`` would make of it, its keys perhaps in another order.
    init(name: String, cniVersion: String, pluginTypes: [String], json: Data) {
        self.name = name
        self.cniVersion = cniVersion
        self.pluginTypes = pluginTypes
        self.json = json
    }

    public init(json: Data) throws {
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw KilnError(.invalidArgument, "the CNI network configuration is not a JSON object")
        }
        let plugins: [[String: Any]]
        if let list = object["plugins"] as? [[String: Any]] {
            plugins = list
        } else if object["type"] is String {
            plugins = [object]  // a single-plugin `.conf`
        } else {
            throw KilnError(.invalidArgument, "the CNI network configuration has neither 'plugins' nor 'type'")
        }
        guard let name = object["name"] as? String, !name.isEmpty else {
            throw KilnError(.invalidArgument, "the CNI network configuration has no 'name'")
        }
        let types = plugins.map { $0["type"] as? String ?? "" }
        guard !types.isEmpty, !types.contains("") else {
            throw KilnError(.invalidArgument, "every plugin of the CNI network '\(name)' needs a 'type'")
        }
        self.name = name
        self.cniVersion = object["cniVersion"] as? String ?? "1.0.0"
        self.pluginTypes = types
        self.json = try JSONSerialization.data(withJSONObject: ["name": name, "cniVersion": cniVersion, "plugins": plugins], options: [.sortedKeys])
    }

    /// The configuration plugin `index` gets on stdin: its own object plus the list's `name` and
    /// `cniVersion`, and `prevResult` (the previous plugin's result on ADD, the ADD's result on
    /// DEL and CHECK) when there is one.
    public func pluginConfiguration(_ index: Int, previousResult: Data?) throws -> Data {
        guard let object = try JSONSerialization.jsonObject(with: json) as? [String: Any],
            let plugins = object["plugins"] as? [[String: Any]], plugins.indices.contains(index)
        else {
            throw KilnError(.invalidArgument, "the CNI network '\(name)' has no plugin \(index)")
        }
        var plugin = plugins[index]
        plugin["name"] = name
        plugin["cniVersion"] = cniVersion
        if let previousResult, let result = try? JSONSerialization.jsonObject(with: previousResult) {
            plugin["prevResult"] = result
        }
        return try JSONSerialization.data(withJSONObject: plugin, options: [.sortedKeys])
    }

    /// The bridge the plugins attach sandboxes to: the first plugin's `bridge` field (the
    /// `bridge` plugin's default `cni0` if it has none), nil for networks without a bridge.
    public var bridge: String? {
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any],
            let plugins = object["plugins"] as? [[String: Any]]
        else { return nil }
        return plugins.lazy.compactMap { $0["bridge"] as? String }.first ?? (pluginTypes.contains("bridge") ? "cni0" : nil)
    }

    /// The first `host-local` IPAM data directory (the plugin's default if unset), if any.
    public var ipamDirectory: String? {
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any],
            let plugins = object["plugins"] as? [[String: Any]]
        else { return nil }
        for plugin in plugins {
            if let ipam = plugin["ipam"] as? [String: Any], ipam["type"] as? String == "host-local" {
                return ipam["dataDir"] as? String ?? "/var/lib/cni/networks"
            }
        }
        return nil
    }

    /// Finds the network `name` among `*.conflist`, `*.conf` and `*.json` files of `directories`
    /// (searched in order, files in name order, as libcni does), e.g. `$KILN_STATE/cni` then
    /// `/etc/cni/net.d`.
    public static func find(_ name: String, in directories: [String]) throws -> (list: CNIConfigurationList, path: String) {
        for directory in directories {
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
            for file in files where file.hasSuffix(".conflist") || file.hasSuffix(".conf") || file.hasSuffix(".json") {
                let path = "\(directory)/\(file)"
                guard let data = FileManager.default.contents(atPath: path), let list = try? CNIConfigurationList(json: data) else { continue }
                if list.name == name { return (list, path) }
            }
        }
        throw KilnError(
            .invalidArgument, "there is no CNI network named '\(name)' in \(directories.joined(separator: " or "))",
            hint: "write a .conflist with \"name\": \"\(name)\" into one of those directories, or use kiln's own network 'kiln'")
    }
}

/// IPv4 addresses as 32-bit numbers.
public enum IPv4 {
    public static func parse(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard let byte = UInt8(part), String(byte) == part else { return nil }
            value = value << 8 | UInt32(byte)
        }
        return value
    }

    public static func format(_ value: UInt32) -> String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    /// The broadcast address of an IPv4 CIDR as `a.b.c.d/32`, nil if it is not one.
    public static func broadcast(of cidr: String) -> String? {
        let parts = cidr.split(separator: "/")
        guard parts.count == 2, let prefix = Int(parts[1]), (1...32).contains(prefix), let address = parse(String(parts[0])) else { return nil }
        let mask: UInt32 = ~UInt32(0) << (32 - prefix)
        return format(address | ~mask) + "/32"
    }

    /// The address part of `a.b.c.d/nn`.
    public static func stripPrefix(_ cidr: String) -> String {
        String(cidr.split(separator: "/").first ?? "")
    }
}
