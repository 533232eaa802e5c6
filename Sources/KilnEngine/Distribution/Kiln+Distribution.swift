import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

/// What `kiln push` did.
public struct PushResult: Sendable, Encodable {
    public var snapshot: String
    public var reference: String
    /// The OCI manifest digest: `REPOSITORY@DIGEST` pins exactly this snapshot.
    public var digest: String
    public var files: Int
    public var sizeBytes: Int64
    public var pushMs: Double
    /// The tag the signature was pushed under, and the signing key's id (`--sign`).
    public var signatureTag: String?
    public var keyID: String?
}

/// What `kiln pull` did.
public struct PullResult: Sendable, Encodable {
    public var reference: String
    public var digest: String
    /// The name it has in this store.
    public var snapshot: String
    public var files: Int
    public var sizeBytes: Int64
    /// From the first request to the registry to the snapshot committed to the store.
    public var pullMs: Double
    /// Checking every file's SHA-256 against the kiln manifest (part of pullMs).
    public var verifyMs: Double
    /// The trusted key that signed it (`--verify`).
    public var signedBy: String?
    /// How this host differs from the one the snapshot was baked on, harmlessly (or waived).
    public var hostNotes: [HostDifference]
}

extension Kiln {
    /// Pushes stored snapshot `name` to `reference` as an OCI artifact (``SnapshotArtifact``),
    /// after verifying it, and with `signingKey` a signature of its manifest digest, tagged
    /// `sha256-<hex>.sig` beside it.
    public func push(
        _ name: String, to reference: RegistryReference, access: RegistryAccess, signingKey: SnapshotSigningKey? = nil
    ) async throws -> PushResult {
        let action = "pushing snapshot '\(name)' to \(reference)"
        do {
            try access.validate(for: reference)
            let skopeo = try Self.locateSkopeo()
            let start = ContinuousClock.now
            let manifest = try store.load(name)
            guard manifest.image == nil else {
                throw KilnError(
                    .invalidArgument, "snapshot '\(name)' was baked from a container image; kiln push does not carry image root filesystems yet",
                    hint: "push the image itself and bake from it on the other host, or bake without --image")
            }
            // Never publish a damaged snapshot: every file is checked against the manifest first.
            try store.verify(manifest)
            let work = try makeDistributionWorkDirectory("push")
            defer { try? FileManager.default.removeItem(atPath: work) }
            let digest = try SnapshotArtifact.writeSnapshotLayout(
                at: "\(work)/layout", manifestFile: "\(store.directory(of: name))/manifest.json", dumpDirectory: store.dumpDirectory(of: name),
                manifest: manifest)
            let pushed = try await copy(
                skopeo, from: "oci:\(work)/layout:\(SnapshotArtifact.tag)", to: reference, access: access, work: work)
            guard pushed == digest else {
                throw KilnError(
                    .registryFailed, "the registry stored manifest \(pushed), not the \(digest) kiln wrote",
                    hint: "the registry or skopeo rewrote the manifest; use an OCI distribution registry (e.g. CNCF distribution 2.8+)")
            }
            var result = PushResult(
                snapshot: name, reference: reference.description, digest: digest, files: manifest.files.count, sizeBytes: manifest.sizeBytes,
                pushMs: 0)
            if let signingKey {
                let signature = try signingKey.sign(manifestDigest: digest)
                let tag = reference.signatureTag(for: digest)
                let layout = "\(work)/signature"
                _ = try SnapshotArtifact.writeLayout(
                    at: layout, artifactType: SnapshotArtifact.signatureArtifactType, config: try SnapshotArtifact.encoder.encode(signature),
                    configMediaType: SnapshotArtifact.signatureMediaType, layers: [], annotations: ["dev.kiln.signature.key-id": signingKey.id])
                _ = try await copy(skopeo, from: "oci:\(layout):\(SnapshotArtifact.tag)", to: tag, access: access, work: work)
                result.signatureTag = tag.tag
                result.keyID = signingKey.id
            }
            result.pushMs = start.duration(to: .now).milliseconds
            return result
        } catch let error as KilnError {
            throw error.during(action)
        }
    }

    /// Pulls the snapshot at `reference` into the store as `name` (default: its own name).
    ///
    /// Before any image file is downloaded: with `trusted` keys, a signature by one of them over
    /// the manifest digest is required; the kiln manifest must decode and pass the host check.
    /// The files are then copied pinned to that digest (skopeo checks every blob's digest), each
    /// checked again against the kiln manifest's SHA-256 in a staging directory, and only a
    /// complete, verified snapshot is moved into the store.
    public func pull(
        _ reference: RegistryReference, as requestedName: String? = nil, access: RegistryAccess, trusted: [SnapshotVerifyingKey] = [],
        replace: Bool = false
    ) async throws -> PullResult {
        let action = "pulling \(reference)"
        do {
            try access.validate(for: reference)
            if let requestedName { try SnapshotStore.validate(name: requestedName) }
            let skopeo = try Self.locateSkopeo()
            let start = ContinuousClock.now
            let work = try makeDistributionWorkDirectory("pull")
            defer { try? FileManager.default.removeItem(atPath: work) }

            // 1. The manifest, and its digest: everything below is pinned to it.
            let rawManifest = try await inspect(skopeo, reference, config: false, access: access, work: work)
            let digest = "sha256:" + FileDigest.sha256(rawManifest)
            let artifact = try SnapshotArtifact.decode(SnapshotArtifact.Manifest.self, rawManifest, "manifest of \(reference)")
            guard artifact.config.mediaType == SnapshotArtifact.configMediaType else {
                throw KilnError(
                    .invalidArgument, "\(reference) is not a kiln snapshot (its config is '\(artifact.config.mediaType)')",
                    hint: "push one with 'kiln push NAME \(reference)'")
            }
            let byDigest = pinnedReference(reference, digest)

            // 2. The signature, if one is required.
            var signedBy: String?
            if !trusted.isEmpty {
                var signatures: [SnapshotSignature] = []
                do {
                    let data = try await inspect(skopeo, reference.signatureTag(for: digest), config: true, access: access, work: work)
                    signatures.append(try SnapshotArtifact.decode(SnapshotSignature.self, data, "signature of \(reference)"))
                } catch let error as KilnError where error.code == .imageNotFound {
                    // No signature tag: unsigned.
                }
                if let refusal = SnapshotSignature.refusal(of: signatures, manifestDigest: digest, trusted: trusted, reference: reference.description)
                {
                    throw refusal
                }
                signedBy = trusted.first { key in signatures.contains { key.isValid($0, manifestDigest: digest) } }?.id
            }

            // 3. The kiln manifest (the config blob), checked against its digest, and the host check.
            let configData = try await inspect(skopeo, byDigest, config: true, access: access, reference: reference, work: work)
            guard "sha256:" + FileDigest.sha256(configData) == artifact.config.digest else {
                throw KilnError(
                    .snapshotCorrupt, "the kiln manifest of \(reference) does not match its digest \(artifact.config.digest); refusing it")
            }
            let pulled = try SnapshotManifest.decode(configData, source: "of \(reference)")
            guard pulled.image == nil else {
                throw KilnError(
                    .invalidArgument, "\(reference) was baked from a container image; kiln pull does not carry image root filesystems yet")
            }
            try Self.checkLayers(artifact.layers, match: pulled, reference: reference)
            let differences = try hostDifferences(pulled)
            if let refusal = HostCheck.refusal(snapshot: pulled.name, differences: differences) { throw refusal }

            let name = requestedName ?? pulled.name
            if pulled.encryption != nil, name != pulled.name {
                throw KilnError(
                    .invalidArgument, "snapshot '\(pulled.name)' is encrypted for its own name; it cannot be pulled as '\(name)'",
                    hint: "pull it without --name (each encrypted file is bound to the snapshot's name)")
            }
            if store.exists(name), !replace {
                throw KilnError(.snapshotExists, "a snapshot named '\(name)' is already in the store", hint: "pass --replace, or --name ANOTHER")
            }

            // 4. The files, pinned to the digest, into a layout; then into a staging directory.
            let layout = "\(work)/layout"
            _ = try await copy(skopeo, from: byDigest, to: "oci:\(layout):\(SnapshotArtifact.tag)", access: access, reference: reference, work: work)
            let (copiedDigest, _, blobPath) = try SnapshotArtifact.readLayout(layout)
            guard copiedDigest == digest else {
                throw KilnError(.snapshotCorrupt, "skopeo copied manifest \(copiedDigest), not \(digest) as asked; refusing it")
            }
            let staging = try store.makeStagingDirectory(for: name)
            do {
                // Two files with the same bytes share a blob: the first is moved, the rest copied from it.
                var placed: [String: String] = [:]
                for file in pulled.files {
                    let target = "\(staging)/images/\(file.path)"
                    try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                    if let twin = placed[file.sha256] {
                        try FileManager.default.copyItem(atPath: twin, toPath: target)
                    } else {
                        let source = blobPath("sha256:\(file.sha256)")
                        guard FileManager.default.fileExists(atPath: source) else {
                            throw KilnError(.snapshotCorrupt, "the pulled layout has no blob for \(file.path)")
                        }
                        try FileManager.default.moveItem(atPath: source, toPath: target)
                        placed[file.sha256] = target
                    }
                    chmod(target, 0o600)
                }
                var final = pulled
                final.name = name
                let verifyStart = ContinuousClock.now
                try store.verify(final, dumpDirectory: "\(staging)/images")
                let verifyMs = verifyStart.duration(to: .now).milliseconds
                _ = try store.commit(staging: staging, verified: final)
                DumpCache(root: paths.dumpCache, store: store).evict(name)
                return PullResult(
                    reference: reference.description, digest: digest, snapshot: name, files: final.files.count, sizeBytes: final.sizeBytes,
                    pullMs: start.duration(to: .now).milliseconds, verifyMs: verifyMs, signedBy: signedBy,
                    hostNotes: differences.filter { $0.severity == .note })
            } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw error
            }
        } catch let error as KilnError {
            throw error.during(action)
        }
    }

    /// Every layer is one of the manifest's files, in order: same digest, size and title.
    static func checkLayers(_ layers: [SnapshotArtifact.Descriptor], match manifest: SnapshotManifest, reference: RegistryReference) throws {
        guard layers.count == manifest.files.count else {
            throw KilnError(
                .snapshotCorrupt, "\(reference) has \(layers.count) layers for the \(manifest.files.count) files its kiln manifest lists; refusing it"
            )
        }
        for (layer, file) in zip(layers, manifest.files) {
            guard layer.digest == "sha256:\(file.sha256)", layer.size == file.size, layer.annotations?[SnapshotArtifact.titleAnnotation] == file.path,
                layer.mediaType == SnapshotArtifact.fileMediaType
            else {
                throw KilnError(
                    .snapshotCorrupt, "\(reference): its layer \(layer.digest) is not the file \(file.path) its kiln manifest lists; refusing it")
            }
        }
    }

    /// skopeo's name for `reference`'s repository at exactly `digest`.
    func pinnedReference(_ reference: RegistryReference, _ digest: String) -> String {
        "docker://\(reference.registry)/\(reference.repository)@\(digest)"
    }

    /// A private scratch directory beside the store (same filesystem: pushed files are hard
    /// links, pulled ones are renamed into place).
    func makeDistributionWorkDirectory(_ kind: String) throws -> String {
        try store.prepare()
        let path = "\(store.stagingDirectory)/\(kind)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return path
    }

    static func locateSkopeo(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let searchPath = (environment["PATH"] ?? "") + ":/usr/local/bin:/usr/bin:/bin"
        guard let path = ExecutableSearch.find(environment["KILN_SKOPEO"].flatMap { $0.isEmpty ? nil : $0 } ?? "skopeo", in: searchPath) else {
            throw KilnError(
                .toolMissing, "skopeo is not installed (kiln push and pull copy snapshots with it)",
                hint: "apt-get install skopeo (or run 'make setup')")
        }
        return path
    }

    /// `skopeo inspect --raw` of a manifest (or `--config` of its config blob): the bytes.
    func inspect(_ skopeo: String, _ reference: RegistryReference, config: Bool, access: RegistryAccess, work: String) async throws -> Data {
        try await inspect(skopeo, reference.transport, config: config, access: access, reference: reference, work: work)
    }

    func inspect(
        _ skopeo: String, _ transport: String, config: Bool, access: RegistryAccess, reference: RegistryReference, work: String
    ) async throws -> Data {
        let arguments =
            ["inspect", "--raw"] + (config ? ["--config"] : []) + (try access.skopeoOptions("", reference: reference, work: work)) + [transport]
        logger.debug("registry: \(skopeo) \(arguments.joined(separator: " "))")
        let output = try await Subprocess.run(skopeo, arguments)
        guard output.status.isSuccess else { throw Self.explainRegistryFailure(reference, stderr: output.stderr) }
        return Data(output.stdout.utf8)
    }

    /// `skopeo copy` of a layout to the registry; returns the digest of the manifest it wrote.
    func copy(_ skopeo: String, from source: String, to reference: RegistryReference, access: RegistryAccess, work: String) async throws -> String {
        let digestFile = "\(work)/pushed-digest"
        try? FileManager.default.removeItem(atPath: digestFile)
        let arguments =
            ["--insecure-policy", "copy", "--quiet", "--digestfile", digestFile]
            + (try access.skopeoOptions("dest", reference: reference, work: work))
            + [source, reference.transport]
        logger.debug("registry: \(skopeo) \(arguments.joined(separator: " "))")
        let output = try await Subprocess.run(skopeo, arguments)
        guard output.status.isSuccess else { throw Self.explainRegistryFailure(reference, stderr: output.stderr) }
        return ((try? String(contentsOfFile: digestFile, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `skopeo copy` from the registry into a layout (skopeo checks each blob against its digest).
    func copy(_ skopeo: String, from source: String, to destination: String, access: RegistryAccess, reference: RegistryReference, work: String)
        async throws
    {
        // --insecure-policy: kiln checks its own signatures (--verify), not containers' policy.json.
        let arguments =
            ["--insecure-policy", "copy", "--quiet"] + (try access.skopeoOptions("src", reference: reference, work: work)) + [source, destination]
        logger.debug("registry: \(skopeo) \(arguments.joined(separator: " "))")
        let output = try await Subprocess.run(skopeo, arguments)
        guard output.status.isSuccess else { throw Self.explainRegistryFailure(reference, stderr: output.stderr) }
    }

    /// skopeo's failure as the error a user can act on.
    static func explainRegistryFailure(_ reference: RegistryReference, stderr: String) -> KilnError {
        let details = stderr.split(separator: "\n").suffix(4).map { String($0.prefix(400)) }
        let text = stderr.lowercased()
        if text.contains("manifest unknown") || text.contains("name unknown") || text.contains("not found") {
            return KilnError(
                .imageNotFound, "\(reference) is not in the registry", hint: "check the repository and tag (kiln push NAME \(reference))",
                details: details)
        }
        if text.contains("unauthorized") || text.contains("authentication required") || text.contains("denied") {
            return KilnError(
                .registryFailed, "the registry \(reference.registry) refused kiln's credentials for \(reference.repository)",
                hint: "pass --creds USER:PASSWORD (or KILN_REGISTRY_CREDS, or --authfile)", details: details)
        }
        if text.contains("x509") || text.contains("certificate") || text.contains("tls") {
            return KilnError(
                .registryFailed, "the TLS certificate of \(reference.registry) is not trusted",
                hint: "pass --cert-dir DIR holding the registry's CA as ca.crt (or, for a registry on loopback only, --insecure)", details: details)
        }
        if text.contains("digest") && (text.contains("match") || text.contains("verif")) {
            return KilnError(
                .snapshotCorrupt,
                "a blob of \(reference) does not match its digest: the registry's copy is damaged or was tampered with; nothing was stored",
                hint: "push the snapshot again from a host that has it intact", details: details)
        }
        if text.contains("connection refused") || text.contains("no such host") || text.contains("timeout") {
            return KilnError(
                .registryFailed, "the registry \(reference.registry) cannot be reached", hint: "is it running, and is the address right?",
                details: details)
        }
        return KilnError(.registryFailed, "skopeo failed for \(reference)", details: details)
    }
}
