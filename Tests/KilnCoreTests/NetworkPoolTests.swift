import Foundation
import KilnSystem
import Testing

@testable import KilnNetwork

/// The pool of prepared namespaces against a stand-in network (no root, no plugins): namespaces
/// are plain files, attach and detach take a set time and can be made to fail.
@Suite("network: prepared namespace pool")
struct NetworkPoolTests {
    @Test func fillsToCapacityAndHandsOutReadyNamespacesAtOnce() async throws {
        let fake = FakeNetwork(delay: .milliseconds(40))
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = PreparedNamespacePool(network: fake, tag: "hello", capacity: 3, namespaceDirectory: directory, namespaces: .files)
        await pool.start()
        try await waitUntil { await pool.readyCount == 3 }
        #expect(await fake.attached.count == 3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).count == 3)

        // A ready namespace comes without waiting for an attach (40 ms here).
        let clock = ContinuousClock()
        let start = clock.now
        let first = try await pool.take()
        let elapsed = start.duration(to: clock.now)
        #expect(elapsed < .milliseconds(20), "take() of a ready namespace took \(elapsed)")
        #expect(first.tag == "hello")
        #expect(first.namespacePath.hasPrefix(directory + "/"))
        #expect(FileManager.default.fileExists(atPath: first.namespacePath))
        // ... and the pool refills behind it.
        try await waitUntil { await pool.readyCount == 3 }
        #expect(await fake.attached.count == 4)
        #expect(await pool.statistics.hits == 1)
        #expect(await pool.statistics.misses == 0)
        #expect(await pool.ids.count == 3, "the taken namespace belongs to the caller now")

        await pool.release(first)
        try await waitUntil { await fake.detached.contains(first.id) }
        try await waitUntil { !FileManager.default.fileExists(atPath: first.namespacePath) }

        await pool.drain()
        #expect(await fake.attached.isEmpty, "drain() detaches every namespace the pool held")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
        #expect(await pool.statistics.prepared == 4)
        #expect(await pool.statistics.released == 4)
        await #expect(throws: KilnError.self) { _ = try await pool.take() }
    }

    @Test func anEmptyPoolPreparesOnTheSpot() async throws {
        let fake = FakeNetwork(delay: .milliseconds(30))
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = PreparedNamespacePool(network: fake, tag: "t", capacity: 1, namespaceDirectory: directory, namespaces: .files)
        // Not started: nothing ready, so take() attaches one itself (a miss).
        let taken = try await pool.take()
        #expect(await pool.statistics.misses == 1)
        #expect(await fake.attached[taken.id] != nil)
        try await waitUntil { await pool.readyCount == 1 }
        let ids = Set([taken.id, try await pool.take().id])
        #expect(ids.count == 2, "ids are unique")
        await pool.drain()
        #expect(await fake.attached.count == 2, "taken namespaces are the caller's to release")
    }

    @Test func aFailingNetworkFailsTakeAndDoesNotSpin() async throws {
        let fake = FakeNetwork(delay: .milliseconds(1))
        await fake.setFailing(true)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = PreparedNamespacePool(network: fake, tag: "t", capacity: 4, namespaceDirectory: directory, namespaces: .files)
        await pool.start()
        // The filler's failure recorded first (on a loaded machine its task may not have run
        // its attempt to the end yet), then time for it to spin if it would.
        try await waitUntil { await pool.statistics.failures == 1 }
        try await Task.sleep(for: .milliseconds(200))
        #expect(await fake.attempts == 1, "the filler stops at the first failure")
        let error = await #expect(throws: KilnError.self) { _ = try await pool.take() }
        #expect(error?.message == "no addresses left")
        #expect(await pool.statistics.failures >= 2)
        #expect(await pool.statistics.lastError?.contains("no addresses left") == true)
        // A failed preparation leaves no namespace behind.
        try await waitUntil { await pool.ids.isEmpty }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)

        // The network recovers: the next take() works and the pool refills.
        await fake.setFailing(false)
        let taken = try await pool.take()
        try await waitUntil { await pool.readyCount == 4 }
        await pool.release(taken)
        await pool.drain()
        #expect(await fake.attached.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test func drainWaitsForPreparationsUnderWayAndReleasesThem() async throws {
        let fake = FakeNetwork(delay: .milliseconds(80))
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = PreparedNamespacePool(network: fake, tag: "t", capacity: 2, namespaceDirectory: directory, namespaces: .files)
        await pool.start()
        try await Task.sleep(for: .milliseconds(20))  // the first attach is under way
        await pool.drain()
        #expect(await fake.attached.isEmpty)
        #expect(await fake.detached.count == (await pool.statistics.prepared))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
        #expect(await pool.ids.isEmpty)
    }
}

/// A network that hands out addresses after a delay and remembers what is attached.
actor FakeNetwork: SandboxNetwork {
    nonisolated let name = "fake"
    let delay: Duration
    private(set) var attached: [String: NetworkAttachment] = [:]
    private(set) var detached: [String] = []
    private(set) var attempts = 0
    private var failing = false
    private var next: UInt32 = 2

    init(delay: Duration) {
        self.delay = delay
    }

    func setFailing(_ value: Bool) { failing = value }

    func attach(namespacePath: String, id: String, tag: String) async throws -> NetworkAttachment {
        attempts += 1
        try await Task.sleep(for: delay)
        if failing { throw KilnError(.runtimeFailed, "no addresses left") }
        #expect(FileManager.default.fileExists(atPath: namespacePath), "the namespace exists before the attach")
        next += 1
        let attachment = NetworkAttachment(
            network: name, id: id, tag: tag, interface: "eth0", address: "10.0.0.\(next)/24", gateway: "10.0.0.1",
            hostInterface: nil, namespacePath: namespacePath, resolvConf: "", result: Data())
        attached[id] = attachment
        return attachment
    }

    func detach(_ attachment: NetworkAttachment) async throws {
        try await Task.sleep(for: delay)
        attached[attachment.id] = nil
        detached.append(attachment.id)
    }
}

extension NamespaceFactory {
    /// Plain files stand in for pinned namespaces.
    static let files = NamespaceFactory(
        create: { path in
            guard FileManager.default.createFile(atPath: path, contents: nil) else { throw KilnError(.systemCall, "cannot create \(path)") }
        },
        remove: { path in try? FileManager.default.removeItem(atPath: path) })
}

/// Polls `condition` every 5 ms for up to 5 s.
func waitUntil(_ condition: () async throws -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let deadline = ContinuousClock.now + .seconds(5)
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    Issue.record("condition not met within 5 s", sourceLocation: sourceLocation)
}
