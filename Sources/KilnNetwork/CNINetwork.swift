import Foundation
import KilnSystem

/// A sandbox's place on a network: what ``SandboxNetwork/attach(namespacePath:id:tag:)`` made, and
/// everything ``SandboxNetwork/detach(_:)`` needs to undo it (kept in the instance's record).
public struct NetworkAttachment: Codable, Sendable, Equatable {
    /// The network's name (`kiln`, or a user's CNI network).
    public var network: String
    /// The id the network knows the sandbox by (CNI_CONTAINERID); ``CNINetwork/garbageCollect(liveIDs:)``
    /// keeps the attachments whose `id` it is given.
    public var id: String
    /// The isolation group, e.g. the snapshot's name: only sandboxes of one tag reach each other.
    /// ``sharedTag`` puts no isolation rule in place: every sandbox reaches such an attachment
    /// (a database host on the network, say); it answers them but cannot open connections to
    /// sandboxes of any tag.
    public var tag: String

    /// The tag of hosts every sandbox may reach (no isolation rules).
    public static let sharedTag = ""
    /// The interface inside the namespace, e.g. `eth0`.
    public var interface: String
    /// The sandbox's address with prefix, e.g. `10.213.0.5/16`.
    public var address: String
    /// The default gateway (the bridge's address).
    public var gateway: String?
    /// The host end of the veth, if the plugins reported one.
    public var hostInterface: String?
    /// The pinned network namespace the sandbox runs in.
    public var namespacePath: String
    /// The text of the sandbox's `/etc/resolv.conf` (bind-mount it into the container).
    public var resolvConf: String
    /// The CNI result of the ADD, passed back to DEL and CHECK as `prevResult`.
    public var result: Data

    /// The address without its prefix length.
    public var ip: String { IPv4.stripPrefix(address) }
}

/// Puts sandboxes on a network and takes them off again.
///
/// The engine calls ``attach(namespacePath:id:tag:)`` for a namespace it created (before `runc
/// restore` joins it) and ``detach(_:)`` after the container is gone (before the namespace is
/// unpinned). Both take tens of milliseconds: ``PreparedNamespacePool`` does them off the
/// request path.
public protocol SandboxNetwork: Sendable {
    /// The network's name.
    var name: String { get }
    /// Adds the sandbox `id` in the namespace at `namespacePath` to the network, in isolation
    /// group `tag`.
    func attach(namespacePath: String, id: String, tag: String) async throws -> NetworkAttachment
    /// Removes what ``attach(namespacePath:id:tag:)`` added; succeeds if it is already gone.
    func detach(_ attachment: NetworkAttachment) async throws
}

/// A network of CNI plugins (the CNI 1.0 specification), by default kiln's own network `kiln`.
///
/// ```swift
/// let network = try CNINetwork.kiln(stateDirectory: paths.state)   // writes $KILN_STATE/cni/kiln.conflist
/// let attachment = try await network.attach(namespacePath: netns, id: instance.id, tag: snapshot)
/// // ... runc restore into netns, bind-mount attachment.resolvConf as /etc/resolv.conf ...
/// try await network.detach(attachment)
/// ```
///
/// ADD runs the list's plugins in order (each given the previous result), DEL in reverse order
/// (with the ADD's result), CHECK in order. Each ADD's result is also cached in
/// `$KILN_STATE/cni/results/<network>-<id>.json`, so ``garbageCollect(liveIDs:)`` can undo
/// attachments whose kiln was killed.
public struct CNINetwork: SandboxNetwork {
    /// The plugins to run.
    public var list: CNIConfigurationList
    /// Set for kiln's own network: the firewall, masquerade and resolv.conf come from it.
    public var configuration: NetworkConfiguration?
    /// `$KILN_STATE/cni`: the conflist, IPAM addresses, cached results and the firewall lock.
    public var directory: String
    /// Where the plugins are (CNI_PATH): `KILN_CNI_PATH`, else `/usr/lib/cni` (Debian) and
    /// `/opt/cni/bin` (upstream).
    public var pluginDirectories: [String]

    public var name: String { list.name }

    public init(
        list: CNIConfigurationList, configuration: NetworkConfiguration? = nil, directory: String,
        pluginDirectories: [String] = CNINetwork.defaultPluginDirectories()
    ) {
        self.list = list
        self.configuration = configuration
        self.directory = directory
        self.pluginDirectories = pluginDirectories
    }

    public static func defaultPluginDirectories(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        if let path = environment["KILN_CNI_PATH"], !path.isEmpty { return path.split(separator: ":").map(String.init) }
        return ["/usr/lib/cni", "/opt/cni/bin"]
    }

    /// kiln's own network under `stateDirectory` (`$KILN_STATE`), from `configuration` (by
    /// default ``NetworkConfiguration/kilnDefault(environment:hostResolvConf:)``). Writes its
    /// conflist to `$KILN_STATE/cni/<name>.conflist`, so `cnitool` or a user can read it.
    public static func kiln(stateDirectory: String, configuration: NetworkConfiguration? = nil) throws -> CNINetwork {
        let configuration = try configuration ?? NetworkConfiguration.kilnDefault()
        let directory = "\(stateDirectory)/cni"
        try FileManager.default.createDirectory(
            atPath: "\(directory)/ipam", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let list = try configuration.conflist(ipamDirectory: "\(directory)/ipam")
        try list.json.write(to: URL(fileURLWithPath: "\(directory)/\(configuration.name).conflist"), options: .atomic)
        return CNINetwork(list: list, configuration: configuration, directory: directory)
    }

    /// A user's CNI network `name`, from `$KILN_STATE/cni/` or `/etc/cni/net.d/`. kiln installs no
    /// firewall for it: its plugins decide what the sandbox reaches.
    public static func named(_ name: String, stateDirectory: String, searchDirectories: [String] = ["/etc/cni/net.d"]) throws -> CNINetwork {
        let directory = "\(stateDirectory)/cni"
        let (list, _) = try CNIConfigurationList.find(name, in: [directory] + searchDirectories)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return CNINetwork(list: list, directory: directory)
    }

    /// kiln's firewall for this network (nil for a user's network).
    public var firewall: NetworkFirewall? {
        guard let configuration else { return nil }
        return NetworkFirewall(
            bridge: configuration.bridge, subnet: configuration.subnet, masquerade: configuration.masquerade, lockPath: "\(directory)/firewall.lock")
    }

    var interface: String { configuration?.interface ?? "eth0" }

    // MARK: attach, detach, check

    public func attach(namespacePath: String, id: String, tag: String) async throws -> NetworkAttachment {
        let action = "attaching '\(id)' to the network '\(name)'"
        do {
            try Self.validateID(id)
            let chainsSeen = try await firewall?.ensureBase()
            let result = try await add(id: id, namespacePath: namespacePath)
            try cacheResult(result, id: id, namespacePath: namespacePath, tag: tag)
            let attachment: NetworkAttachment
            do {
                attachment = try makeAttachment(result: result, id: id, namespacePath: namespacePath, tag: tag)
                if let firewall, tag != NetworkAttachment.sharedTag {
                    try await firewall.add(id: id, address: attachment.ip, tag: tag, chainsSeen: chainsSeen)
                }
            } catch {
                try? await del(id: id, namespacePath: namespacePath, result: result)
                try? await firewall?.remove(id: id)
                removeCachedResult(id: id)
                throw error
            }
            return attachment
        } catch let error as KilnError {
            throw error.during(action)
        }
    }

    public func detach(_ attachment: NetworkAttachment) async throws {
        do {
            // The rules first: the address must not be reachable under the next owner's tag.
            try await firewall?.remove(id: attachment.id)
            try await del(id: attachment.id, namespacePath: attachment.namespacePath, result: attachment.result)
            removeCachedResult(id: attachment.id)
        } catch let error as KilnError {
            throw error.during("detaching '\(attachment.id)' from the network '\(name)'")
        }
    }

    /// CNI CHECK: the plugins verify the interface, address and routes are still as ADD made them.
    public func check(_ attachment: NetworkAttachment) async throws {
        do {
            for (index, type) in list.pluginTypes.enumerated() {
                let call = CNIPluginCall(
                    .check, containerID: attachment.id, namespacePath: attachment.namespacePath, interface: attachment.interface,
                    pluginDirectories: pluginDirectories)
                _ = try await call.run(type: type, configuration: list.pluginConfiguration(index, previousResult: attachment.result))
            }
        } catch let error as KilnError {
            throw error.during("checking '\(attachment.id)' on the network '\(name)'")
        }
    }

    /// ADD through every plugin; on a failure the plugins already run are undone (DEL).
    func add(id: String, namespacePath: String) async throws -> Data {
        var result: Data?
        for (index, type) in list.pluginTypes.enumerated() {
            let call = CNIPluginCall(.add, containerID: id, namespacePath: namespacePath, interface: interface, pluginDirectories: pluginDirectories)
            do {
                result = try await call.run(type: type, configuration: list.pluginConfiguration(index, previousResult: result))
            } catch {
                try? await del(id: id, namespacePath: namespacePath, result: result, upTo: index)
                throw error
            }
        }
        guard let result, !result.isEmpty else {
            throw KilnError(.runtimeFailed, "the CNI plugins returned no result for ADD")
        }
        return result
    }

    /// DEL through the plugins in reverse order (all of them, or those before `upTo`). Every
    /// plugin is called even if one fails; the first failure is thrown at the end.
    func del(id: String, namespacePath: String, result: Data?, upTo: Int? = nil) async throws {
        var firstError: Error?
        let namespace = NetworkNamespace.isPinned(namespacePath) ? namespacePath : ""
        for index in (0..<(upTo ?? list.pluginTypes.count)).reversed() {
            let call = CNIPluginCall(.del, containerID: id, namespacePath: namespace, interface: interface, pluginDirectories: pluginDirectories)
            do {
                _ = try await call.run(type: list.pluginTypes[index], configuration: list.pluginConfiguration(index, previousResult: result))
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
    }

    func makeAttachment(result: Data, id: String, namespacePath: String, tag: String) throws -> NetworkAttachment {
        let decoded: CNIResult
        do {
            decoded = try JSONDecoder().decode(CNIResult.self, from: result)
        } catch {
            throw KilnError(.runtimeFailed, "the CNI result is not valid: \(error)", details: [String(decoding: result.prefix(400), as: UTF8.self)])
        }
        guard let ip = decoded.address(on: interface) else {
            throw KilnError(
                .runtimeFailed, "the CNI result has no address for the sandbox", details: [String(decoding: result.prefix(400), as: UTF8.self)])
        }
        var dns = configuration?.dns ?? DNSConfiguration()
        if let fromResult = decoded.dns, !(fromResult.nameservers ?? []).isEmpty {
            dns = DNSConfiguration(nameservers: fromResult.nameservers ?? [], search: fromResult.search ?? [], options: fromResult.options ?? [])
        }
        return NetworkAttachment(
            network: name, id: id, tag: tag, interface: interface, address: ip.address, gateway: ip.gateway,
            hostInterface: decoded.hostInterface(bridge: configuration?.bridge ?? list.bridge), namespacePath: namespacePath,
            resolvConf: dns.resolvConf, result: result)
    }

    static func validateID(_ id: String) throws {
        guard InputValidation.isASCIIName(id, punctuation: "_.-", alphanumericFirst: true) else {
            throw KilnError(.invalidArgument, "'\(id)' is not a valid CNI container id (letters, digits, '_', '.', '-')")
        }
    }

    // MARK: cached results (what garbage collection works from)

    /// One cached ADD: enough to DEL it without the instance's record.
    struct CachedAttachment: Codable {
        var id: String
        var namespacePath: String
        var tag: String
        var result: Data
        /// The network's name (absent in results cached before it was recorded).
        var network: String?
    }

    /// The names of the networks with attachments cached under `stateDirectory` (`$KILN_STATE`):
    /// what `kiln gc` must look at besides kiln's own network.
    public static func networksWithCachedAttachments(stateDirectory: String) -> Set<String> {
        let directory = "\(stateDirectory)/cni/results"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(
            files.filter { $0.hasSuffix(".json") }.compactMap { file in
                FileManager.default.contents(atPath: "\(directory)/\(file)").flatMap { try? JSONDecoder().decode(CachedAttachment.self, from: $0) }?
                    .network
            })
    }

    var resultsDirectory: String { "\(directory)/results" }

    func resultPath(id: String) -> String { "\(resultsDirectory)/\(name)-\(id).json" }

    func cacheResult(_ result: Data, id: String, namespacePath: String, tag: String) throws {
        try FileManager.default.createDirectory(atPath: resultsDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let data = try JSONEncoder().encode(CachedAttachment(id: id, namespacePath: namespacePath, tag: tag, result: result, network: name))
        try RuntimeFile.replace(resultPath(id: id), with: data)
    }

    func removeCachedResult(id: String) {
        try? FileManager.default.removeItem(atPath: resultPath(id: id))
    }

    func cachedAttachments() -> [CachedAttachment] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: resultsDirectory)) ?? []
        return files.filter { $0.hasPrefix("\(name)-") && $0.hasSuffix(".json") }.compactMap { file in
            FileManager.default.contents(atPath: "\(resultsDirectory)/\(file)").flatMap { try? JSONDecoder().decode(CachedAttachment.self, from: $0) }
        }
    }
}
