import Foundation
import KilnNetwork
import KilnSnapshot
import KilnSystem

/// How a sandbox joins a network: the network step of ``SandboxLifecycle``.
package enum SandboxNetworkPlan: Sendable {
    /// Loopback only (`--network none`): a fresh namespace with `lo`.
    case none
    /// A fresh namespace attached to `network` (CNI ADD) in isolation group `tag`, detached at
    /// tear-down (CNI DEL).
    case attach(any SandboxNetwork, tag: String)
    /// A namespace taken ready-made (created and attached ahead of demand) from `pool`, given
    /// back to it at tear-down (it detaches and deletes it in the background).
    case pool(PreparedNamespacePool)

    /// Whether the sandbox has a network beside loopback.
    package var isNetworked: Bool {
        if case .none = self { return false }
        return true
    }
}

/// `--network kiln|none|<name>`.
package enum NetworkChoice {
    /// kiln's own network (bridge `kiln0`, 10.213.0.0/16).
    package static let kiln = "kiln"
    /// Loopback only.
    package static let none = "none"

    /// The name to record in a manifest: nil for `none`.
    package static func recorded(_ name: String?) -> String? {
        guard let name, !name.isEmpty, name != none else { return nil }
        return name
    }
}

extension Kiln {
    /// The network called `name` (`kiln`: kiln's own under `$KILN_STATE/cni`; another name: a
    /// user's CNI configuration), or nil for `none`.
    package func network(named name: String?) throws -> (any SandboxNetwork)? {
        guard let name = NetworkChoice.recorded(name) else { return nil }
        if let openNetwork { return try openNetwork(name) }
        do {
            if name == NetworkChoice.kiln { return try CNINetwork.kiln(stateDirectory: paths.state) }
            return try CNINetwork.named(name, stateDirectory: paths.state)
        } catch let error as KilnError {
            throw error.during("opening the network '\(name)'")
        }
    }

    /// The network step of a sandbox of snapshot `snapshot` on network `name`: a pool's ready
    /// namespace if `pool` is given, else a fresh attachment.
    package func networkPlan(_ name: String?, snapshot: String, pool: PreparedNamespacePool? = nil) throws -> SandboxNetworkPlan {
        guard NetworkChoice.recorded(name) != nil else { return .none }
        if let pool { return .pool(pool) }
        guard let network = try network(named: name) else { return .none }
        return .attach(network, tag: snapshot)
    }

    /// Where the namespace pools of this process pin their namespaces: a directory marked with
    /// this process (``OwnerMark``), so `kiln gc` in another process spares them while it lives.
    package func poolNamespaceDirectory() throws -> String {
        let directory = "\(paths.networkNamespaces)/pool-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try OwnerMark.write(into: directory)
        return directory
    }

    /// Removes this process's pool directory once no pool pins a namespace in it (after every
    /// pool is drained).
    package func removePoolNamespaceDirectory() {
        let directory = "\(paths.networkNamespaces)/pool-\(getpid())"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        guard entries.allSatisfy({ $0 == OwnerMark.fileName }) else { return }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A pool of `capacity` namespaces prepared on the network of `manifest` for its copies
    /// (started: it fills in the background), or nil for a loopback-only snapshot. Drain it
    /// (``PreparedNamespacePool/drain()``) before the process ends.
    package func namespacePool(for manifest: SnapshotManifest, network name: String? = nil, capacity: Int) async throws -> PreparedNamespacePool? {
        guard let network = try network(named: name ?? manifest.network) else { return nil }
        // The refill waits until the restore that took a namespace has answered (~100 ms here).
        let pool = PreparedNamespacePool(
            network: network, tag: manifest.name, capacity: capacity, namespaceDirectory: try poolNamespaceDirectory(),
            refillDelay: .milliseconds(300))
        await pool.start()
        return pool
    }
}

extension Kiln {
    /// Lets `sandbox` (adopted from `record`) detach the record's network at tear-down.
    package func adoptNetwork(of record: InstanceRecord, into sandbox: inout SandboxLifecycle) {
        guard let attachment = record.network else { return }
        do {
            guard let network = try network(named: attachment.network) else { return }
            sandbox.adoptNetwork(attachment, network: network)
        } catch {
            logger.warning("cannot open the network '\(attachment.network)' of \(record.id) ('kiln gc' releases its address): \(error)")
        }
    }

    /// Namespace pools of running kilns under ``KilnPaths/networkNamespaces`` (`pool-<pid>`,
    /// marked with their process): the ids of their namespaces. A dead kiln's pool directory has
    /// its pins removed and goes (its addresses are released by ``collectNetworkGarbage(liveIDs:)``).
    package func sweepNamespacePools() -> (live: Set<String>, removed: [String]) {
        var live = Set<String>()
        var removed: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: paths.networkNamespaces)) ?? [] where entry.hasPrefix("pool-") {
            let directory = "\(paths.networkNamespaces)/\(entry)"
            let pins = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            if OwnerMark.ownerIsAlive(directory) {
                live.formUnion(pins.filter { $0 != OwnerMark.fileName })
                continue
            }
            for pin in pins where pin != OwnerMark.fileName {
                NetworkNamespace.remove(at: "\(directory)/\(pin)")
                removed.append("\(entry)/\(pin)")
            }
            try? FileManager.default.removeItem(atPath: directory)
        }
        return (live, removed)
    }

    /// Releases the addresses, veths and firewall rules of kiln's network that belong to no id in
    /// `liveIDs` (an instance kiln keeps, a live bake, a live pool's namespace), and the
    /// attachments kiln made on users' networks (`--network <name>`) that no live id owns.
    /// Nothing is asked of the host where no network was ever used.
    package func collectNetworkGarbage(liveIDs: Set<String>) async -> [String] {
        guard openNetwork != nil || FileManager.default.fileExists(atPath: "\(paths.state)/cni") else { return [] }
        // A copy on a pool's namespace is known to the network by the namespace's id.
        let live = liveIDs.union(instanceRecords().compactMap { $0.network?.id })
        let others = CNINetwork.networksWithCachedAttachments(stateDirectory: paths.state).subtracting([NetworkChoice.kiln]).sorted()
        var removed: [String] = []
        for name in [NetworkChoice.kiln] + others {
            do {
                guard let network = try network(named: name) as? CNINetwork else { continue }
                removed += try await network.garbageCollect(liveIDs: live).map { name == NetworkChoice.kiln ? $0 : "\($0) on '\(name)'" }
            } catch {
                logger.warning("could not collect the garbage of network '\(name)': \(error)")
                removed.append("garbage collection of network '\(name)' failed: \(error)")
            }
        }
        return removed
    }
}
