import Foundation
import KilnSystem

/// What a network holds on the host for its sandboxes right now (for leak checks and `kiln gc`).
public struct NetworkUsage: Sendable, Equatable, CustomStringConvertible {
    /// Host ends of veths attached to the network's bridge.
    public var veths: [String]
    /// Addresses host-local holds, address to owner id.
    public var addresses: [String: String]
    /// Per-sandbox iptables rules (commented `kiln:<id>`), as iptables-save lines.
    public var rules: [String]
    /// Ids with a cached ADD result.
    public var cachedIDs: [String]

    /// Nothing held for any sandbox.
    public var isEmpty: Bool { veths.isEmpty && addresses.isEmpty && rules.isEmpty && cachedIDs.isEmpty }

    public var description: String {
        "\(veths.count) veths \(veths), \(addresses.count) addresses \(addresses.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }), \(rules.count) rules, \(cachedIDs.count) cached results \(cachedIDs.sorted())"
    }
}

extension CNINetwork {
    /// Everything this network holds for sandboxes: veths on its bridge, host-local's address
    /// files, kiln's per-sandbox rules, cached results.
    public func usage() async throws -> NetworkUsage {
        var usage = NetworkUsage(veths: [], addresses: [:], rules: [], cachedIDs: cachedAttachments().map(\.id))
        if let bridge = configuration?.bridge ?? list.bridge {
            usage.veths = try await Self.interfaces(onBridge: bridge)
        }
        usage.addresses = ipamAddresses()
        if let firewall { usage.rules = try await firewall.sandboxRules().map(\.rule) }
        return usage
    }

    /// What belongs to no id of `liveIDs`, described for a person (empty: nothing to collect).
    public func leftovers(liveIDs: Set<String>) async throws -> [String] {
        let usage = try await usage()
        let liveVeths = Set(cachedAttachments().filter { liveIDs.contains($0.id) }.compactMap { hostInterface(of: $0) })
        var found: [String] = []
        found += usage.cachedIDs.filter { !liveIDs.contains($0) }.map { "cached CNI result of '\($0)'" }
        found += usage.addresses.filter { !liveIDs.contains($0.value) }.map { "address \($0.key) held for '\($0.value)'" }.sorted()
        found += usage.rules.filter { NetworkFirewall.commentID($0).map { !liveIDs.contains($0) } ?? true }.map { "iptables rule: \($0)" }
        found += usage.veths.filter { !liveVeths.contains($0) }.map { "veth \($0) on the bridge" }
        return found
    }

    /// Undoes every attachment whose id is not in `liveIDs` (after a kiln was killed): DEL through
    /// the plugins (releasing the address), its firewall rules, its cached result, and finally
    /// any veth on the bridge that no live attachment owns. Returns what was removed.
    ///
    /// `liveIDs` must hold the ``NetworkAttachment/id`` of every running instance and of every
    /// namespace a ``PreparedNamespacePool`` of a running kiln holds.
    ///
    /// On a user's network (no ``configuration``) only the attachments kiln cached are undone: its
    /// bridge and its IPAM are shared with whatever else uses that network (podman, another kiln
    /// state directory), so an address or veth kiln has no result for is not kiln's to take.
    @discardableResult
    public func garbageCollect(liveIDs: Set<String>) async throws -> [String] {
        var removed: [String] = []
        let cached = cachedAttachments()
        var dead = Set(cached.map(\.id))
        if configuration != nil { dead.formUnion(ipamAddresses().values) }
        if let firewall { dead.formUnion(try await firewall.sandboxRules().map(\.id)) }
        dead.subtract(liveIDs)
        for id in dead.sorted() {
            let entry = cached.first { $0.id == id }
            do {
                try await del(id: id, namespacePath: entry?.namespacePath ?? "", result: entry?.result)
                removed.append("released '\(id)' (CNI DEL)")
            } catch {
                removed.append("CNI DEL of '\(id)' failed: \(error)")
            }
            removeCachedResult(id: id)
        }
        if let firewall {
            removed += try await firewall.removeRules(of: dead).map { "removed rule \($0)" }
        }
        // Veths: the kernel deletes a veth with its namespace, so these are only left where a
        // namespace is still pinned and its attachment forgotten.
        let liveVeths = Set(cachedAttachments().filter { liveIDs.contains($0.id) }.compactMap { hostInterface(of: $0) })
        if let bridge = configuration?.bridge {
            for veth in try await Self.interfaces(onBridge: bridge) where !liveVeths.contains(veth) {
                let output = try await Subprocess.run(Self.ipTool, ["link", "del", veth], environment: NetworkFirewall.environment)
                removed.append(output.status.isSuccess ? "deleted veth \(veth)" : "could not delete veth \(veth): \(output.stderr)")
            }
        }
        return removed
    }

    /// Removes the network itself once no sandbox is on it: its firewall chains, its bridge, its
    /// IPAM directory and conflist. Attachments still there are collected first.
    public func tearDown() async throws {
        try await garbageCollect(liveIDs: [])
        try await firewall?.removeAll()
        if let bridge = configuration?.bridge {
            _ = try await Subprocess.run(Self.ipTool, ["link", "del", bridge], environment: NetworkFirewall.environment)
        }
        if configuration != nil {
            if let ipam = list.ipamDirectory { try? FileManager.default.removeItem(atPath: "\(ipam)/\(name)") }
            try? FileManager.default.removeItem(atPath: "\(directory)/\(name).conflist")
        }
    }

    // MARK: reading the host

    func hostInterface(of entry: CachedAttachment) -> String? {
        (try? JSONDecoder().decode(CNIResult.self, from: entry.result))?.hostInterface(bridge: configuration?.bridge ?? list.bridge)
    }

    /// host-local's files: `<dataDir>/<network>/<address>` holding "<id>\r\n<ifname>".
    func ipamAddresses() -> [String: String] {
        guard let ipam = list.ipamDirectory else { return [:] }
        let directory = "\(ipam)/\(name)"
        var addresses: [String: String] = [:]
        for file in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where IPv4.parse(file) != nil || file.contains(":") {
            guard let text = try? String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8) else { continue }
            // "\r\n" is one Character in Swift: split on any newline.
            addresses[file] = String(text.split(whereSeparator: \.isNewline).first ?? "")
        }
        return addresses
    }

    static var ipTool: String {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "ip"
    }

    /// The interfaces enslaved to `bridge` (none if there is no such bridge).
    public static func interfaces(onBridge bridge: String) async throws -> [String] {
        let output = try await Subprocess.run(ipTool, ["-o", "link", "show", "master", bridge], environment: NetworkFirewall.environment)
        guard output.status.isSuccess else { return [] }
        // "12: veth1234@if2: <BROADCAST,...> mtu 1500 master kiln0 ..."
        return output.stdout.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ":", maxSplits: 2)
            guard fields.count >= 2 else { return nil }
            return String(fields[1].trimmingCharacters(in: .whitespaces).prefix { $0 != "@" })
        }
    }
}
