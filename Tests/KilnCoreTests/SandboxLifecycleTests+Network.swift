import Foundation
import Logging
import Synchronization
import Testing

@testable import KilnEngine
@testable import KilnNetwork
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// The lifecycle's network step, with a fake network: attached after the namespace, detached
/// before it goes, released whichever step fails, prepared namespaces taken from and given back
/// to a pool.
extension SandboxLifecycleTests {
    // MARK: - The network step

    /// A network that hands out 10.213.0.N and records attach and detach; fails attach when told.
    struct FakeNetwork: SandboxNetwork {
        let world: World
        var name: String { "kiln" }

        func attach(namespacePath: String, id: String, tag: String) async throws -> NetworkAttachment {
            world.record("attach")
            try world.fail(.network)
            let address = world.state.withLock { state -> String in
                state.nextAddress += 1
                state.addresses[id] = "10.213.0.\(state.nextAddress)"
                return "10.213.0.\(state.nextAddress)"
            }
            return NetworkAttachment(
                network: name, id: id, tag: tag, interface: "eth0", address: "\(address)/16", gateway: "10.213.0.1", hostInterface: nil,
                namespacePath: namespacePath, resolvConf: "nameserver 10.213.0.1\n", result: Data("{}".utf8))
        }

        func detach(_ attachment: NetworkAttachment) async throws {
            world.record("detach")
            world.state.withLock { _ = $0.addresses.removeValue(forKey: attachment.id) }
        }
    }

    /// Namespaces a pool makes, recorded as the fake host's are.
    static func namespaces(_ world: World) -> NamespaceFactory {
        NamespaceFactory(
            create: { path in world.state.withLock { _ = $0.namespaces.insert(path) } },
            remove: { path in world.state.withLock { _ = $0.namespaces.remove(path) } })
    }

    @Test func aNetworkedSandboxIsAttachedAfterItsNamespaceAndDetachedBeforeTheNamespaceGoes() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var sandbox = kiln.makeSandbox(id: "svc-000001", directory: "\(kiln.paths.instances)/svc-000001", purpose: "testing")
        try await sandbox.prepare(Self.spec, ownerMark: false, network: .attach(FakeNetwork(world: world), tag: "svc"))
        #expect(world.calls == ["mkdir svc-000001", "mkdir work", "netns create", "attach", "bundle"])
        #expect(world.state.withLock { $0.resolvConf } == "nameserver 10.213.0.1\n", "the bundle binds the network's resolv.conf")
        #expect(sandbox.endpoint(port: 8080).address == "10.213.0.3")
        _ = try await sandbox.restore(dump: "/nonexistent", mergeMemory: false)
        let before = world.calls.count
        await sandbox.tearDown()
        #expect(Array(world.calls.dropFirst(before)) == ["delete", "leftovers", "detach", "netns remove", "reap", "rmdir"])
        Self.expectNothingLeft(world, kiln)
    }

    /// Whichever step fails, the network step's work is undone and the error names the step; with
    /// `attachDuringRestore` (the attachment under way while runc restores), a failed restore
    /// waits for the attachment and detaches it, and a failed attachment removes the restored
    /// container. A failed restore keeps the attachment for the error's explanation.
    @Test(arguments: [FailurePoint.network, .bundle, .restore], [false, true])
    func aNetworkedSandboxThatFailsReleasesItsAddressAndSaysWhichStep(point: FailurePoint, attachDuringRestore: Bool) async throws {
        let world = World(failAt: point)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var sandbox = kiln.makeSandbox(
            id: "svc-000002", directory: "\(kiln.paths.instances)/svc-000002", purpose: "restoring snapshot 'svc' as svc-000002")
        do {
            try await sandbox.prepare(
                Self.spec, ownerMark: false, network: .attach(FakeNetwork(world: world), tag: "svc"), attachDuringRestore: attachDuringRestore)
            _ = try await sandbox.restore(dump: "/nonexistent", mergeMemory: false)
            Issue.record("no failure at \(point)")
        } catch let error as KilnError {
            #expect(error.action.contains("(while \(Self.step(for: point)))"), "\(error.action)")
            #expect(error.cause is InjectedFailure, "\(error)")
        }
        if point == .restore { #expect(sandbox.attachment != nil, "the error's explanation names the copy's address") }
        await sandbox.tearDown()
        #expect(world.calls.contains("detach") == (point != .network), "only an attached sandbox is detached: \(world.calls)")
        Self.expectNothingLeft(world, kiln)
    }

    /// A copy being restored is attached while the runtime restores it: the bundle's
    /// resolv.conf starts empty and gets the network's text once it answered; when `restore`
    /// returns, the copy has its address.
    @Test func aCopyIsAttachedWhileItIsRestoredAndHasItsAddressWhenTheRestoreReturns() async throws {
        let world = World(failAt: nil)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var sandbox = kiln.makeSandbox(id: "svc-000004", directory: "\(kiln.paths.instances)/svc-000004", purpose: "testing")
        try await sandbox.prepare(Self.spec, ownerMark: false, network: .attach(FakeNetwork(world: world), tag: "svc"), attachDuringRestore: true)
        #expect(sandbox.attachment == nil, "prepare does not wait for the network")
        _ = try await sandbox.restore(dump: "/nonexistent", mergeMemory: false)
        #expect(sandbox.endpoint(port: 8080).address?.hasPrefix("10.213.0.") == true)
        let calls = world.calls
        #expect(calls.contains("attach") && calls.last == "resolv.conf", "\(calls)")
        #expect(calls.firstIndex(of: "attach")! > calls.firstIndex(of: "netns create")!)
        #expect(world.state.withLock { $0.resolvConf } == "nameserver 10.213.0.1\n", "the mounted file gets the network's text")
        await sandbox.tearDown()
        #expect(world.calls.contains("detach"))
        Self.expectNothingLeft(world, kiln)
    }

    @Test func aRestoreFromAPoolTakesAReadyNamespaceRecordsItsAddressAndGivesItBack() async throws {
        let world = World(failAt: nil)
        var (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        kiln.openNetwork = { _ in FakeNetwork(world: world) }
        let pool = PreparedNamespacePool(
            network: FakeNetwork(world: world), tag: "svc", capacity: 1, namespaceDirectory: "\(kiln.paths.networkNamespaces)/pool-test",
            namespaces: Self.namespaces(world))
        var manifest = Self.manifest("svc")
        manifest.network = "kiln"
        let record = try await kiln.restoreOne(manifest, shareMemory: false, pool: pool)
        #expect(!world.calls.contains("netns create"), "the namespace comes from the pool")
        #expect(record.address?.hasPrefix("10.213.0.") == true)
        #expect(record.network?.namespacePath == record.networkNamespacePath)
        #expect(record.networkNamespacePath.hasPrefix("\(kiln.paths.networkNamespaces)/pool-test/"))
        #expect(record.endpoint.address == record.address)
        // The record round-trips with its attachment: stop and gc need it.
        let saved = try InstanceRecord.decode(
            try Data(contentsOf: URL(fileURLWithPath: "\(kiln.paths.instances)/\(record.id)/instance.json")), source: "test")
        #expect(saved.network == record.network)
        try await kiln.stop(saved)
        await pool.drain()
        Self.expectNothingLeft(world, kiln)
    }

    /// How a copy of a snapshot starts.
    enum CopyStart: String, CaseIterable, Sendable {
        /// `kiln run`: restored, attached to its network while runc restores it.
        case restore
        /// The gateway's fallback when a restore failed: started from scratch, attached first.
        case coldStart
    }

    /// A copy of a networked snapshot joins the snapshot's network, restored or cold-started (a
    /// service that reached its database at the bake must reach it now): its record has the
    /// address the network gave it, the bundle its DNS, and its stop detaches it.
    @Test(arguments: CopyStart.allCases)
    func aCopyOfANetworkedSnapshotJoinsItsNetworkAndLeavesIt(start: CopyStart) async throws {
        let world = World(failAt: nil)
        var (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        kiln.openNetwork = { _ in FakeNetwork(world: world) }
        var manifest = Self.manifest("svc")
        manifest.network = "kiln"
        func startCopy(network: String? = nil) async throws -> InstanceRecord {
            switch start {
            case .restore: try await kiln.restoreOne(manifest, shareMemory: false, network: network)
            case .coldStart: try await kiln.startColdInstance(manifest, network: network)
            }
        }
        let record = try await startCopy()
        #expect(world.calls.firstIndex(of: "attach").map { $0 > world.calls.firstIndex(of: "netns create")! } == true, "\(world.calls)")
        #expect(record.address?.hasPrefix("10.213.0.") == true)
        #expect(record.endpoint.address == record.address, "the gateway reaches it at its address")
        #expect(world.state.withLock { $0.resolvConf } == "nameserver 10.213.0.1\n")
        try await kiln.stop(record)
        #expect(world.calls.contains("detach"))
        Self.expectNothingLeft(world, kiln)

        // --network none keeps it on loopback.
        let loopback = try await startCopy(network: "none")
        #expect(loopback.address == nil && loopback.network == nil)
        try await kiln.stop(loopback)
        Self.expectNothingLeft(world, kiln)
    }

    @Test func aRestoreFromAPoolThatFailsGivesTheNamespaceBack() async throws {
        let world = World(failAt: .restore)
        let (kiln, root) = try Self.makeKiln(world)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = PreparedNamespacePool(
            network: FakeNetwork(world: world), tag: "svc", capacity: 0, namespaceDirectory: "\(kiln.paths.networkNamespaces)/pool-test",
            namespaces: Self.namespaces(world))
        var manifest = Self.manifest("svc")
        manifest.network = "kiln"
        await #expect(throws: KilnError.self) { try await kiln.restoreOne(manifest, shareMemory: false, pool: pool) }
        // Released in the background: drain waits for it.
        await pool.drain()
        #expect(await pool.statistics.released == 1)
        Self.expectNothingLeft(world, kiln)
    }

    @Test func anOldRecordHasNoNetwork() throws {
        let json = """
            {"id":"svc-000003","snapshot":"svc","pid":10,"shimPid":11,"port":8080,"createdAt":"2026-12-04T22:00:00Z",
             "networkNamespacePath":"/run/kiln/netns/svc-000003","cgroupPath":"/kiln/svc-000003","logPath":"/run/kiln/x.log",
             "restoreMs":10,"firstResponseMs":20,"sharesMemory":true}
            """
        let record = try InstanceRecord.decode(Data(json.utf8), source: "test")
        #expect(record.network == nil && record.address == nil && record.endpoint.address == nil)
    }
}
