import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// A snapshot as an OCI artifact: an OCI image manifest whose config blob is the kiln manifest
/// (`manifest.json`, byte for byte) and whose layers are the snapshot's image files as they are
/// at rest (zstd-compressed or encrypted ones stay so: an encrypted snapshot travels as
/// ciphertext only), one layer per file, titled with its path. A layer's digest is the file's
/// SHA-256 the kiln manifest already records, so two pushes share every unchanged file.
enum SnapshotArtifact {
    static let artifactType = "application/vnd.kiln.snapshot.v1"
    static let configMediaType = "application/vnd.kiln.snapshot.manifest.v1+json"
    static let fileMediaType = "application/vnd.kiln.snapshot.file.v1"
    static let signatureArtifactType = "application/vnd.kiln.snapshot.signature.v1"
    static let signatureMediaType = "application/vnd.kiln.snapshot.signature.v1+json"
    static let manifestMediaType = "application/vnd.oci.image.manifest.v1+json"
    static let titleAnnotation = "org.opencontainers.image.title"
    static let nameAnnotation = "dev.kiln.snapshot.name"
    /// The tag of the one manifest in a layout kiln writes or pulls into.
    static let tag = "kiln"

    struct Descriptor: Codable, Equatable {
        var mediaType: String
        var digest: String
        var size: Int64
        var annotations: [String: String]?
    }

    struct Manifest: Codable {
        var schemaVersion = 2
        var mediaType: String? = SnapshotArtifact.manifestMediaType
        var artifactType: String?
        var config: Descriptor
        var layers: [Descriptor]
        var annotations: [String: String]?
    }

    struct Index: Codable {
        var schemaVersion = 2
        var manifests: [Descriptor]
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// A file to put in a layout: its blob digest (hex) and where its bytes are.
    struct Blob {
        var sha256: String
        var size: Int64
        var source: String
    }

    /// Writes an OCI layout at `layout` holding one manifest (tagged ``tag``) with `config` and
    /// `layers`; layer blobs are hard links to their sources where possible (same filesystem),
    /// copies otherwise. Returns the manifest's digest.
    static func writeLayout(
        at layout: String, artifactType: String?, config: Data, configMediaType: String, layers: [(blob: Blob, descriptor: Descriptor)],
        annotations: [String: String]? = nil
    ) throws -> String {
        let blobs = "\(layout)/blobs/sha256"
        try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        func add(_ data: Data) throws -> (String, Int64) {
            let hex = FileDigest.sha256(data)
            try data.write(to: URL(fileURLWithPath: "\(blobs)/\(hex)"))
            return ("sha256:\(hex)", Int64(data.count))
        }
        for (blob, _) in layers where !FileManager.default.fileExists(atPath: "\(blobs)/\(blob.sha256)") {
            if link(blob.source, "\(blobs)/\(blob.sha256)") != 0 {
                try FileManager.default.copyItem(atPath: blob.source, toPath: "\(blobs)/\(blob.sha256)")
            }
        }
        let (configDigest, configSize) = try add(config)
        let manifest = Manifest(
            artifactType: artifactType, config: Descriptor(mediaType: configMediaType, digest: configDigest, size: configSize),
            layers: layers.map(\.descriptor), annotations: annotations)
        let (digest, size) = try add(try encoder.encode(manifest))
        let index = Index(manifests: [
            Descriptor(mediaType: manifestMediaType, digest: digest, size: size, annotations: ["org.opencontainers.image.ref.name": tag])
        ])
        try encoder.encode(index).write(to: URL(fileURLWithPath: "\(layout)/index.json"))
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: "\(layout)/oci-layout"))
        return digest
    }

    /// The layout of a stored snapshot, at `layout`: its manifest file as the config, its image
    /// files as layers. Returns the manifest digest.
    static func writeSnapshotLayout(at layout: String, manifestFile: String, dumpDirectory: String, manifest: SnapshotManifest) throws -> String {
        guard let config = FileManager.default.contents(atPath: manifestFile) else {
            throw KilnError(.snapshotCorrupt, "the manifest \(manifestFile) cannot be read")
        }
        let layers = manifest.files.map { file in
            (
                blob: Blob(sha256: file.sha256, size: file.size, source: "\(dumpDirectory)/\(file.path)"),
                descriptor: Descriptor(
                    mediaType: fileMediaType, digest: "sha256:\(file.sha256)", size: file.size, annotations: [titleAnnotation: file.path])
            )
        }
        return try writeLayout(
            at: layout, artifactType: artifactType, config: config, configMediaType: configMediaType, layers: layers,
            annotations: [nameAnnotation: manifest.name])
    }

    /// Reads the one manifest of a layout kiln pulled into, checking its digest and its blobs'.
    static func readLayout(_ layout: String) throws -> (digest: String, manifest: Manifest, blob: (String) -> String) {
        let blobPath = { (digest: String) in "\(layout)/blobs/sha256/\(digest.dropFirst("sha256:".count))" }
        func read(_ path: String, _ what: String) throws -> Data {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw KilnError(.snapshotCorrupt, "the pulled \(what) is missing (\(path))")
            }
            return data
        }
        let index = try decode(Index.self, try read("\(layout)/index.json", "index"), "index")
        guard index.manifests.count == 1, let entry = index.manifests.first, OCILayout.isDigest(entry.digest) else {
            throw KilnError(.snapshotCorrupt, "the pulled layout \(layout) does not hold exactly one manifest")
        }
        let data = try read(blobPath(entry.digest), "manifest")
        guard "sha256:" + FileDigest.sha256(data) == entry.digest else {
            throw KilnError(.snapshotCorrupt, "the pulled manifest does not match its digest \(entry.digest)")
        }
        return (entry.digest, try decode(Manifest.self, data, "manifest \(entry.digest)"), blobPath)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data, _ what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw KilnError(.snapshotCorrupt, "the pulled \(what) is not what kiln pushes: \(error)")
        }
    }
}
