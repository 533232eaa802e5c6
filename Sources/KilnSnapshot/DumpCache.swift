import CKilnShims
import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Compressed or encrypted snapshots at rest, unpacked once into tmpfs for restoring.
///
/// A JVM's memory compresses well (zstd -1 takes the Spring sample's 120 MB of pages to about a
/// quarter), so a compressed snapshot costs far less disk and far less to ship between hosts. CRIU
/// reads plain images only, so the first restore of a snapshot version decompresses its images
/// into a private tmpfs directory (`/dev/shm/kiln-images/<name>-<digest>`, 0700) and every later
/// restore reads them from there, at memory speed: only that first restore pays.
///
/// Encrypted snapshots (``SnapshotCipher``) take the same path: their images are decrypted (and
/// then decompressed) into the cache, which is the only place their plaintext ever exists. It is
/// root's, in memory, and dropped by `kiln rm` and a re-bake.
public struct DumpCache: Sendable {
    public static let compression = SnapshotCompression.zstd
    static let suffix = ".zst"

    public var root: String
    public var store: SnapshotStore

    public init(root: String, store: SnapshotStore) {
        self.root = root
        self.store = store
    }

    /// Compresses the page images of a staged snapshot in place (`pages-N.img` -> `pages-N.img.zst`).
    package static func compress(imagesIn directory: String) async throws {
        let pages = SnapshotStore.relativeFiles(under: directory).filter { $0.hasPrefix("pages-") && $0.hasSuffix(".img") }
        for page in pages {
            let output = try await Subprocess.run("zstd", ["-q", "-1", "-T0", "--rm", "\(directory)/\(page)", "-o", "\(directory)/\(page)\(suffix)"])
            guard output.status.isSuccess else {
                throw KilnError(
                    .systemCall, "zstd could not compress \(page): \(output.stderr)", hint: "install zstd ('make setup') or bake without --compress")
            }
        }
    }

    /// The directory to restore `manifest` from: the store itself for a plain snapshot, else a
    /// decompressed and/or decrypted copy in the cache, made now if it is not there yet.
    ///
    /// The copy is made in a staging directory beside it and renamed into place with a
    /// `.complete` mark only when every file is done, so a failure (a chunk that does not
    /// authenticate, a full tmpfs) leaves nothing behind and a later restore never sees half a copy.
    /// - Parameter key: the key of an encrypted snapshot (``SnapshotKeyring/key(for:)`` checked it).
    public func directory(for manifest: SnapshotManifest, key: SnapshotKey? = nil) throws -> String {
        guard manifest.compression != nil || manifest.encryption != nil else { return store.dumpDirectory(of: manifest.name) }
        if let encryption = manifest.encryption, key?.id != encryption.keyID {
            // The callers check first; this keeps a wrong key from ever reaching the cipher.
            _ = try SnapshotKeyring(keys: key.map { [$0] } ?? []).key(for: manifest)
        }
        let target = "\(root)/\(manifest.name)-\(version(of: manifest))"
        if FileManager.default.fileExists(atPath: "\(target)/.complete") { return target }
        try prepareRoot(forPlaintextOf: manifest)
        // The pid in the name lets `kiln gc` tell a copy in progress from an abandoned one.
        let staging = "\(root)/.staging-\(manifest.name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let source = store.dumpDirectory(of: manifest.name)
            for file in manifest.files {
                try materialize(file, of: manifest, from: "\(source)/\(file.path)", into: staging, key: key)
            }
            guard FileManager.default.createFile(atPath: "\(staging)/.complete", contents: nil) else {
                throw KilnError(.restoreFailed, "could not mark \(staging) complete")
            }
            try commit(staging, to: target)
            return target
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw (error as? KilnError) ?? KilnError(.restoreFailed, "could not unpack snapshot '\(manifest.name)' into \(root): \(error)")
        }
    }

    /// Writes the plain image of one stored file into `staging`: decrypted, then decompressed.
    private func materialize(_ file: SnapshotFile, of manifest: SnapshotManifest, from source: String, into staging: String, key: SnapshotKey?) throws
    {
        var path = file.path
        try FileManager.default.createDirectory(
            atPath: ("\(staging)/\(path)" as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        var from = source
        if let encryption = manifest.encryption, let key {
            guard path.hasSuffix(SnapshotCipher.suffix) else {
                throw corrupt(manifest, "image file \(source) is not encrypted, though the snapshot is")
            }
            path = String(path.dropLast(SnapshotCipher.suffix.count))
            do {
                try SnapshotCipher.decrypt(
                    source, to: "\(staging)/\(path)", binding: encryption.binding(snapshot: manifest.name, path: file.path), key: key,
                    expectedChunkSize: encryption.chunkSize)
            } catch let failure as SnapshotCipher.Failure {
                throw corrupt(manifest, "image file \(source) \(failure)")
            }
            from = "\(staging)/\(path)"
        }
        if path.hasSuffix(Self.suffix) {
            let to = "\(staging)/\(path.dropLast(Self.suffix.count))"
            // --rm: the compressed intermediate of a decrypted file is dropped as soon as it is unpacked.
            let output = try Subprocess.run("zstd", ["-q", "-d", from, "-o", to] + (from == source ? [] : ["--rm"]))
            guard output.status.isSuccess else {
                throw KilnError(.restoreFailed, "zstd could not decompress \(source): \(output.stderr)", hint: "re-bake the snapshot")
            }
        } else if from == source {
            try FileManager.default.copyItem(atPath: source, toPath: "\(staging)/\(path)")
        }
    }

    /// Creates the cache root (0700). Decrypted images must stay in memory: a directory that is
    /// not tmpfs would put them on a disk, where deleting them does not erase them.
    private func prepareRoot(forPlaintextOf manifest: SnapshotManifest) throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if manifest.encryption != nil, !Self.isInMemory(root) {
            throw KilnError(
                .restoreFailed, "refusing to decrypt snapshot '\(manifest.name)' into \(root): it is not on tmpfs",
                hint: "mount a tmpfs at /dev/shm (decrypted images must never reach a disk)")
        }
    }

    /// Moves a finished copy into place. Two restores may race to make the same copy: the one
    /// that loses keeps the winner's (CRIU may be reading it already) and drops its own.
    private func commit(_ staging: String, to target: String) throws {
        if rename(staging, target) == 0 { return }
        if FileManager.default.fileExists(atPath: "\(target)/.complete") {
            try? FileManager.default.removeItem(atPath: staging)
            return
        }
        // An incomplete directory under the final name is debris of a kiln killed mid-removal.
        try? FileManager.default.removeItem(atPath: target)
        guard rename(staging, target) == 0 else { throw KilnError.systemCall("rename", errno: errno, "\(staging) -> \(target)") }
    }

    private func corrupt(_ manifest: SnapshotManifest, _ problem: String) -> KilnError {
        KilnError(
            .snapshotCorrupt, "snapshot '\(manifest.name)': \(problem); refusing to restore it",
            hint:
                "the file changed after the bake together with its sha256 in the manifest, or is damaged: bake it again, and treat the store at \(store.root) as tampered with"
        )
    }

    /// Whether `path` is on tmpfs or ramfs.
    package static func isInMemory(_ path: String) -> Bool { kiln_is_in_memory(path) == 1 }

    /// Removes staging copies whose kiln died mid-way (named `.staging-<name>-<pid>-<random>`).
    public func removeAbandonedStaging() -> [String] {
        var removed: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where entry.hasPrefix(".staging-") {
            let fields = entry.split(separator: "-")
            guard fields.count >= 3, let pid = Int32(fields[fields.count - 2]), !ProcessInspector.isAlive(pid) else { continue }
            try? FileManager.default.removeItem(atPath: "\(root)/\(entry)")
            removed.append("\(root)/\(entry)")
        }
        return removed
    }

    /// Drops every cached copy of a snapshot (after it is removed or re-baked).
    public func evict(_ name: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where Self.entry(entry, isVersionOf: name) {
            try? FileManager.default.removeItem(atPath: "\(root)/\(entry)")
        }
    }

    /// Whether a cache entry (`<name>-<hex version>`) holds a version of snapshot `name`. A
    /// prefix test alone would also take `hello-2-<version>` for a version of `hello`: names may
    /// hold '-' and digits, versions are hex digits only.
    static func entry(_ entry: String, isVersionOf name: String) -> Bool {
        guard entry.hasPrefix("\(name)-") else { return false }
        let version = entry.utf8.dropFirst(name.utf8.count + 1)
        return !version.isEmpty
            && version.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }

    /// Identifies one baked version of a snapshot: a digest of its files' digests.
    func version(of manifest: SnapshotManifest) -> String {
        String(
            manifest.files.map(\.sha256).joined().utf8.reduce(into: UInt64(1469598103934665603)) { hash, byte in
                hash = (hash ^ UInt64(byte)) &* 1099511628211
            }, radix: 16)
    }
}
