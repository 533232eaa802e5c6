import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Where snapshots live: `<root>/snapshots/<name>/{manifest.json, images/}`.
///
/// Snapshots hold process memory, secrets included, so the store is private to root: directories
/// 0700, files 0600. A snapshot is written under `<root>/staging/` and renamed into place only
/// when complete, so a crash mid-bake never leaves a half-written snapshot under its name.
public protocol SnapshotStoring: Sendable {
    func list() throws -> [SnapshotManifest]
    func load(_ name: String) throws -> SnapshotManifest
    func verify(_ manifest: SnapshotManifest) throws
    func dumpDirectory(of name: String) -> String
    func remove(_ name: String) throws
}

public struct SnapshotStore: SnapshotStoring {
    public var root: String
    /// Where verifications are remembered (``VerificationRecord``: on tmpfs, root-only), so a
    /// snapshot whose files have not changed since it was verified is not hashed again; nil
    /// hashes every time.
    package var verificationRecords: VerificationRecords?

    public init(root: String) {
        self.root = root
    }

    var snapshotsDirectory: String { "\(root)/snapshots" }
    package var stagingDirectory: String { "\(root)/staging" }
    /// Unpacked root filesystems of snapshots baked from images, one directory per bake (named
    /// by its bake id), referenced by the snapshot's manifest.
    public var rootfsDirectory: String { "\(root)/rootfs" }

    public func directory(of name: String) -> String { "\(snapshotsDirectory)/\(name)" }
    public func dumpDirectory(of name: String) -> String { "\(directory(of: name))/images" }
    func manifestPath(of name: String) -> String { "\(directory(of: name))/manifest.json" }

    /// Snapshot names are used as directory names and in container ids.
    public static func validate(name: String) throws {
        let allowed = name.unicodeScalars.allSatisfy {
            CharacterSet.lowercaseLetters.contains($0) && $0.isASCII || CharacterSet.decimalDigits.contains($0) && $0.isASCII || $0 == "-"
                || $0 == "_"
        }
        guard !name.isEmpty, name.count <= 40, allowed, name.first!.isLetter || name.first!.isNumber else {
            throw KilnError(
                .invalidArgument, "'\(name)' is not a valid snapshot name",
                hint: "use 1 to 40 lowercase letters, digits, '-' or '_', starting with a letter or digit (e.g. 'hello')")
        }
    }

    /// Creates the store's directories, private to root.
    public func prepare() throws {
        for directory in [root, snapshotsDirectory, stagingDirectory, rootfsDirectory] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            chmod(directory, 0o700)
        }
    }

    public func exists(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: manifestPath(of: name))
    }

    public func list() throws -> [SnapshotManifest] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: snapshotsDirectory)) ?? []
        return names.sorted().compactMap { try? load($0) }
    }

    public func load(_ name: String) throws -> SnapshotManifest {
        try Self.validate(name: name)
        let path = manifestPath(of: name)
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: directory(of: name)) {
                throw KilnError(
                    .snapshotCorrupt, "snapshot '\(name)' has no readable manifest (\(path))",
                    hint: "remove it with 'kiln rm \(name)' and bake it again")
            }
            let known = ((try? FileManager.default.contentsOfDirectory(atPath: snapshotsDirectory)) ?? []).sorted()
            throw KilnError(
                .snapshotNotFound, "no snapshot named '\(name)' in \(snapshotsDirectory)",
                hint: known.isEmpty
                    ? "bake one first: kiln bake \(name) --port PORT --ready /health -- COMMAND..."
                    : "known snapshots: \(known.joined(separator: ", ")) ('kiln ls' lists them)")
        }
        let manifest = try SnapshotManifest.decode(data, source: path)
        guard manifest.name == name else {
            throw KilnError(.snapshotCorrupt, "the manifest \(path) names snapshot '\(manifest.name)', not '\(name)'", hint: "re-bake the snapshot")
        }
        return manifest
    }

    /// Checks every image file against the manifest: present, same size, same SHA-256, and no
    /// file the manifest does not list. The first mismatch is thrown, naming the file.
    ///
    /// With ``verificationRecords``, a snapshot verified before whose every file is still the
    /// same (inode, size, modification and change time) is trusted without reading its files.
    public func verify(_ manifest: SnapshotManifest) throws {
        try verifyAndSay(manifest)
    }

    /// ``verify(_:)`` of image files that are not (yet) in their place, e.g. a pulled snapshot
    /// in its staging directory before it is committed: every file is read, nothing is recorded.
    public func verify(_ manifest: SnapshotManifest, dumpDirectory images: String) throws {
        try hashEveryFile(manifest, images: images, present: Set(Self.relativeFiles(under: images)))
    }

    /// ``verify(_:)``, saying whether the files were hashed or trusted from a record.
    @discardableResult
    package func verifyAndSay(_ manifest: SnapshotManifest) throws -> Verification {
        let images = dumpDirectory(of: manifest.name)
        let before = VerificationRecord.current(of: manifest, images: images)
        let present = Set(Self.relativeFiles(under: images))
        if let records = verificationRecords, let before, present == Set(manifest.files.map(\.path)),
            records.matches(before, name: manifest.name), try imageRootIsAsBaked(manifest)
        {
            return .trusted
        }
        try hashEveryFile(manifest, images: images, present: present)
        // Recorded only if nothing changed while the files were read.
        if let records = verificationRecords, let before, VerificationRecord.current(of: manifest, images: images) == before {
            records.save(before, name: manifest.name)
        }
        return .hashed
    }

    /// How ``verifyAndSay(_:)`` verified a snapshot.
    package enum Verification: Sendable, Equatable {
        /// Every file was read and matched its SHA-256.
        case hashed
        /// The files are the very ones verified before (``VerificationRecord``).
        case trusted
    }

    private func imageRootIsAsBaked(_ manifest: SnapshotManifest) throws -> Bool {
        guard let expected = manifest.image?.rootListingSHA256, let root = imageRoot(of: manifest) else { return true }
        return (try? FileDigest.listingSHA256(of: root)) == expected
    }

    private func hashEveryFile(_ manifest: SnapshotManifest, images: String, present: Set<String>) throws {
        let corrupt = { (problem: String) in
            KilnError(
                .snapshotCorrupt, "snapshot '\(manifest.name)' failed verification: \(problem); refusing to restore it",
                hint: "bake it again (kiln bake \(manifest.name) ...); if you did not change it, treat the store at \(root) as tampered with")
        }
        if let expected = manifest.image?.rootListingSHA256, let root = imageRoot(of: manifest) {
            guard (try? FileDigest.listingSHA256(of: root)) == expected else {
                throw corrupt("its image root filesystem \(root) is not as baked (an entry was added, removed or changed)")
            }
        }
        let listed = Set(manifest.files.map(\.path))
        if let extra = present.subtracting(listed).sorted().first {
            throw corrupt("\(images)/\(extra) is not part of the snapshot")
        }
        for file in manifest.files {
            let path = "\(images)/\(file.path)"
            guard present.contains(file.path) else { throw corrupt("\(path) is missing") }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int64) ?? -1
            guard size == file.size else { throw corrupt("\(path) is \(size) bytes, the manifest says \(file.size)") }
            guard try FileDigest.sha256(ofFile: path) == file.sha256 else {
                throw corrupt("\(path) does not match its sha256 in the manifest")
            }
        }
    }

    /// Every regular file under `directory`, as paths relative to it.
    package static func relativeFiles(under directory: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [] }
        var files: [String] = []
        while let path = enumerator.nextObject() as? String {
            // lstat, not `enumerator.fileAttributes`: Foundation fills those in with the owner's
            // and group's names, two reads of /etc/passwd and /etc/group per file, on the path of
            // every restore.
            var info = stat()
            if lstat("\(directory)/\(path)", &info) == 0, info.st_mode & S_IFMT == S_IFREG { files.append(path) }
        }
        return files.sorted()
    }

    /// A fresh private directory to write a snapshot into before it is committed.
    public func makeStagingDirectory(for name: String) throws -> String {
        try prepare()
        let path = "\(stagingDirectory)/\(name)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: "\(path)/images", withIntermediateDirectories: true)
        chmod(path, 0o700)
        chmod("\(path)/images", 0o700)
        return path
    }

    /// Digests the staged images, writes the manifest and moves the snapshot into place,
    /// replacing an older snapshot of the same name only once the new one is complete.
    public func commit(staging: String, manifest: (_ files: [SnapshotFile]) -> SnapshotManifest) throws -> SnapshotManifest {
        let images = "\(staging)/images"
        var files: [SnapshotFile] = []
        for path in Self.relativeFiles(under: images) {
            let full = "\(images)/\(path)"
            chmod(full, 0o600)
            let size = (try FileManager.default.attributesOfItem(atPath: full)[.size] as? Int64) ?? 0
            files.append(SnapshotFile(path: path, size: size, sha256: try FileDigest.sha256(ofFile: full)))
        }
        return try commit(staging: staging, verified: manifest(files))
    }

    /// Writes `finished` as the manifest of the images staged (already checked against it, as
    /// ``verify(_:dumpDirectory:)`` does) and moves the snapshot into place, replacing an
    /// older snapshot of the same name only once the new one is complete.
    public func commit(staging: String, verified finished: SnapshotManifest) throws -> SnapshotManifest {
        let manifestFile = "\(staging)/manifest.json"
        try finished.encoded().write(to: URL(fileURLWithPath: manifestFile), options: .atomic)
        chmod(manifestFile, 0o600)
        let target = directory(of: finished.name)
        let retired = "\(stagingDirectory)/retired-\(finished.name)-\(UInt32.random(in: 0...UInt32.max))"
        let replacing = FileManager.default.fileExists(atPath: target)
        if replacing { try FileManager.default.moveItem(atPath: target, toPath: retired) }
        do {
            try FileManager.default.moveItem(atPath: staging, toPath: target)
        } catch {
            if replacing { try? FileManager.default.moveItem(atPath: retired, toPath: target) }
            throw KilnError(.systemCall, "could not move the new snapshot into \(target): \(error)")
        }
        if replacing { try? FileManager.default.removeItem(atPath: retired) }
        return finished
    }

    public func remove(_ name: String) throws {
        try Self.validate(name: name)
        guard FileManager.default.fileExists(atPath: directory(of: name)) else {
            throw KilnError(
                .snapshotNotFound, "no snapshot named '\(name)' in \(snapshotsDirectory)", hint: "'kiln ls' lists the snapshots there are")
        }
        verificationRecords?.forget(name)
        try FileManager.default.removeItem(atPath: directory(of: name))
    }

    /// The image root filesystem `manifest` runs in, if it has one in this store: only a direct
    /// child of ``rootfsDirectory`` counts, whatever a damaged manifest says.
    public func imageRoot(of manifest: SnapshotManifest) -> String? {
        guard manifest.image != nil, case .directory(let path) = manifest.sandbox.rootFilesystem,
            (path as NSString).deletingLastPathComponent == rootfsDirectory, InputValidation.isCleanAbsolutePath(path)
        else { return nil }
        return path
    }

    /// Removes an unpacked image root filesystem (a directory under ``rootfsDirectory``).
    public func removeImageRoot(_ path: String) {
        guard (path as NSString).deletingLastPathComponent == rootfsDirectory else { return }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Removes staging directories a crashed bake left behind.
    public func removeAbandonedStaging() {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: stagingDirectory)) ?? [] {
            try? FileManager.default.removeItem(atPath: "\(stagingDirectory)/\(entry)")
        }
    }
}
