import Foundation
import KilnOCI
import KilnSystem

/// How kiln knows a service is up: an HTTP GET answered with a 2xx status.
public struct ReadinessCheck: Codable, Sendable, Equatable {
    public var path: String
    public var timeoutSeconds: Double

    public init(path: String, timeoutSeconds: Double = 60) {
        self.path = path
        self.timeoutSeconds = timeoutSeconds
    }

    /// Refuses a path that cannot go on a request line and a timeout that is not a usable wait
    /// (NaN, infinite or longer than a year would trap when turned into a `Duration`).
    public func validate() throws(KilnError) {
        guard InputValidation.isRequestPath(path) else {
            throw KilnError(
                .invalidArgument, "readiness path '\(path)' must start with '/' and have no spaces or control characters",
                hint: "e.g. --ready /health")
        }
        guard InputValidation.isSeconds(timeoutSeconds) else {
            throw KilnError(
                .invalidArgument, "the readiness timeout must be positive and at most a year (got \(timeoutSeconds) s)",
                hint: "e.g. --ready-timeout 60")
        }
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

    /// The most requests one step may replay.
    public static let maximumCount = 1_000_000

    /// Parses `200:/greet` (or just `/greet`, once).
    public init(parsing text: String) throws {
        let (countText, path): (Substring, Substring) =
            if !text.hasPrefix("/"), let colon = text.firstIndex(of: ":") {
                (text[..<colon], text[text.index(after: colon)...])
            } else {
                ("1", text[...])
            }
        guard let count = Int(countText), (1...Self.maximumCount).contains(count) else {
            throw KilnError(.invalidArgument, "warmup '\(text)' has no valid request count (1-\(Self.maximumCount))", hint: Self.syntax)
        }
        self.init(count: count, path: String(path))
        do { try validate() } catch { throw KilnError(.invalidArgument, "warmup '\(text)' \(error.message)", hint: Self.syntax) }
    }

    private static let syntax = "write it as COUNT:PATH, e.g. --warmup 200:/greet"

    /// Refuses a count out of range and a path that cannot go on a request line.
    package func validate() throws(KilnError) {
        guard (1...Self.maximumCount).contains(count) else {
            throw KilnError(.invalidArgument, "has request count \(count), not 1-\(Self.maximumCount)", hint: Self.syntax)
        }
        guard InputValidation.isRequestPath(path) else {
            throw KilnError(.invalidArgument, "needs a path starting with '/' without spaces or control characters", hint: Self.syntax)
        }
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
    /// The restore rehearsal before the checkpoint (beforeCheckpoint, afterRestore, readiness once
    /// and each warm-up path three times); nil when there was none (`--no-rehearsal`, no agent, an
    /// older kiln).
    public var rehearsalMs: Double?
    /// How long the service had run when its dump began (after a compaction, at least its cold
    /// start and 11 s more: see `Kiln.minimumTimeReady`); nil in manifests of an older kiln.
    public var serviceUptimeMs: Double?
    /// How long the warm-up went on after its steps until the JVM's JIT compilers were idle
    /// (`kiln bake --warmup-settle`); nil when it did not (no warm-up steps, no JIT compiler
    /// threads found, `--warmup-settle 0`, an older kiln).
    public var jitSettleMs: Double?
    /// Whether the compilers were idle when that ended (false: the limit was reached first).
    public var jitSettled: Bool?
    /// Warm-up requests sent in that time, beyond the steps' own.
    public var jitSettleRequests: Int?

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

/// The host a snapshot was made on: what a restore depends on (see ``HostCheck``). CRIU images
/// only restore on a compatible kernel and CRIU, and the JIT-compiled code in them only runs on a
/// CPU with the features it was generated for. Every field after `runtime` is optional: manifests
/// from before they were recorded still load, and a fact not recorded is not compared.
public struct HostFacts: Codable, Sendable, Equatable {
    /// `uname -r`.
    public var kernel: String
    public var criuVersion: String
    /// The container runtime and its version, e.g. "runc 1.1.5+ds1".
    public var runtime: String
    /// `uname -m`, e.g. "x86_64".
    public var architecture: String?
    /// /proc/cpuinfo's `vendor_id` (x86) or `CPU implementer` (arm64).
    public var cpuVendor: String?
    /// /proc/cpuinfo's `model name`.
    public var cpuModel: String?
    /// The CPU feature flags the JVM's generated code may use (``HostCheck/jvmCPUFlags``) that
    /// the CPU has, sorted.
    public var cpuFlags: [String]?
    /// The kernel features a CRIU restore of a kiln container relies on that `criu check
    /// --feature` confirmed (``HostCheck/criuFeatures``), sorted.
    public var kernelFeatures: [String]?
    /// The C library the host's root provides (`gnu_get_libc_version`); nil for a snapshot that
    /// runs in a root of its own (an image), which brings its own.
    public var glibc: String?
    /// The JDK the service ran: its home and `JAVA_RUNTIME_VERSION`; nil if it came with its own
    /// root filesystem or could not be told.
    public var jdk: JDKBuild?
    public var pageSize: Int?
    /// 1 or 2.
    public var cgroupVersion: Int?

    public init(
        kernel: String, criuVersion: String, runtime: String, architecture: String? = nil, cpuVendor: String? = nil, cpuModel: String? = nil,
        cpuFlags: [String]? = nil, kernelFeatures: [String]? = nil, glibc: String? = nil, jdk: JDKBuild? = nil, pageSize: Int? = nil,
        cgroupVersion: Int? = nil
    ) {
        self.kernel = kernel
        self.criuVersion = criuVersion
        self.runtime = runtime
        self.architecture = architecture
        self.cpuVendor = cpuVendor
        self.cpuModel = cpuModel
        self.cpuFlags = cpuFlags
        self.kernelFeatures = kernelFeatures
        self.glibc = glibc
        self.jdk = jdk
        self.pageSize = pageSize
        self.cgroupVersion = cgroupVersion
    }
}

/// A JDK installation a snapshot's JVM was started from.
public struct JDKBuild: Codable, Sendable, Equatable, CustomStringConvertible {
    /// e.g. /usr/lib/jvm/java-17-openjdk-amd64
    public var home: String
    /// `JAVA_RUNTIME_VERSION` from its `release` file, e.g. "17.0.15+6-Debian-1deb12u1".
    public var version: String

    public init(home: String, version: String) {
        self.home = home
        self.version = version
    }

    public var description: String { "\(version) (\(home))" }
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
    package func binding(snapshot: String, path: String) -> SnapshotCipher.Binding {
        SnapshotCipher.Binding(snapshot: snapshot, bake: bakeID, path: path)
    }
}

/// The container image a snapshot was baked from (`kiln bake --image`). Its unpacked root
/// filesystem is the sandbox's root (``SandboxSpec/rootFilesystem``), kept in the store for as
/// long as the snapshot exists: every restore needs the files the checkpointed process had open.
public struct SnapshotImage: Codable, Sendable, Equatable {
    /// As given to `--image` (`oci:/path:tag`, `podman:name:tag`, `docker:name:tag`).
    public var reference: String
    /// Digest of the image manifest as kiln copied it (skopeo may convert a Docker manifest to
    /// OCI's format, which changes this digest; ``configDigest`` does not change).
    public var manifestDigest: String
    /// Digest of the image configuration: Docker's and Podman's image id.
    public var configDigest: String
    public var architecture: String
    /// Time to copy the image out of its store and to unpack its layers (ms).
    public var copyMs: Double
    public var unpackMs: Double
    /// SHA-256 of the unpacked root's listing (``FileDigest/listingSHA256(of:)``): every entry's
    /// path, type, mode, owner, size, mtime and link target. Checked with the snapshot's files
    /// before each restore: a root that lost or changed a file would otherwise fail the restore
    /// somewhere inside CRIU, or run changed code. nil in manifests from before it was recorded.
    public var rootListingSHA256: String?

    public init(
        reference: String, manifestDigest: String, configDigest: String, architecture: String, copyMs: Double, unpackMs: Double,
        rootListingSHA256: String? = nil
    ) {
        self.rootListingSHA256 = rootListingSHA256
        self.reference = reference
        self.manifestDigest = manifestDigest
        self.configDigest = configDigest
        self.architecture = architecture
        self.copyMs = copyMs
        self.unpackMs = unpackMs
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
    /// Whether copies also merge identical pages through KSM (`kiln bake --share-memory ksm`).
    /// Off by default: copies of one snapshot already share the pages nobody wrote by mapping the
    /// page images, and merging is a timing side channel between everything merged.
    public var shareMemory: Bool
    /// How the memory images are compressed at rest ("zstd"), or nil. Compressed snapshots are
    /// decompressed once into a tmpfs cache and restored from there (see ``DumpCache``).
    public var compression: SnapshotCompression?
    /// How the image files are encrypted at rest, or nil. Encrypted snapshots are decrypted
    /// (after verification, with the key the manifest names) into the same tmpfs cache.
    public var encryption: SnapshotEncryption?
    /// A path kiln POSTs to in every restored copy, once it answers its readiness path and
    /// before anything else reaches it, with `{"instance", "snapshot", "hostname"}`: the
    /// moment for the application to reseed generators, renew ids, drop cached clocks. A
    /// non-2xx answer fails the restore.
    public var restoreHook: String?
    /// The container image the snapshot was baked from, or nil (host root or `--rootfs`).
    public var image: SnapshotImage?
    /// Whether CRIU recorded the cgroup controllers in the images (bakes since `kiln export`
    /// exists; nil in older manifests). Only such images restore where CRIU manages cgroups
    /// itself, as in `podman container restore`.
    public var cgroupsInImages: Bool?
    /// The network the snapshot was baked on (`kiln`, a user's CNI network), or nil: loopback
    /// only (`--network none`, and every manifest older than networks). Copies are restored on
    /// a network of the same kind, each at its own address.
    public var network: String?
    /// The pid, inside the sandbox, of the JVM whose CRaC agent took part in the checkpoint
    /// (``SandboxSpec/agent``): every restored copy signals it to run `afterRestore`. Nil when
    /// the snapshot was baked without the agent.
    public var agentProcess: Int32?
    /// Total bytes of image files.
    public var sizeBytes: Int64
    public var files: [SnapshotFile]

    public init(
        name: String, createdAt: Date, sandbox: SandboxSpec, readiness: ReadinessCheck, warmup: [WarmupStep],
        host: HostFacts, timings: BakeTimings, compacted: Bool, shareMemory: Bool = false, compression: SnapshotCompression? = nil,
        encryption: SnapshotEncryption? = nil, restoreHook: String? = nil, image: SnapshotImage? = nil, cgroupsInImages: Bool? = nil,
        network: String? = nil, agentProcess: Int32? = nil, files: [SnapshotFile]
    ) {
        self.network = network
        self.agentProcess = agentProcess
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
        self.image = image
        self.cgroupsInImages = cgroupsInImages
        self.files = files
        self.sizeBytes = files.reduce(0) { $0 + $1.size }
    }

    package static let encoder = KilnJSON.prettyEncoder()

    package static let decoder = KilnJSON.decoder()

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
        if let problem = manifest.problem { throw corrupt(source, problem) }
        if let encryption = manifest.encryption {
            guard encryption.cipher == SnapshotCipher.name else {
                throw corrupt(source, "its images are encrypted with '\(encryption.cipher)', this kiln knows only \(SnapshotCipher.name)")
            }
            guard SnapshotCipher.chunkSizes.contains(encryption.chunkSize) else {
                throw corrupt(source, "its encryption chunk size \(encryption.chunkSize) is invalid")
            }
            guard encryption.keyID.count == 16, encryption.keyID.allSatisfy(\.isHexDigit) else {
                throw corrupt(source, "its key id '\(encryption.keyID)' is invalid")
            }
            guard !encryption.bakeID.isEmpty else { throw corrupt(source, "its encryption has no bake id") }
            // Every file of an encrypted snapshot is authenticated; a plain one slipped in would not be.
            for file in manifest.files where !file.path.hasSuffix(SnapshotCipher.suffix) {
                throw corrupt(source, "its file entry '\(file.path)' is not encrypted, though the snapshot is")
            }
        }
        return manifest
    }

    /// What is wrong with a decoded manifest, or nil: everything `kiln bake` writes passes, so
    /// anything else is damage or tampering, named here before a restore acts on it (joins its
    /// file paths to the image directory, puts its paths on request lines, makes its timeouts
    /// `Duration`s).
    var problem: String? {
        do { try SnapshotStore.validate(name: name) } catch { return "its name '\(name)' is not a valid snapshot name" }
        guard InputValidation.isServicePort(sandbox.port) else { return "its port \(sandbox.port) is out of range" }
        guard !sandbox.command.isEmpty else { return "its command is empty" }
        if let problem = sandbox.problem { return problem }
        do { try readiness.validate() } catch { return "its readiness check is invalid: \(error.message)" }
        for step in warmup {
            do { try step.validate() } catch { return "its warmup step '\(step)' \(error.message)" }
        }
        if let hook = restoreHook, !hook.hasPrefix("/") || hook.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 }) {
            return "its restore hook '\(hook)' is not a path"
        }
        if let image {
            guard OCILayout.isDigest(image.manifestDigest), OCILayout.isDigest(image.configDigest) else { return "its image digests are invalid" }
            guard case .directory = sandbox.rootFilesystem else { return "it was baked from an image but has no root filesystem of its own" }
        }
        guard !files.isEmpty else { return "it lists no image files" }
        var seen = Set<String>()
        var total: Int64 = 0
        for file in files {
            guard InputValidation.isContainedRelativePath(file.path), file.size >= 0, file.sha256.utf8.count == 64,
                file.sha256.utf8.allSatisfy({
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
                })
            else { return "its file entry '\(file.path)' is invalid" }
            guard seen.insert(file.path).inserted else { return "it lists '\(file.path)' twice" }
            let (sum, overflow) = total.addingReportingOverflow(file.size)
            guard !overflow else { return "its file sizes overflow" }
            total = sum
        }
        guard sizeBytes == total else { return "its size \(sizeBytes) is not the sum of its files' sizes (\(total))" }
        return nil
    }

    private static func corrupt(_ source: String, _ problem: String) -> KilnError {
        KilnError(.snapshotCorrupt, "the manifest \(source) is corrupt: \(problem)", hint: "re-bake the snapshot with 'kiln bake'")
    }
}

/// How a snapshot's memory images are compressed at rest. An unknown value in a manifest fails
/// its decoding, so such a snapshot is reported as damaged rather than half-read.
public enum SnapshotCompression: String, Codable, Sendable {
    /// zstd level 1, one `.zst` file per page image.
    case zstd
}
