import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// What a full verification of a snapshot saw of each file: enough to know, without reading a
/// byte, that none has changed since.
///
/// Hashing every page image before every restore cost a restore of the Spring sample ~90 ms of its
/// ~200. A snapshot verified once stays trusted while every file is the same inode with the same
/// size, modification and change time: a byte written into a file (or a file replaced) changes its
/// change time, which no user can set back (only the clock can), so the next restore hashes again
/// and catches it. Records live on tmpfs, private to root, so a reboot — after which the disk
/// may have been changed offline — starts from nothing, and only root could forge one (root can
/// change the snapshot itself anyway).
package struct VerificationRecord: Codable, Equatable, Sendable {
    /// The identity of one file.
    package struct FileIdentity: Codable, Equatable, Sendable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedNanoseconds: Int64
        var changedNanoseconds: Int64

        /// The file's identity now, or nil if it cannot be read.
        package static func of(_ path: String) -> FileIdentity? {
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            return FileIdentity(
                device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                modifiedNanoseconds: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
                changedNanoseconds: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec))
        }
    }

    /// Which bake of the snapshot was verified (its creation time and file digests).
    var bake: String
    /// Every verified file by its path relative to the image directory.
    var files: [String: FileIdentity]

    /// The bake identity of `manifest`: a re-bake under the same name never matches an old record.
    static func bake(of manifest: SnapshotManifest) -> String {
        let digests = manifest.files.map { "\($0.path)=\($0.sha256)" }.joined(separator: "\n")
        return "\(manifest.createdAt.timeIntervalSince1970) " + FileDigest.sha256(Data(digests.utf8))
    }

    /// The record of `manifest`'s files as they are now under `images`, or nil if one cannot be read.
    static func current(of manifest: SnapshotManifest, images: String) -> VerificationRecord? {
        var files: [String: FileIdentity] = [:]
        for file in manifest.files {
            guard let identity = FileIdentity.of("\(images)/\(file.path)") else { return nil }
            files[file.path] = identity
        }
        return VerificationRecord(bake: bake(of: manifest), files: files)
    }
}

/// The records of verified snapshots, one file per snapshot in a root-only tmpfs directory.
package struct VerificationRecords: Sendable {
    /// The directory; created 0700 on first use.
    package var directory: String

    package init(directory: String) { self.directory = directory }

    private func path(of name: String) -> String { "\(directory)/\(name).json" }

    /// Whether `record` is exactly what was recorded for snapshot `name`.
    func matches(_ record: VerificationRecord, name: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path(of: name)),
            let saved = try? JSONDecoder().decode(VerificationRecord.self, from: data)
        else { return false }
        return saved == record
    }

    /// Records a verification; a record that cannot be written only means the next restore
    /// hashes again.
    func save(_ record: VerificationRecord, name: String) {
        guard DumpCache.isInMemory((directory as NSString).deletingLastPathComponent) || DumpCache.isInMemory(directory) else { return }
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard let data = try? JSONEncoder().encode(record) else { return }
        try? RuntimeFile.replace(path(of: name), with: data, permissions: 0o600)
    }

    /// Forgets snapshot `name` (removed or re-baked).
    func forget(_ name: String) {
        unlink(path(of: name))
    }
}
