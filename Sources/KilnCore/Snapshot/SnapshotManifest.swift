import Foundation

/// How kiln knows a service is up: an HTTP GET answered with a 2xx status.
public struct ReadinessCheck: Codable, Sendable, Equatable {
    public var path: String
    public var timeoutSeconds: Double

    public init(path: String, timeoutSeconds: Double = 60) {
        self.path = path
        self.timeoutSeconds = timeoutSeconds
    }
}

/// Warmup traffic replayed before the checkpoint, so the snapshot holds a JIT-warm service:
/// `count` GET requests to `path` (written `COUNT:PATH` on the command line).
public struct WarmupStep: Codable, Sendable, Equatable, CustomStringConvertible {
    public var count: Int
    public var path: String

    public init(count: Int, path: String) {
        self.count = count
        self.path = path
    }

    /// Parses `200:/greet` (or just `/greet`, once).
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let (countText, path) = parts.count == 2 && !parts[0].hasPrefix("/") ? (parts[0], parts[1]) : ("1", text)
        guard let count = Int(countText), count > 0, count <= 1_000_000 else {
            throw KilnError(.invalidArgument, "warmup '\(text)' has no valid request count", hint: "write it as COUNT:PATH, e.g. --warmup 200:/greet")
        }
        guard path.hasPrefix("/") else {
            throw KilnError(.invalidArgument, "warmup '\(text)' needs a path starting with '/'", hint: "write it as COUNT:PATH, e.g. --warmup 200:/greet")
        }
        self.init(count: count, path: path)
    }

    public var description: String { "\(count):\(path)" }
}

/// How long each phase of a bake took, in milliseconds.
public struct BakeTimings: Codable, Sendable, Equatable {
    /// From starting the container to the first successful readiness response.
    public var coldStartMs: Double
    public var warmupMs: Double
    /// Full GC and other shrinking before the dump.
    public var compactMs: Double
    public var checkpointMs: Double

    public init(coldStartMs: Double = 0, warmupMs: Double = 0, compactMs: Double = 0, checkpointMs: Double = 0) {
        self.coldStartMs = coldStartMs
        self.warmupMs = warmupMs
        self.compactMs = compactMs
        self.checkpointMs = checkpointMs
    }
}

/// One CRIU image file and its digest.
public struct SnapshotFile: Codable, Sendable, Equatable {
    /// Path relative to the snapshot's image directory.
    public var path: String
    public var size: Int64
    /// Lowercase hex SHA-256.
    public var sha256: String
}

/// The host a snapshot was made on. CRIU images only restore on a compatible kernel and CRIU.
public struct HostFacts: Codable, Sendable, Equatable {
    public var kernel: String
    public var criuVersion: String
    public var runtime: String

    public init(kernel: String, criuVersion: String, runtime: String) {
        self.kernel = kernel
        self.criuVersion = criuVersion
        self.runtime = runtime
    }
}

/// How a snapshot's image files are encrypted at rest (see ``SnapshotCipher``). Never the key:
/// only its id, so a restore can say which key it needs before decrypting anything.
public struct SnapshotEncryption: Codable, Sendable, Equatable {
    /// ``SnapshotCipher/name``: "aes-256-gcm".
    public var cipher: String
    /// Plaintext bytes per sealed chunk.
    public var chunkSize: Int
    /// ``SnapshotKey/id`` of the key the images were encrypted with.
    public var keyID: String
    /// Random id of this bake, bound into every file, so files of two bakes cannot be mixed.
    public var bakeID: String

    public init(cipher: String = SnapshotCipher.name, chunkSize: Int = SnapshotCipher.defaultChunkSize, keyID: String, bakeID: String) {
        self.cipher = cipher
        self.chunkSize = chunkSize
        self.keyID = keyID
        self.bakeID = bakeID
    }

    /// The binding of one image file of `snapshot` (see ``SnapshotCipher/Binding``).
    func binding(snapshot: String, path: String) -> SnapshotCipher.Binding {
        SnapshotCipher.Binding(snapshot: snapshot, bake: bakeID, path: path)
    }
}

/// Everything kiln records about a snapshot, stored as `manifest.json` beside its images.
public struct SnapshotManifest: Codable, Sendable, Equatable {
    public static let currentFormat = 1

    public var format: Int
    public var name: String
    public var createdAt: Date
    public var sandbox: SandboxSpec
    public var readiness: ReadinessCheck
    public var warmup: [WarmupStep]
    public var host: HostFacts
    public var timings: BakeTimings
    /// Whether kiln ran a full GC in the JVM before the dump.
    public var compacted: Bool
    /// Whether copies share identical memory pages through KSM (off for services that must not
    /// share pages with other tenants: merging is a timing side channel).
    public var shareMemory: Bool
    /// How the memory images are compressed at rest ("zstd"), or nil. Compressed snapshots are
    /// decompressed once into a tmpfs cache and restored from there (see ``ImageCache``).
    public var compression: String?
    /// How the image files are encrypted at rest, or nil. Encrypted snapshots are decrypted
    /// (after verification, with the key the manifest names) into the same tmpfs cache.
    public var encryption: SnapshotEncryption?
    /// A path kiln POSTs to in every restored copy, once it answers its readiness path and
    /// before anything else reaches it, with `{"instance", "snapshot", "hostname"}`: the
    /// moment for the application to reseed generators, renew ids, drop cached clocks. A
    /// non-2xx answer fails the restore.
    public var restoreHook: String?
    /// Total bytes of image files.
    public var sizeBytes: Int64
    public var files: [SnapshotFile]

    public init(
        name: String, createdAt: Date, sandbox: SandboxSpec, readiness: ReadinessCheck, warmup: [WarmupStep],
        host: HostFacts, timings: BakeTimings, compacted: Bool, shareMemory: Bool = true, compression: String? = nil,
        encryption: SnapshotEncryption? = nil, restoreHook: String? = nil, files: [SnapshotFile]
    ) {
        self.format = Self.currentFormat
        self.name = name
        self.createdAt = createdAt
        self.sandbox = sandbox
        self.readiness = readiness
        self.warmup = warmup
        self.host = host
        self.timings = timings
        self.compacted = compacted
        self.shareMemory = shareMemory
        self.compression = compression
        self.encryption = encryption
        self.restoreHook = restoreHook
        self.files = files
        self.sizeBytes = files.reduce(0) { $0 + $1.size }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    public func encoded() throws -> Data { try Self.encoder.encode(self) }

    /// Decodes and sanity-checks a manifest; every problem is a ``KilnError`` naming the field.
    public static func decode(_ data: Data, source: String) throws -> SnapshotManifest {
        let manifest: SnapshotManifest
        do {
            manifest = try decoder.decode(SnapshotManifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw corrupt(source, "it has no '\((context.codingPath + [key]).map(\.stringValue).joined(separator: "."))'")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw corrupt(source, "'\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
        } catch let DecodingError.dataCorrupted(context) {
            let at = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw corrupt(source, at.isEmpty ? "it is not valid JSON" : "'\(at)' is invalid: \(context.debugDescription)")
        } catch {
            throw corrupt(source, "it cannot be read: \(error)")
        }
        guard manifest.format == currentFormat else {
            throw corrupt(source, "it has format \(manifest.format), this kiln reads format \(currentFormat)")
        }
        guard (1...65535).contains(manifest.sandbox.port) else { throw corrupt(source, "its port \(manifest.sandbox.port) is out of range") }
        guard !manifest.sandbox.command.isEmpty else { throw corrupt(source, "its command is empty") }
        guard !manifest.files.isEmpty else { throw corrupt(source, "it lists no image files") }
        if let encryption = manifest.encryption {
            guard encryption.cipher == SnapshotCipher.name else {
                throw corrupt(source, "its images are encrypted with '\(encryption.cipher)', this kiln knows only \(SnapshotCipher.name)")
            }
            guard SnapshotCipher.chunkSizes.contains(encryption.chunkSize) else { throw corrupt(source, "its encryption chunk size \(encryption.chunkSize) is invalid") }
            guard encryption.keyID.count == 16, encryption.keyID.allSatisfy(\.isHexDigit) else { throw corrupt(source, "its key id '\(encryption.keyID)' is invalid") }
            guard !encryption.bakeID.isEmpty else { throw corrupt(source, "its encryption has no bake id") }
        }
        for file in manifest.files {
            guard !file.path.isEmpty, !file.path.hasPrefix("/"), !file.path.split(separator: "/").contains(".."),
                  file.sha256.count == 64, file.sha256.allSatisfy(\.isHexDigit), file.size >= 0
            else { throw corrupt(source, "its file entry '\(file.path)' is invalid") }
            // Every file of an encrypted snapshot is authenticated; a plain one slipped in would not be.
            guard manifest.encryption == nil || file.path.hasSuffix(SnapshotCipher.suffix) else {
                throw corrupt(source, "its file entry '\(file.path)' is not encrypted, though the snapshot is")
            }
        }
        return manifest
    }

    private static func corrupt(_ source: String, _ problem: String) -> KilnError {
        KilnError(.snapshotCorrupt, "the manifest \(source) is corrupt: \(problem)", hint: "re-bake the snapshot with 'kiln bake'")
    }
}
