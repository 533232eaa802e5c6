import Foundation
import Testing

@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// The cipher over a large file on tmpfs (KILN_BENCH_CIPHER=MiB runs it, opt-in: it takes seconds):
/// the round trip must give back every byte, and the figures are printed for the record.
@Suite("snapshot encryption at size")
struct SnapshotCipherThroughputTests {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["KILN_BENCH_CIPHER"] != nil, "set KILN_BENCH_CIPHER=MiB to measure"))
    func aLargeFileRoundTripsExactly() throws {
        let mib = Int(ProcessInfo.processInfo.environment["KILN_BENCH_CIPHER"] ?? "") ?? 256
        let directory = "/dev/shm/kiln-unit-cipher-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let plain = "\(directory)/plain"
        var generator = SystemRandomNumberGenerator()
        let block = Data((0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) })
        _ = FileManager.default.createFile(atPath: plain, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: plain))
        for _ in 0..<mib { handle.write(block) }
        try handle.close()
        let key = try SnapshotKey(bytes: [UInt8](repeating: 0x42, count: 32), source: "test.key")
        let binding = SnapshotCipher.Binding(snapshot: "svc", bake: "00000000deadbeef", path: "pages-1.img.enc")

        let started = ContinuousClock.now
        try SnapshotCipher.encrypt(plain, to: "\(plain).enc", binding: binding, key: key)
        let encrypted = ContinuousClock.now
        try SnapshotCipher.decrypt("\(plain).enc", to: "\(directory)/out", binding: binding, key: key)
        let decrypted = ContinuousClock.now

        #expect(try FileDigest.sha256(ofFile: "\(directory)/out") == FileDigest.sha256(ofFile: plain))
        let sealedSize = try FileManager.default.attributesOfItem(atPath: "\(plain).enc")[.size] as? Int ?? 0
        #expect(sealedSize > mib << 20, "the sealed file holds every byte plus headers and tags")
        let encryptS = started.duration(to: encrypted).milliseconds / 1000
        let decryptS = encrypted.duration(to: decrypted).milliseconds / 1000
        print(
            String(
                format: "cipher throughput, %d MiB on tmpfs: encrypt %.0f ms (%.0f MiB/s), decrypt %.0f ms (%.0f MiB/s)",
                mib, encryptS * 1000, Double(mib) / encryptS, decryptS * 1000, Double(mib) / decryptS))
    }
}
