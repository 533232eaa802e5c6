import Crypto
import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

/// The checkpoint archive of `podman container checkpoint --export` (Podman 4.x; CRI-O restores
/// the same layout wrapped in an OCI image), as far as kiln writes and reads it.
///
/// A tar (zstd-compressed by default, as Podman 4.3 writes it; Podman detects the compression
/// when it reads) holding:
/// - `checkpoint/`: the CRIU images, as `runc checkpoint` wrote them;
/// - `spec.dump`: the OCI runtime config the container ran with (Podman restores with it, after
///   replacing the root path, the network namespace and its own generated bind mounts);
/// - `config.dump`: libpod's container configuration (image, network, name, runtime);
/// - `rootfs-diff.tar`: files to lay over the image's root before the restore;
/// - optionally `network.status`, `stats-dump`, `deleted.files`, `devshm-checkpoint.tar`, ...
///
/// kiln adds `kiln.json` (its manifest, for `kiln import` of its own archives); Podman ignores it.
public enum PodmanArchive {
    public static let checkpointDirectory = "checkpoint"
    public static let specDump = "spec.dump"
    public static let configDump = "config.dump"
    public static let rootfsDiff = "rootfs-diff.tar"
    public static let kilnManifest = "kiln.json"

    /// Podman's runtime name kiln's archives name. Podman refuses to restore an archive made
    /// with another runtime name ("was created with runtime '' and cannot be restored with
    /// runtime ..."), so restore with `--runtime runc` (or a podman whose default is runc).
    public static let runtimeName = "runc"

    /// The root-mode bits Podman's overlay root has (and so what CRIU finds at a Podman restore).
    public static let rootMode = SandboxSpec.portableRootMode

    /// Destinations of the files and directories Podman generates per container and binds in.
    /// A kiln restore binds fresh ones of its own there.
    static let generatedBinds: Set<String> = [
        "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/passwd", "/etc/group", "/run/.containerenv", "/dev/shm", "/run/secrets",
    ]
    static let generatedDirectories: Set<String> = ["/dev/shm", "/run/secrets"]

    /// The image a kiln archive's container is made from: empty (one empty layer), so its ID
    /// (the SHA-256 of its config) is the same everywhere and `config.dump` can name it; the
    /// root's content comes from `rootfs-diff.tar`. Podman only restores from an image in its
    /// storage (it would try to pull any other), hence `podman load -i` of ``BaseImage/archive()``
    /// first.
    public enum BaseImage {
        public static let name = "localhost/kiln-root:1"

        /// An empty tar: two 512-byte zero blocks.
        static let layer = [UInt8](repeating: 0, count: 1024)

        static var layerDigest: String { SHA256.hash(data: layer).hexDigits }

        /// The image config; its SHA-256 is the image id.
        static var config: [UInt8] {
            Array(#"{"architecture":"amd64","config":{},"os":"linux","rootfs":{"diff_ids":["sha256:\#(layerDigest)"],"type":"layers"}}"#.utf8)
        }

        /// The image id (hex, no algorithm prefix) that `config.dump` names.
        public static var id: String { SHA256.hash(data: config).hexDigits }

        /// The image as a `docker-archive` tar for `podman load -i FILE`.
        public static func archive() -> [UInt8] {
            let manifest = Array(#"[{"Config":"\#(id).json","RepoTags":["\#(name)"],"Layers":["\#(layerDigest)/layer.tar"]}]"#.utf8)
            var tar = TarWriter()
            tar.addFile("\(id).json", config)
            tar.addFile("\(layerDigest)/layer.tar", layer)
            tar.addFile("manifest.json", manifest)
            return tar.finish()
        }
    }

    /// The part of libpod's `ContainerConfig` (config.dump) kiln writes: what Podman 4.3 needs
    /// to create the container it restores into. Podman fills in the rest (paths in its
    /// storage, log and pid files) as for a new container.
    struct ContainerConfig: Encodable {
        var id: String
        var name: String
        var rootfsImageID = BaseImage.id
        var rootfsImageName = BaseImage.name
        // Podman's own spelling of this field of config.dump.
        // swift-format-ignore: AlwaysUseLowerCamelCase
        var RawImageName = BaseImage.name
        var spec: OCIConfig
        var command: [String]
        var createdTime: Date
        /// A network namespace Podman makes (bridge network "podman", what `podman run` does by
        /// default as root): the images hold the network namespace as external, so the restore
        /// must hand CRIU one.
        var createNetNS = true
        var networkMode = "bridge"
        var newNetworks = ["podman": ["interface_name": "eth0"]]
        var shmSize = 65_536_000
        var stopSignal = 15
        var stopTimeout = 10
        var umask = "0022"
        var labelopts = ["disable"]
        var runtime = PodmanArchive.runtimeName
    }

    /// What `kiln import` reads from `spec.dump`: the process and its mounts.
    struct RuntimeSpec: Decodable {
        struct Process: Decodable {
            var args: [String]?
            var env: [String]?
            var cwd: String?
        }
        struct Mount: Decodable {
            var destination: String
            var type: String?
            var source: String?
            var options: [String]?

            var isBind: Bool { type == "bind" || (options ?? []).contains { $0 == "bind" || $0 == "rbind" } }
        }
        struct Linux: Decodable {
            struct Namespace: Decodable {
                var type: String
                var path: String?
            }
            struct Resources: Decodable {
                struct Memory: Decodable { var limit: Int64? }
                var memory: Memory?
            }
            var namespaces: [Namespace]?
            var resources: Resources?
        }
        var process: Process?
        var mounts: [Mount]?
        var linux: Linux?
    }

    static let encoder = KilnJSON.prettyEncoder()
}

/// A minimal ustar writer for small in-memory files (the base image), so that needs no tar run.
struct TarWriter {
    private var bytes: [UInt8] = []

    mutating func addFile(_ name: String, _ content: [UInt8], mode: Int = 0o644) {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, width: Int) {
            for (index, byte) in text.utf8.prefix(width).enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: Int, width: Int) -> String {
            let digits = String(value, radix: 8)
            return String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
        }
        put(name, at: 0, width: 100)
        put(octal(mode, width: 8), at: 100, width: 7)
        put(octal(0, width: 8), at: 108, width: 7)
        put(octal(0, width: 8), at: 116, width: 7)
        put(octal(content.count, width: 12), at: 124, width: 11)
        put(octal(0, width: 12), at: 136, width: 11)
        header[156] = UInt8(ascii: "0")
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        // The checksum is computed with its own field as spaces.
        for index in 148..<156 { header[index] = UInt8(ascii: " ") }
        let sum = header.reduce(0) { $0 + Int($1) }
        put(octal(sum, width: 7), at: 148, width: 6)
        header[154] = 0
        header[155] = UInt8(ascii: " ")
        bytes += header + content
        bytes += [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    mutating func finish() -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: 1024)
    }
}
