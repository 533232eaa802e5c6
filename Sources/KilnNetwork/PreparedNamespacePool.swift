import Foundation
import KilnSystem

/// How the pool makes and unmakes a network namespace (real pins, or files in unit tests).
public struct NamespaceFactory: Sendable {
    public var create: @Sendable (String) throws -> Void
    public var remove: @Sendable (String) -> Void

    public init(create: @escaping @Sendable (String) throws -> Void, remove: @escaping @Sendable (String) -> Void) {
        self.create = create
        self.remove = remove
    }

    /// Pinned namespaces with `lo` up (``NetworkNamespace``), as runc joins them.
    public static let pinned = NamespaceFactory(create: { try NetworkNamespace.create(at: $0) }, remove: { NetworkNamespace.remove(at: $0) })
}

/// Network namespaces made and attached ahead of demand, so a restore takes one at once.
///
/// A CNI ADD costs ~10 ms and a DEL 20-50 ms here (more with per-sandbox masquerade), each longer
/// than a restore should wait. The pool keeps `capacity` namespaces ready, each created under
/// `namespaceDirectory` and attached to `network` with `tag` (one pool per snapshot: the tag
/// decides who may reach whom). ``take()`` hands out a ready one and refills in the background;
/// ``release(_:)`` detaches and deletes a used one in the background; ``drain()`` detaches all.
///
/// ```swift
/// let pool = PreparedNamespacePool(network: network, tag: "hello", capacity: 4, namespaceDirectory: paths.networkNamespaces)
/// await pool.start()
/// let attachment = try await pool.take()          // runc restore joins attachment.namespacePath
/// ...
/// await pool.release(attachment)                  // after the container is gone
/// await pool.drain()                              // at shutdown
/// ```
///
/// For `kiln gc` in another process, ``ids`` are live: pass them with the instances' ids.
public actor PreparedNamespacePool {
    /// How the pool has fared.
    public struct Statistics: Sendable, Equatable {
        /// ``take()`` calls answered from the ready namespaces.
        public var hits = 0
        /// ``take()`` calls that had to prepare a namespace on the spot.
        public var misses = 0
        /// Namespaces made and attached.
        public var prepared = 0
        /// Namespaces detached and deleted.
        public var released = 0
        /// Preparations and releases that failed.
        public var failures = 0
        /// The last failure, as text.
        public var lastError: String?
    }

    public let network: any SandboxNetwork
    public let tag: String
    public let capacity: Int
    public let namespaceDirectory: String
    let idPrefix: String
    let namespaces: NamespaceFactory
    /// How long a refill waits after a ``take()`` before it starts, so the CNI ADD (plugins and
    /// `iptables-restore`) does not compete for the CPU with the restore that just took one.
    public let refillDelay: Duration

    private var ready: [NetworkAttachment] = []
    private var preparing: Set<String> = []
    private var releasing: [NetworkAttachment] = []
    private var filler: Task<Void, Never>?
    private var releaser: Task<Void, Never>?
    private var draining = false
    public private(set) var statistics = Statistics()

    /// - Parameters:
    ///   - idPrefix: the start of every namespace's id (and file name); a random suffix follows.
    ///   - refillDelay: the pause between a ``take()`` and the refill it starts.
    public init(
        network: any SandboxNetwork, tag: String, capacity: Int, namespaceDirectory: String,
        idPrefix: String = "net-", namespaces: NamespaceFactory = .pinned, refillDelay: Duration = .zero
    ) {
        self.refillDelay = refillDelay
        self.network = network
        self.tag = tag
        self.capacity = max(0, capacity)
        self.namespaceDirectory = namespaceDirectory
        self.idPrefix = idPrefix
        self.namespaces = namespaces
    }

    /// Starts filling the pool in the background.
    public func start() {
        refill()
    }

    /// How many namespaces are ready now.
    public var readyCount: Int { ready.count }

    /// Every id the pool holds: ready, being prepared, being released.
    public var ids: Set<String> {
        Set(ready.map(\.id)).union(preparing).union(releasing.map(\.id))
    }

    /// A ready namespace if there is one (instantly), otherwise one prepared now. The caller
    /// owns it: give it back with ``release(_:)``.
    public func take() async throws -> NetworkAttachment {
        guard !draining else {
            throw KilnError(.invalidArgument, "the namespace pool of '\(tag)' is drained")
        }
        if !ready.isEmpty {
            statistics.hits += 1
            let attachment = ready.removeFirst()
            refill(after: refillDelay)
            return attachment
        }
        statistics.misses += 1
        let attachment = try await prepare()
        // Refilled only now: while this one was prepared, it counted against the capacity.
        refill()
        return attachment
    }

    /// Detaches and deletes a namespace handed out by ``take()``, in the background, one after
    /// another (call it once nothing runs in the namespace any more).
    public func release(_ attachment: NetworkAttachment) {
        releasing.append(attachment)
        guard releaser == nil else { return }
        releaser = Task { await self.releaseAll() }
    }

    /// Stops refilling, waits for the work under way, and detaches and deletes every namespace
    /// the pool still holds. The pool hands out nothing afterwards.
    public func drain() async {
        draining = true
        await filler?.value
        let unused = ready
        ready = []
        releasing += unused
        if releaser == nil { releaser = Task { await self.releaseAll() } }
        await releaser?.value
    }

    // MARK: the background work

    private func refill(after delay: Duration = .zero) {
        guard filler == nil, !draining, ready.count + preparing.count < capacity else { return }
        filler = Task { await self.fill(after: delay) }
    }

    /// Prepares namespaces one at a time until the pool is full; stops at the first failure
    /// (the next ``take()`` tries again) so a broken network does not spin.
    private func fill(after delay: Duration = .zero) async {
        if delay > .zero { try? await Task.sleep(for: delay) }
        while !draining, ready.count + preparing.count < capacity {
            do {
                let attachment = try await prepare()
                if draining {
                    releasing.append(attachment)
                } else {
                    ready.append(attachment)
                }
            } catch {
                break
            }
        }
        filler = nil
    }

    private func prepare() async throws -> NetworkAttachment {
        let id = idPrefix + (0..<6).map { _ in UInt8.random(in: .min ... .max) }.hexDigits
        let path = "\(namespaceDirectory)/\(id)"
        preparing.insert(id)
        defer { preparing.remove(id) }
        do {
            try namespaces.create(path)
        } catch {
            record(error)
            throw error
        }
        do {
            let attachment = try await network.attach(namespacePath: path, id: id, tag: tag)
            statistics.prepared += 1
            return attachment
        } catch {
            namespaces.remove(path)
            record(error)
            throw error
        }
    }

    private func releaseAll() async {
        while !releasing.isEmpty {
            let attachment = releasing[0]
            do {
                try await network.detach(attachment)
                statistics.released += 1
            } catch {
                record(error)
            }
            namespaces.remove(attachment.namespacePath)
            releasing.removeFirst()
        }
        releaser = nil
    }

    private func record(_ error: Error) {
        statistics.failures += 1
        statistics.lastError = "\(error)"
    }
}
