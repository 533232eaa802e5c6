import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("the snapshot store")
struct SnapshotStoreTests {
    func makeStore() throws -> (SnapshotStore, String) {
        let root = "/tmp/kiln-unit-store-\(UUID().uuidString)"
        let store = SnapshotStore(root: root)
        try store.prepare()
        return (store, root)
    }

    func manifest(_ name: String, files: [SnapshotFile]) -> SnapshotManifest {
        SnapshotManifest(
            name: name, createdAt: Date(timeIntervalSince1970: 1_800_000_000),
            sandbox: SandboxSpec(command: ["x"], workingDirectory: "/", appDirectory: nil, port: 8080),
            readiness: ReadinessCheck(path: "/health"), warmup: [WarmupStep(count: 3, path: "/a")],
            host: HostFacts(kernel: "6.18", criuVersion: "4.2.1", runtime: "runc 1.1.5"), timings: BakeTimings(coldStartMs: 1000),
            compacted: true, files: files)
    }

    /// Stages two image files and commits them as snapshot `name`.
    func commit(_ store: SnapshotStore, _ name: String) throws -> SnapshotManifest {
        let staging = try store.makeStagingDirectory(for: name)
        try Data(repeating: 7, count: 5000).write(to: URL(fileURLWithPath: "\(staging)/images/pages-1.img"))
        try Data("core".utf8).write(to: URL(fileURLWithPath: "\(staging)/images/core-1.img"))
        return try store.commit(staging: staging) { manifest(name, files: $0) }
    }

    @Test func committedSnapshotsArePrivateAndVerify() throws {
        let (store, root) = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let committed = try commit(store, "svc")
        #expect(committed.sizeBytes == 5004)
        #expect(committed.files.map(\.path) == ["core-1.img", "pages-1.img"])
        let loaded = try store.load("svc")
        #expect(loaded == committed)
        try store.verify(loaded)
        let rootMode = try FileManager.default.attributesOfItem(atPath: root)[.posixPermissions] as? Int
        #expect(rootMode == 0o700)
        let fileMode = try FileManager.default.attributesOfItem(atPath: "\(store.dumpDirectory(of: "svc"))/pages-1.img")[.posixPermissions] as? Int
        #expect(fileMode == 0o600)
        #expect(try store.list().map(\.name) == ["svc"])
        let staged = try FileManager.default.contentsOfDirectory(atPath: "\(root)/staging")
        #expect(staged.isEmpty, "staging is emptied by the commit")
    }

    @Test func verificationNamesTheFileThatChanged() throws {
        let (store, root) = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let committed = try commit(store, "svc")
        let pages = "\(store.dumpDirectory(of: "svc"))/pages-1.img"

        var bytes = try Data(contentsOf: URL(fileURLWithPath: pages))
        bytes[100] ^= 1
        try bytes.write(to: URL(fileURLWithPath: pages))
        let flipped = try #require(throws: KilnError.self) { try store.verify(committed) }
        #expect(flipped.code == .snapshotCorrupt)
        #expect(flipped.message.contains("pages-1.img"))

        try Data(count: 10).write(to: URL(fileURLWithPath: pages))
        let truncated = try #require(throws: KilnError.self) { try store.verify(committed) }
        #expect(truncated.message.contains("10 bytes"))

        try FileManager.default.removeItem(atPath: pages)
        let missing = try #require(throws: KilnError.self) { try store.verify(committed) }
        #expect(missing.message.contains("missing"))
    }

    @Test func anExtraImageFileIsRefused() throws {
        let (store, root) = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let committed = try commit(store, "svc")
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(store.dumpDirectory(of: "svc"))/pages-2.img"))
        let error = try #require(throws: KilnError.self) { try store.verify(committed) }
        #expect(error.message.contains("pages-2.img"))
    }

    @Test func rebakingReplacesOnlyWhenComplete() throws {
        let (store, root) = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = try commit(store, "svc")
        let second = try commit(store, "svc")
        #expect(try store.load("svc") == second)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/staging").isEmpty)
    }

    @Test(arguments: [
        ("{", "not valid JSON"),
        (#"{"format": 1}"#, "has no"),
        (#"{"format": "one"}"#, "wrong type"),
    ])
    func corruptManifestsAreNamedNotCrashed(text: String, expected: String) {
        let error = try? #require(throws: KilnError.self) { try SnapshotManifest.decode(Data(text.utf8), source: "m.json") }
        #expect(error?.code == .snapshotCorrupt)
        #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
    }

    @Test func manifestsWithEscapingPathsAreRefused() throws {
        var bad = manifest("svc", files: [SnapshotFile(path: "../../etc/passwd", size: 1, sha256: String(repeating: "a", count: 64))])
        bad.sizeBytes = 1
        let data = try bad.encoded()
        let error = try #require(throws: KilnError.self) { try SnapshotManifest.decode(data, source: "m.json") }
        #expect(error.message.contains("../../etc/passwd"))
    }

    @Test func missingSnapshotSaysHowToMakeOne() throws {
        let (store, root) = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let error = try #require(throws: KilnError.self) { try store.load("ghost") }
        #expect(error.code == .snapshotNotFound)
        #expect(error.hint?.contains("kiln bake") == true)
    }
}

@Suite("small input checks")
struct SmallInputCheckTests {
    @Test func evictingASnapshotsCacheLeavesOtherSnapshotsWithTheSamePrefix() {
        #expect(DumpCache.entry("hello-9f3a0c1d2e", isVersionOf: "hello"))
        // `hello-2`'s entry, and a name that only starts the same.
        #expect(!DumpCache.entry("hello-2-9f3a0c1d2e", isVersionOf: "hello"))
        #expect(!DumpCache.entry("hello-world-1", isVersionOf: "hello"))
        #expect(!DumpCache.entry("hello-", isVersionOf: "hello"))
        #expect(!DumpCache.entry(".staging-hello-12-34", isVersionOf: "hello"))
        #expect(DumpCache.entry("hello-2-9f3a0c1d2e", isVersionOf: "hello-2"))
    }

    @Test func aPortInTheEnvironmentMustMatchThePortOption() throws {
        func request(_ environment: [String: String]) -> BakeRequest {
            BakeRequest(
                name: "svc",
                sandbox: SandboxSpec(command: ["/bin/sh"], environment: environment, workingDirectory: "/", appDirectory: nil, port: 8080),
                readiness: ReadinessCheck(path: "/health"))
        }
        let error = #expect(throws: KilnError.self) { try request(["PORT": "9090"]).validate() }
        #expect(error?.message.contains("PORT=9090") == true)
        #expect(error?.message.contains("conflicts with --port 8080") == true)
        #expect(error?.hint?.contains("--port 9090") == true)
        try request(["PORT": "8080"]).validate()
        try request([:]).validate()
    }
}
