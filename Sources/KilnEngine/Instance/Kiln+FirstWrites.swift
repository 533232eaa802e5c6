import Foundation
import KilnSnapshot
import KilnSystem

/// What the first copy of a snapshot wrote by its first response, kept per snapshot version, so
/// later standby copies are copied on write ahead of their thaw (``FirstWrites``).
///
/// Learned, not baked: any copy that answered its readiness path is a faithful sample (its
/// afterRestore and first request run the code every copy runs), a pulled snapshot learns on its
/// first restore, and the snapshot's signed files stay as baked. Kept in the state directory
/// (tmpfs): a reboot forgets it and the next copy learns it again. The file is text: a
/// `version V` line (``Kiln/snapshotVersion(of:)``), then ``FirstWrites/text``.
struct StoredFirstWrites: Equatable {
    /// The snapshot version it was learned from.
    var snapshotVersion: String
    var writes: FirstWrites

    var text: String { Self.versionLine(snapshotVersion) + writes.text }

    /// The file's first line: what ``Kiln/knowsFirstWrites(of:)`` compares alone.
    static func versionLine(_ version: String) -> String { "version \(version)\n" }

    init(snapshotVersion: String, writes: FirstWrites) {
        self.snapshotVersion = snapshotVersion
        self.writes = writes
    }

    init?(text: String) {
        guard let newline = text.firstIndex(of: "\n"), text.hasPrefix("version "),
            let writes = FirstWrites(text: text[text.index(after: newline)...])
        else { return nil }
        self.snapshotVersion = String(text[text.index(text.startIndex, offsetBy: 8)..<newline])
        self.writes = writes
    }
}

extension Kiln {
    /// Where what `snapshot`'s copies write first is kept.
    package func firstWritesPath(of snapshot: String) -> String { "\(paths.firstWrites)/\(snapshot)" }

    /// Tells one bake of a snapshot from another: a re-bake under the same name writes first
    /// elsewhere.
    package static func snapshotVersion(of manifest: SnapshotManifest) -> String {
        "\(manifest.createdAt.timeIntervalSince1970)-\(manifest.sizeBytes)"
    }

    /// What copies of this version of `manifest` write first, if a copy of it taught it.
    package func knownFirstWrites(of manifest: SnapshotManifest) -> FirstWrites? {
        guard let text = try? String(contentsOfFile: firstWritesPath(of: manifest.name), encoding: .utf8),
            let stored = StoredFirstWrites(text: text), stored.snapshotVersion == Self.snapshotVersion(of: manifest)
        else { return nil }
        return stored.writes
    }

    /// Whether this version of `manifest`'s first writes are known: the file's version line
    /// only (every restore asks, after its first response).
    func knowsFirstWrites(of manifest: SnapshotManifest) -> Bool {
        guard let file = FileHandle(forReadingAtPath: firstWritesPath(of: manifest.name)) else { return false }
        defer { try? file.close() }
        let expected = Data(StoredFirstWrites.versionLine(Self.snapshotVersion(of: manifest)).utf8)
        return (try? file.read(upToCount: expected.count)) == expected
    }

    /// Records what process `pid`, a copy of `manifest` that just gave its first response, has
    /// written of its image-backed memory, unless this version's first writes are known already.
    /// Only with mapped page images (read pages are all written, by CRIU). A failure only costs
    /// later standby copies their head start: logged, not thrown.
    func learnFirstWrites(of manifest: SnapshotManifest, fromProcess pid: Int32) {
        guard criu.mapsPageImages, !knowsFirstWrites(of: manifest) else { return }
        let start = ContinuousClock.now
        do {
            let writes = try FirstWrites.read(ofProcess: pid)
            guard writes.pageCount > 0 else { return }
            try FileManager.default.createDirectory(
                atPath: paths.firstWrites, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let stored = StoredFirstWrites(snapshotVersion: Self.snapshotVersion(of: manifest), writes: writes)
            // Atomic (a temporary file renamed): copies restored side by side may all learn.
            try RuntimeFile.replace(firstWritesPath(of: manifest.name), with: Data(stored.text.utf8))
            logger.debug(
                "\(manifest.name): its copies write \(writes.pageCount) image pages first (\(writes.ranges.count) ranges; learned in \(String(format: "%.1f", start.duration(to: .now).milliseconds)) ms)"
            )
        } catch {
            logger.warning("could not learn what copies of '\(manifest.name)' write first: \(error)")
        }
    }

    /// Copies on write, in the frozen standby copy `pid` of `manifest`, the pages its copies
    /// write first; returns how many (nil when none are known or it failed, which only leaves
    /// them to the thaw).
    func copyFirstWritesAhead(of manifest: SnapshotManifest, inProcess pid: Int32) -> Int? {
        guard let writes = knownFirstWrites(of: manifest) else { return nil }
        do {
            return try writes.copyAhead(inProcess: pid)
        } catch {
            logger.warning("could not copy the first writes of a standby copy of '\(manifest.name)' ahead: \(error)")
            return nil
        }
    }
}
