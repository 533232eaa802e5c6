import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// A scratch directory for one test, removed by `defer`.
private func scratchDirectory(in parent: String = "/tmp") throws -> String {
    let path = "\(parent)/kiln-unit-cipher-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    return path
}

private func randomBytes(_ count: Int) -> Data {
    var generator = SystemRandomNumberGenerator()
    return Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
}

private func makeKey(_ fill: UInt8 = 0x42, source: String = "test.key") throws -> SnapshotKey {
    try SnapshotKey(bytes: [UInt8](repeating: fill, count: 32), source: source)
}

@Suite("snapshot encryption: the chunked AES-256-GCM file format")
struct SnapshotCipherTests {
    /// Small chunks, so the multi-chunk cases stay fast.
    let chunk = 4096
    let binding = SnapshotCipher.Binding(snapshot: "svc", bake: "00000000deadbeef", path: "pages-1.img.enc")

    func encrypt(_ plaintext: Data, in directory: String, key: SnapshotKey? = nil, binding: SnapshotCipher.Binding? = nil) throws -> String {
        let plain = "\(directory)/plain-\(UUID().uuidString)"
        let sealed = plain + ".enc"
        try plaintext.write(to: URL(fileURLWithPath: plain))
        try SnapshotCipher.encrypt(plain, to: sealed, binding: binding ?? self.binding, key: key ?? makeKey(), chunkSize: chunk)
        return sealed
    }

    func decrypt(_ sealed: String, in directory: String, key: SnapshotKey? = nil, binding: SnapshotCipher.Binding? = nil) throws -> Data {
        let out = "\(directory)/out-\(UUID().uuidString)"
        try SnapshotCipher.decrypt(sealed, to: out, binding: binding ?? self.binding, key: key ?? makeKey(), expectedChunkSize: chunk)
        defer { unlink(out) }
        return try Data(contentsOf: URL(fileURLWithPath: out))
    }

    /// Round trip at the sizes where chunking can go wrong: empty, one byte, around one chunk,
    /// an exact multiple of the chunk size, and a partial last chunk.
    @Test(arguments: [0, 1, 4095, 4096, 4097, 3 * 4096, 2 * 4096 + 100])
    func roundTripsAndHasTheDocumentedSize(size: Int) throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let plaintext = randomBytes(size)
        let sealed = try encrypt(plaintext, in: directory)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: sealed))
        #expect(Int64(bytes.count) == SnapshotCipher.encryptedSize(ofPlaintext: Int64(size), chunkSize: chunk))
        #expect(bytes.prefix(7) == Data("KILNENC".utf8))
        if size >= 64 { #expect(bytes.range(of: plaintext.prefix(64)) == nil, "the plaintext must not appear in the encrypted file") }
        #expect(try decrypt(sealed, in: directory) == plaintext)
        let mode = try FileManager.default.attributesOfItem(atPath: sealed)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test func theSameFileEncryptsDifferentlyEachTime() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let plaintext = Data(repeating: 7, count: 10_000)
        let first = try Data(contentsOf: URL(fileURLWithPath: try encrypt(plaintext, in: directory)))
        let second = try Data(contentsOf: URL(fileURLWithPath: try encrypt(plaintext, in: directory)))
        #expect(first != second, "a random file nonce per file")
        #expect(first.count == second.count)
    }

    @Test func aWrongKeyFailsAtTheFirstChunkAndLeavesNoOutput() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(10_000), in: directory)
        let out = "\(directory)/out"
        #expect(throws: SnapshotCipher.Failure.authenticationFailed(chunk: 0, chunks: 3)) {
            try SnapshotCipher.decrypt(sealed, to: out, binding: binding, key: try makeKey(0x43))
        }
        #expect(!FileManager.default.fileExists(atPath: out), "no unauthenticated plaintext is left behind")
    }

    /// Any flipped bit fails: in the header, in a chunk's ciphertext, in a tag.
    @Test(arguments: [3, 8, 14, 20, 40, 4096 + 32 + 16 + 5, 32 + 4096 + 3])
    func aFlippedByteFails(offset: Int) throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(10_000), in: directory)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: sealed))
        bytes[offset] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: sealed))
        #expect(throws: SnapshotCipher.Failure.self) { try decrypt(sealed, in: directory) }
    }

    @Test func aFlippedHeaderByteIsNamedPrecisely() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(100), in: directory)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: sealed))
        bytes[0] = UInt8(ascii: "X")
        try bytes.write(to: URL(fileURLWithPath: sealed))
        #expect(throws: SnapshotCipher.Failure.notEncrypted) { try decrypt(sealed, in: directory) }
        bytes[0] = UInt8(ascii: "K")
        bytes[7] = 9
        try bytes.write(to: URL(fileURLWithPath: sealed))
        #expect(throws: SnapshotCipher.Failure.unsupportedVersion(9)) { try decrypt(sealed, in: directory) }
    }

    /// Cut mid-chunk, at a chunk boundary (the new last chunk was not sealed as final), inside
    /// the header, or to nothing: each fails.
    @Test(arguments: [32 + 4112 + 4112 + 100, 32 + 4112 + 4112, 32 + 4112, 32 + 10, 32, 20, 0])
    func aTruncatedFileFails(length: Int) throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(3 * 4096 + 500), in: directory)
        #expect(truncate(sealed, off_t(length)) == 0)
        #expect(throws: SnapshotCipher.Failure.self) { try decrypt(sealed, in: directory) }
    }

    @Test func appendingAChunkFails() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(2 * 4096), in: directory)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: sealed))
        bytes.append(bytes[32..<(32 + 4112)])
        try bytes.write(to: URL(fileURLWithPath: sealed))
        #expect(throws: SnapshotCipher.Failure.self) { try decrypt(sealed, in: directory) }
    }

    @Test func swappedChunksFail() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(3 * 4096), in: directory)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: sealed))
        let first = 32..<(32 + 4112)
        let second = (32 + 4112)..<(32 + 2 * 4112)
        let (a, b) = (bytes[first], bytes[second])
        bytes.replaceSubrange(second, with: a)
        bytes.replaceSubrange(first, with: b)
        try bytes.write(to: URL(fileURLWithPath: sealed))
        #expect(throws: SnapshotCipher.Failure.authenticationFailed(chunk: 0, chunks: 3)) { try decrypt(sealed, in: directory) }
    }

    /// A file decrypts only as the file it was sealed as: not under another path (two files
    /// swapped), not as part of another snapshot or another bake of the same name.
    @Test func swappedFilesFail() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(5000), in: directory)
        for other in [
            SnapshotCipher.Binding(snapshot: "svc", bake: binding.bake, path: "pages-2.img.enc"),
            SnapshotCipher.Binding(snapshot: "other", bake: binding.bake, path: binding.path),
            SnapshotCipher.Binding(snapshot: "svc", bake: "1111111111111111", path: binding.path),
        ] {
            #expect(throws: SnapshotCipher.Failure.authenticationFailed(chunk: 0, chunks: 2)) { try decrypt(sealed, in: directory, binding: other) }
        }
        // Whole files exchanged between two paths of one snapshot.
        let a = try encrypt(Data("core".utf8), in: directory, binding: SnapshotCipher.Binding(snapshot: "svc", bake: "b", path: "core-1.img.enc"))
        let b = try encrypt(Data("mm".utf8), in: directory, binding: SnapshotCipher.Binding(snapshot: "svc", bake: "b", path: "mm-1.img.enc"))
        #expect(throws: SnapshotCipher.Failure.self) {
            try decrypt(b, in: directory, binding: .init(snapshot: "svc", bake: "b", path: "core-1.img.enc"))
        }
        #expect(throws: SnapshotCipher.Failure.self) {
            try decrypt(a, in: directory, binding: .init(snapshot: "svc", bake: "b", path: "mm-1.img.enc"))
        }
    }

    @Test func theManifestsChunkSizeMustMatchTheHeaders() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sealed = try encrypt(randomBytes(100), in: directory)
        #expect(throws: SnapshotCipher.Failure.chunkSizeMismatch(file: 4096, manifest: 1 << 20)) {
            try SnapshotCipher.decrypt(sealed, to: "\(directory)/out", binding: binding, key: try makeKey(), expectedChunkSize: 1 << 20)
        }
    }

    /// The default 1 MiB chunks over a file of a few chunks with a partial last one.
    @Test func defaultChunkSizeRoundTrips() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let plaintext = randomBytes(2 * (1 << 20) + 12_345)
        let plain = "\(directory)/plain"
        try plaintext.write(to: URL(fileURLWithPath: plain))
        try SnapshotCipher.encrypt(plain, to: "\(plain).enc", binding: binding, key: try makeKey())
        try SnapshotCipher.decrypt(
            "\(plain).enc", to: "\(directory)/out", binding: binding, key: try makeKey(), expectedChunkSize: SnapshotCipher.defaultChunkSize)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/out")) == plaintext)
    }
}

@Suite("snapshot keys: key files, key ids, keyrings")
struct SnapshotKeyTests {
    func writeKeyFile(_ contents: Data, mode: mode_t = 0o600, in directory: String) throws -> String {
        let path = "\(directory)/key-\(UUID().uuidString)"
        try contents.write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    @Test func rawAndHexKeyFilesGiveTheSameKey() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = (0..<32).map { UInt8($0 * 7 + 1) }
        let hex = bytes.map { String(format: "%02x", $0) }.joined()
        let raw = try SnapshotKey(contentsOf: try writeKeyFile(Data(bytes), in: directory))
        let hexLine = try SnapshotKey(contentsOf: try writeKeyFile(Data((hex + "\n").utf8), in: directory))
        let hexUpper = try SnapshotKey(contentsOf: try writeKeyFile(Data(hex.uppercased().utf8), in: directory))
        #expect(raw.id == hexLine.id)
        #expect(raw.id == hexUpper.id)
        #expect(raw.id.count == 16 && raw.id.allSatisfy(\.isHexDigit))
    }

    /// The id is domain-separated: not a prefix of the key's plain SHA-256, nor of the key.
    @Test func theKeyIDRevealsNothingObvious() throws {
        let key = try makeKey()
        let plainHash = FileDigestTestHelper.sha256Hex(Data(repeating: 0x42, count: 32))
        #expect(!plainHash.hasPrefix(key.id))
        #expect(key.id != String(repeating: "42", count: 8))
        #expect(try makeKey(0x43).id != key.id)
    }

    @Test(arguments: [
        Data(count: 31), Data(count: 33), Data(repeating: 1, count: 33), Data("abc".utf8), Data(repeating: UInt8(ascii: "a"), count: 63),
        Data(repeating: UInt8(ascii: "g"), count: 64), Data(),
    ])
    func anythingButAKeyIsRefusedWithHowToMakeOne(contents: Data) throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = try writeKeyFile(contents, in: directory)
        let error = try #require(throws: KilnError.self) { try SnapshotKey(contentsOf: path) }
        #expect(error.code == .invalidArgument)
        #expect(error.hint?.contains("head -c 32 /dev/urandom") == true, "\(error)")
    }

    @Test func anAllZeroKeyIsRefused() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let error = try #require(throws: KilnError.self) { try SnapshotKey(contentsOf: try writeKeyFile(Data(count: 32), in: directory)) }
        #expect(error.message.contains("all zero"))
    }

    @Test(arguments: [0o640, 0o604, 0o644, 0o660, 0o601])
    func aKeyFileOthersCanReachIsRefused(mode: Int) throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = try writeKeyFile(Data(repeating: 9, count: 32), mode: mode_t(mode), in: directory)
        let error = try #require(throws: KilnError.self) { try SnapshotKey(contentsOf: path) }
        #expect(error.hint == "chmod 600 \(path)")
        #expect(error.message.contains(String(mode, radix: 8)))
    }

    @Test func aMissingKeyFileIsNamed() throws {
        let error = try #require(throws: KilnError.self) { try SnapshotKey(contentsOf: "/nonexistent/kiln.key") }
        #expect(error.message.contains("/nonexistent/kiln.key does not exist"))
    }

    @Test func keygenWritesAPrivateHexKeyAndNeverOverwrites() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/new.key"
        let key = try SnapshotKey.generate(at: path)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.count == 65 && text.hasSuffix("\n"))
        #expect(try SnapshotKey(contentsOf: path).id == key.id)
        let again = try #require(throws: KilnError.self) { try SnapshotKey.generate(at: path) }
        #expect(again.message.contains("already exists"))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == text, "the existing key is untouched")
        #expect(try SnapshotKey.generate(at: "\(directory)/other.key").id != key.id)
    }

    func encryptedManifest(_ name: String, keyID: String) -> SnapshotManifest {
        SnapshotManifest(
            name: name, createdAt: Date(timeIntervalSince1970: 1_800_000_000),
            sandbox: SandboxSpec(command: ["x"], workingDirectory: "/", appDirectory: nil, port: 8080),
            readiness: ReadinessCheck(path: "/health"), warmup: [], host: HostFacts(kernel: "6.18", criuVersion: "4.2.1", runtime: "runc"),
            timings: BakeTimings(), compacted: true, encryption: SnapshotEncryption(keyID: keyID, bakeID: "0123456789abcdef"),
            files: [SnapshotFile(path: "pages-1.img.enc", size: 1, sha256: String(repeating: "0", count: 64))])
    }

    @Test func theKeyringPicksTheKeyByIDAndNamesWhatIsMissing() throws {
        let right = try makeKey(1, source: "/keys/right.key")
        let wrong = try makeKey(2, source: "/keys/wrong.key")
        let manifest = encryptedManifest("svc", keyID: right.id)

        let missing = try #require(throws: KilnError.self) { try SnapshotKeyring().key(for: manifest) }
        #expect(missing.code == .keyRequired)
        #expect(missing.message.contains("'svc'") && missing.message.contains(right.id))
        #expect(missing.hint?.contains("--key") == true)

        let mismatch = try #require(throws: KilnError.self) { try SnapshotKeyring(keys: [wrong]).key(for: manifest) }
        #expect(mismatch.code == .keyMismatch)
        #expect(mismatch.message == "snapshot 'svc' was encrypted with key \(right.id); /keys/wrong.key is key \(wrong.id)")

        #expect(try SnapshotKeyring(keys: [wrong, right]).key(for: manifest)?.id == right.id)
        // A key scoped to another function does not count; one scoped to this one wins.
        #expect(throws: KilnError.self) { try SnapshotKeyring(scoped: ["other": right]).key(for: manifest) }
        #expect(try SnapshotKeyring(keys: [wrong], scoped: ["svc": right]).key(for: manifest)?.id == right.id)
        // A plain snapshot needs no key.
        var plain = manifest
        plain.encryption = nil
        #expect(try SnapshotKeyring().key(for: plain) == nil)
    }

    @Test func keyArgumentsParseWithAnOptionalFunctionName() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let a = try writeKeyFile(Data(repeating: 1, count: 32), in: directory)
        let b = try writeKeyFile(Data(repeating: 2, count: 32), in: directory)
        let keyring = try SnapshotKeyring(arguments: [a, "hello=\(b)"])
        #expect(keyring.keys.map(\.source) == [a])
        #expect(keyring.scoped["hello"]?.source == b)
        #expect(throws: KilnError.self) { try SnapshotKeyring(arguments: ["hello=\(a)", "hello=\(b)"]) }
    }

    /// An encrypted snapshot's manifest may list only encrypted files: a plain file slipped into
    /// the store and the manifest would be restored unauthenticated.
    @Test func anEncryptedManifestListingAPlainFileIsCorrupt() throws {
        var manifest = encryptedManifest("svc", keyID: "0123456789abcdef")
        _ = try SnapshotManifest.decode(try manifest.encoded(), source: "m.json")
        manifest.files.append(SnapshotFile(path: "core-1.img", size: 1, sha256: String(repeating: "0", count: 64)))
        manifest.sizeBytes += 1
        let error = try #require(throws: KilnError.self) { try SnapshotManifest.decode(try manifest.encoded(), source: "m.json") }
        #expect(error.message.contains("core-1.img"))
    }
}

@Suite("the image cache decrypts encrypted snapshots into tmpfs")
struct EncryptedDumpCacheTests {
    /// Commits an encrypted snapshot of two files into a fresh store, as the baker does.
    func makeSnapshot(key: SnapshotKey) throws -> (SnapshotStore, DumpCache, SnapshotManifest, [String: Data], String) {
        let root = try scratchDirectory()
        let store = SnapshotStore(root: "\(root)/store")
        let staging = try store.makeStagingDirectory(for: "svc")
        let encryption = SnapshotEncryption(chunkSize: 4096, keyID: key.id, bakeID: "feedfacecafebeef")
        let plain: [String: Data] = ["pages-1.img": randomBytes(3 * 4096 + 7), "core-1.img": Data("core of svc".utf8)]
        for (path, data) in plain {
            try data.write(to: URL(fileURLWithPath: "\(root)/\(path)"))
            try SnapshotCipher.encrypt(
                "\(root)/\(path)", to: "\(staging)/images/\(path).enc", binding: encryption.binding(snapshot: "svc", path: "\(path).enc"), key: key,
                chunkSize: 4096)
        }
        let manifest = try store.commit(staging: staging) { files in
            SnapshotManifest(
                name: "svc", createdAt: Date(), sandbox: SandboxSpec(command: ["x"], workingDirectory: "/", appDirectory: nil, port: 8080),
                readiness: ReadinessCheck(path: "/health"), warmup: [], host: HostFacts(kernel: "6.18", criuVersion: "4.2.1", runtime: "runc"),
                timings: BakeTimings(), compacted: true, encryption: encryption, files: files)
        }
        let cache = DumpCache(root: "/dev/shm/kiln-unit-cache-\(UUID().uuidString)", store: store)
        return (store, cache, manifest, plain, root)
    }

    @Test func decryptsOnceIntoAPrivateCacheAndEvicts() throws {
        let key = try makeKey()
        let (store, cache, manifest, plain, root) = try makeSnapshot(key: key)
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: cache.root)
        }
        try store.verify(manifest)
        let directory = try cache.directory(for: manifest, key: key)
        #expect(directory.hasPrefix(cache.root))
        for (path, data) in plain {
            #expect(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(path)")) == data)
        }
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/pages-1.img.enc"))
        #expect(try FileManager.default.attributesOfItem(atPath: cache.root)[.posixPermissions] as? Int == 0o700)
        #expect(try cache.directory(for: manifest, key: key) == directory)
        cache.evict("svc")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: cache.root)) ?? []).isEmpty)
    }

    /// `kiln gc` drops half-made copies whose kiln died, never one a live kiln is making.
    @Test func abandonedStagingCopiesAreFoundByTheirPid() throws {
        let root = "/dev/shm/kiln-unit-cache-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = DumpCache(root: root, store: SnapshotStore(root: "/nonexistent"))
        let dead = "\(root)/.staging-my-svc-99999999-1"
        let alive = "\(root)/.staging-my-svc-\(getpid())-2"
        for path in [dead, alive, "\(root)/my-svc-abc"] { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        #expect(cache.removeAbandonedStaging() == [dead])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).sorted() == [".staging-my-svc-\(getpid())-2", "my-svc-abc"])
    }

    @Test func aWrongOrMissingKeyIsRefusedBeforeDecrypting() throws {
        let key = try makeKey()
        let (_, cache, manifest, _, root) = try makeSnapshot(key: key)
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: cache.root)
        }
        let wrong = try #require(throws: KilnError.self) { try cache.directory(for: manifest, key: try makeKey(0x99)) }
        #expect(wrong.code == .keyMismatch)
        let missing = try #require(throws: KilnError.self) { try cache.directory(for: manifest, key: nil) }
        #expect(missing.code == .keyRequired)
        #expect(!FileManager.default.fileExists(atPath: cache.root), "nothing was made")
    }

    /// A file changed together with its digest in the manifest passes verification but not
    /// authentication: the error names the file, and no partial copy is left in the cache.
    @Test func aChunkThatFailsAuthenticationIsSnapshotCorruptAndLeavesNothing() throws {
        let key = try makeKey()
        let (store, cache, manifest, _, root) = try makeSnapshot(key: key)
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: cache.root)
        }
        let pages = "\(store.dumpDirectory(of: "svc"))/pages-1.img.enc"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: pages))
        bytes[32 + 4112 + 10] ^= 0x80
        try bytes.write(to: URL(fileURLWithPath: pages))
        var tampered = manifest
        tampered.files = try tampered.files.map { file in
            var file = file
            if file.path == "pages-1.img.enc" { file.sha256 = try FileDigest.sha256(ofFile: pages) }
            return file
        }
        try store.verify(tampered)
        let error = try #require(throws: KilnError.self) { try cache.directory(for: tampered, key: key) }
        #expect(error.code == .snapshotCorrupt)
        #expect(error.message.contains("pages-1.img.enc") && error.message.contains("chunk 2 of 4"), "\(error)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: cache.root)) ?? []).isEmpty, "no partial cache directory")
    }
}

enum FileDigestTestHelper {
    static func sha256Hex(_ data: Data) -> String {
        let path = "/tmp/kiln-unit-digest-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: path, contents: data)
        defer { unlink(path) }
        return (try? FileDigest.sha256(ofFile: path)) ?? ""
    }
}
