import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

/// What `kiln push --format checkpoint-image` did.
public struct CheckpointImagePushResult: Sendable, Encodable {
    public var snapshot: String
    public var reference: String
    public var digest: String
    /// The one layer: the checkpoint's files, uncompressed.
    public var layerBytes: Int64
    public var pushMs: Double
    /// kiln's empty base image, which Podman must have (`podman load -i`) before it restores.
    public var baseImage: String
    public var baseImageName: String
    public var podmanCommands: [String]
}

extension Kiln {
    /// The annotations `podman container checkpoint --create-image` puts on its images.
    static let checkpointAnnotationPrefix = "io.podman.annotations.checkpoint."

    /// Pushes snapshot `name` as a Podman *checkpoint image*: an OCI image of one layer that
    /// holds what `kiln export` writes (config.dump, spec.dump, rootfs-diff.tar, checkpoint/),
    /// the layout `podman container checkpoint --create-image` produces and `podman container
    /// restore IMAGE` (and CRI-O) restore from. Like an export, the layer holds the service's
    /// memory unencrypted, whatever the snapshot's encryption at rest.
    public func pushCheckpointImage(
        _ name: String, to reference: RegistryReference, access: RegistryAccess, baseImage: String
    ) async throws -> CheckpointImagePushResult {
        let action = "pushing snapshot '\(name)' to \(reference) as a checkpoint image"
        do {
            try access.validate(for: reference)
            let skopeo = try Self.locateSkopeo()
            let start = ContinuousClock.now
            let work = try makeDistributionWorkDirectory("checkpoint-image")
            defer { try? FileManager.default.removeItem(atPath: work) }
            let report = try await export(name, to: "\(work)/archive.tar.zst", baseImage: baseImage, replace: true)
            let manifest = try store.load(name)
            let layer = "\(work)/layer.tar"
            let unpacked = try await Subprocess.run("zstd", ["-d", "-q", "\(work)/archive.tar.zst", "-o", layer])
            guard unpacked.status.isSuccess else {
                throw KilnError(
                    .systemCall, "zstd could not decompress the export (\(unpacked.status))", details: ImageImporter.lastLines(unpacked.stderr))
            }
            try? FileManager.default.removeItem(atPath: "\(work)/archive.tar.zst")
            let layerSHA = try FileDigest.sha256(ofFile: layer)
            let layerSize = (try FileManager.default.attributesOfItem(atPath: layer)[.size] as? Int64) ?? 0
            let config: [String: Any] = [
                "architecture": ImageConfig.hostArchitecture, "os": "linux", "created": ISO8601DateFormatter().string(from: manifest.createdAt),
                "config": [String: Any](), "rootfs": ["type": "layers", "diff_ids": ["sha256:\(layerSHA)"]],
            ]
            let annotations = [
                Self.checkpointAnnotationPrefix + "name": name,
                Self.checkpointAnnotationPrefix + "rawImageName": PodmanArchive.BaseImage.name,
                Self.checkpointAnnotationPrefix + "rootfsImageName": PodmanArchive.BaseImage.name,
                Self.checkpointAnnotationPrefix + "runtime.name": PodmanArchive.runtimeName,
                Self.checkpointAnnotationPrefix + "criu.version": manifest.host.criuVersion,
                Self.checkpointAnnotationPrefix + "type": "container",
                SnapshotArtifact.nameAnnotation: name,
            ]
            _ = try SnapshotArtifact.writeLayout(
                at: "\(work)/layout", artifactType: nil, config: try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]),
                configMediaType: "application/vnd.oci.image.config.v1+json",
                layers: [
                    (
                        blob: SnapshotArtifact.Blob(sha256: layerSHA, size: layerSize, source: layer),
                        descriptor: SnapshotArtifact.Descriptor(
                            mediaType: "application/vnd.oci.image.layer.v1.tar", digest: "sha256:\(layerSHA)", size: layerSize)
                    )
                ],
                annotations: annotations)
            // skopeo gzips the uncompressed layer on its way to a registry (as Podman's own push
            // does), so the registry's manifest digest is the one to report, not the layout's.
            let digest = try await copy(skopeo, from: "oci:\(work)/layout:\(SnapshotArtifact.tag)", to: reference, access: access, work: work)
            return CheckpointImagePushResult(
                snapshot: name, reference: reference.description, digest: digest, layerBytes: layerSize,
                pushMs: start.duration(to: .now).milliseconds,
                baseImage: report.baseImage, baseImageName: report.baseImageName,
                podmanCommands: [
                    "podman load -i \(report.baseImage)",
                    "podman pull \(reference)",
                    "podman --runtime \(PodmanArchive.runtimeName) container restore \(reference) --name \(name)",
                ])
        } catch let error as KilnError {
            throw error.during(action)
        }
    }
}
