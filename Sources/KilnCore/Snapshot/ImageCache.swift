import Foundation

/// Compressed snapshots at rest, decompressed once into tmpfs for restoring.
///
/// A JVM's memory compresses well (zstd -1 takes the Spring sample's 120 MB of pages to about a
/// quarter), so a compressed snapshot costs far less disk and far less to ship between hosts. CRIU
/// reads plain images only, so the first restore of a snapshot version decompresses its images
/// into a private tmpfs directory (`/dev/shm/kiln-images/<name>-<digest>`, 0700) and every later
/// restore reads them from there, at memory speed: only that first restore pays.
public struct ImageCache: Sendable {
    public static let compression = "zstd"
    static let suffix = ".zst"

    public var root: String
    public var store: SnapshotStore

    public init(root: String, store: SnapshotStore) {
        self.root = root
        self.store = store
    }

    /// Compresses the page images of a staged snapshot in place (`pages-N.img` -> `pages-N.img.zst`).
    static func compress(imagesIn directory: String) async throws {
        let pages = SnapshotStore.relativeFiles(under: directory).filter { $0.hasPrefix("pages-") && $0.hasSuffix(".img") }
        for page in pages {
            let output = try await Subprocess.run("zstd", ["-q", "-1", "-T0", "--rm", "\(directory)/\(page)", "-o", "\(directory)/\(page)\(suffix)"])
            guard output.status.isSuccess else {
                throw KilnError(.systemCall, "zstd could not compress \(page): \(output.stderr)", hint: "install zstd ('make setup') or bake without --compress")
            }
        }
    }

    /// The directory to restore `manifest` from: the store itself for a plain snapshot, else a
    /// decompressed copy in the cache, made now if it is not there yet.
    public func directory(for manifest: SnapshotManifest) throws -> String {
        guard manifest.compression != nil else { return store.imageDirectory(of: manifest.name) }
        let target = "\(root)/\(manifest.name)-\(version(of: manifest))"
        if FileManager.default.fileExists(atPath: "\(target)/.complete") { return target }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let staging = "\(root)/.staging-\(manifest.name)-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let source = store.imageDirectory(of: manifest.name)
            for file in manifest.files {
                let from = "\(source)/\(file.path)"
                if file.path.hasSuffix(Self.suffix) {
                    let to = "\(staging)/\(file.path.dropLast(Self.suffix.count))"
                    let output = try Subprocess.run("zstd", ["-q", "-d", from, "-o", to])
                    guard output.status.isSuccess else {
                        throw KilnError(.restoreFailed, "zstd could not decompress \(from): \(output.stderr)", hint: "re-bake the snapshot")
                    }
                } else {
                    let to = "\(staging)/\(file.path)"
                    try FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                    try FileManager.default.copyItem(atPath: from, toPath: to)
                }
            }
            guard FileManager.default.createFile(atPath: "\(staging)/.complete", contents: nil) else {
                throw KilnError(.restoreFailed, "could not mark \(staging) complete")
            }
            try? FileManager.default.removeItem(atPath: target)
            try FileManager.default.moveItem(atPath: staging, toPath: target)
            return target
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw (error as? KilnError) ?? KilnError(.restoreFailed, "could not decompress snapshot '\(manifest.name)' into \(root): \(error)")
        }
    }

    /// Drops every cached copy of a snapshot (after it is removed or re-baked).
    public func evict(_ name: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where entry.hasPrefix("\(name)-") {
            try? FileManager.default.removeItem(atPath: "\(root)/\(entry)")
        }
    }

    /// Identifies one baked version of a snapshot: a digest of its files' digests.
    func version(of manifest: SnapshotManifest) -> String {
        String(manifest.files.map(\.sha256).joined().utf8.reduce(into: UInt64(1469598103934665603)) { hash, byte in
            hash = (hash ^ UInt64(byte)) &* 1099511628211
        }, radix: 16)
    }
}
