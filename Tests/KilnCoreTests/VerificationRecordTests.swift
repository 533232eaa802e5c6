import Foundation
import Testing

@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// A snapshot verified once is trusted while its files are unchanged, and a byte written into any
/// of them after a trusted verification is still caught before the next restore.
@Suite("verified once, trusted while unchanged")
struct VerificationRecordTests {
    func makeStore() throws -> (SnapshotStore, [String]) {
        let root = "/tmp/kiln-unit-verify-\(UUID().uuidString)"
        let records = "/dev/shm/kiln-unit-verified-\(UUID().uuidString)"
        var store = SnapshotStore(root: root)
        store.verificationRecords = VerificationRecords(directory: records)
        try store.prepare()
        return (store, [root, records])
    }

    func commit(_ store: SnapshotStore, _ name: String, createdAt: Date = Date()) throws -> SnapshotManifest {
        let staging = try store.makeStagingDirectory(for: name)
        try Data(repeating: 7, count: 3 << 20).write(to: URL(fileURLWithPath: "\(staging)/images/pages-1.img"))
        try Data("core".utf8).write(to: URL(fileURLWithPath: "\(staging)/images/core-1.img"))
        return try store.commit(staging: staging) { files in
            SnapshotManifest(
                name: name, createdAt: createdAt, sandbox: SandboxSpec(command: ["x"], workingDirectory: "/", appDirectory: nil, port: 8080),
                readiness: ReadinessCheck(path: "/health"), warmup: [], host: HostFacts(kernel: "6.18", criuVersion: "4.2.1", runtime: "runc"),
                timings: BakeTimings(), compacted: false, files: files)
        }
    }

    @Test(.enabled(if: DumpCache.isInMemory("/dev/shm"), "records live on tmpfs"))
    func aFlippedByteAfterATrustedVerificationIsStillCaught() throws {
        let (store, cleanup) = try makeStore()
        defer { for path in cleanup { try? FileManager.default.removeItem(atPath: path) } }
        let manifest = try commit(store, "svc")
        #expect(try store.verifyAndSay(manifest) == .hashed)
        #expect(try store.verifyAndSay(manifest) == .trusted)
        #expect(try store.verifyAndSay(manifest) == .trusted)

        // One byte, written in place: same inode, same size, a new change time.
        let pages = "\(store.dumpDirectory(of: "svc"))/pages-1.img"
        let fd = open(pages, O_WRONLY)
        #expect(fd >= 0)
        var byte: UInt8 = 8
        #expect(pwrite(fd, &byte, 1, 1 << 20) == 1)
        close(fd)
        let error = #expect(throws: KilnError.self) { try store.verifyAndSay(manifest) }
        #expect(error?.code == .snapshotCorrupt)
        #expect(error?.message.contains("pages-1.img") == true)
        #expect(throws: KilnError.self, "a failed verification records nothing") { try store.verifyAndSay(manifest) }
    }

    @Test(.enabled(if: DumpCache.isInMemory("/dev/shm"), "records live on tmpfs"))
    func anExtraFileOrAReBakeIsHashedAgain() throws {
        let (store, cleanup) = try makeStore()
        defer { for path in cleanup { try? FileManager.default.removeItem(atPath: path) } }
        let first = try commit(store, "svc", createdAt: Date(timeIntervalSince1970: 1_800_000_000))
        #expect(try store.verifyAndSay(first) == .hashed)
        #expect(try store.verifyAndSay(first) == .trusted)

        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(store.dumpDirectory(of: "svc"))/extra.img"))
        #expect(throws: KilnError.self) { try store.verifyAndSay(first) }
        try FileManager.default.removeItem(atPath: "\(store.dumpDirectory(of: "svc"))/extra.img")

        let second = try commit(store, "svc", createdAt: Date(timeIntervalSince1970: 1_800_000_100))
        #expect(try store.verifyAndSay(second) == .hashed, "a re-bake under the same name never matches the old record")
        try store.remove("svc")
        #expect(!FileManager.default.fileExists(atPath: "\(cleanup[1])/svc.json"), "removing a snapshot forgets its record")
    }

    @Test func withoutRecordsEveryVerificationHashes() throws {
        let root = "/tmp/kiln-unit-verify-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = SnapshotStore(root: root)
        try store.prepare()
        let manifest = try commit(store, "svc")
        #expect(try store.verifyAndSay(manifest) == .hashed)
        #expect(try store.verifyAndSay(manifest) == .hashed)
    }
}
