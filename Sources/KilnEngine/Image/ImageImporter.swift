import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

/// An image brought onto the machine for a bake: where it came from, its identity, its
/// configuration, and how long getting it took.
public struct ImportedImage: Sendable, Equatable {
    public var reference: ImageReference
    public var image: OCILayout.Image
    /// `skopeo copy` into kiln's work layout (ms).
    public var copyMs: Double
    /// `umoci unpack` of the layers into the root filesystem (ms).
    public var unpackMs: Double
}

/// Takes a container image's root filesystem and configuration from a local store with the
/// tools made for it: skopeo copies the image (from an OCI layout, containers-storage or the
/// Docker daemon) into an OCI layout in a kiln-owned work directory, checking every blob's
/// digest; umoci unpacks its layers in order (whiteouts, hard links, owners and modes as the
/// image says). kiln itself only reads the layout's index, manifest and config.
public struct ImageImporter: Sendable {
    public var skopeo: String
    public var umoci: String
    public var logger: Logger

    /// Finds skopeo and umoci (`$KILN_SKOPEO`, `$KILN_UMOCI`, else on PATH).
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger) throws -> ImageImporter {
        func find(_ tool: String, variable: String) throws -> String {
            let searchPath = (environment["PATH"] ?? "") + ":/usr/local/bin:/usr/bin:/bin"
            let explicit = environment[variable].flatMap { $0.isEmpty ? nil : $0 }
            guard let path = ExecutableSearch.find(explicit ?? tool, in: searchPath) else {
                throw KilnError(
                    .toolMissing,
                    explicit.map { "\(variable) points at '\($0)', which is not an executable file" }
                        ?? "\(tool) is not installed (kiln bakes images with skopeo and umoci)",
                    hint: "install it: apt-get install skopeo umoci (or run 'make setup')\(explicit == nil ? "" : ", or unset \(variable)")")
            }
            return path
        }
        return ImageImporter(skopeo: try find("skopeo", variable: "KILN_SKOPEO"), umoci: try find("umoci", variable: "KILN_UMOCI"), logger: logger)
    }

    /// The tag kiln gives the image in its work layout.
    static let workTag = "kiln"

    /// Copies `reference` into `work/layout`, checks it is for this machine, lets `check` refuse
    /// its configuration (before the unpacking, the slow part), and unpacks its root filesystem
    /// to `rootfs`, which must not exist. `work` is left for the caller to remove.
    public func importImage(
        _ reference: ImageReference, work: String, rootfs: String, check: (OCILayout.Image) throws -> Void = { _ in }
    ) async throws -> ImportedImage {
        if case .ociLayout(let path, _) = reference, !FileManager.default.fileExists(atPath: "\(path)/oci-layout") {
            throw KilnError(
                .imageNotFound, "there is no OCI image layout at \(path) (no oci-layout file)",
                hint: "give the directory that holds oci-layout, index.json and blobs/ (e.g. made with skopeo copy ... oci:DIR:TAG)")
        }
        let layout = "\(work)/layout"
        let copyStart = ContinuousClock.now
        // --insecure-policy: the sources are the machine's own stores, nothing is pulled, so there
        // is no signature to check (and no policy.json is needed).
        var copyArguments = ["--insecure-policy", "copy", "--quiet"]
        // skopeo's docker-daemon transport does not read DOCKER_HOST itself.
        if case .docker = reference, let host = ProcessInfo.processInfo.environment["DOCKER_HOST"], !host.isEmpty {
            copyArguments += ["--src-daemon-host", host]
        }
        copyArguments += [reference.skopeoSource, "oci:\(layout):\(Self.workTag)"]
        logger.debug("image: \(skopeo) \(copyArguments.joined(separator: " "))")
        let copied = try await Subprocess.run(skopeo, copyArguments)
        guard copied.status.isSuccess else { throw Self.explainCopyFailure(reference, stderr: copied.stderr) }
        let copyMs = copyStart.duration(to: .now).milliseconds

        let image = try OCILayout(path: layout).image(tag: Self.workTag)
        try image.config.checkPlatform(reference: reference.description)
        try check(image)

        let unpackStart = ContinuousClock.now
        // `raw unpack`: the root filesystem only. (`umoci unpack` also writes a runtime config,
        // and fails on what kiln decides itself, e.g. a user name missing from /etc/passwd.)
        let unpackArguments = ["raw", "unpack", "--image", "\(layout):\(Self.workTag)", rootfs]
        logger.debug("image: \(umoci) \(unpackArguments.joined(separator: " "))")
        let unpacked = try await Subprocess.run(umoci, unpackArguments)
        guard unpacked.status.isSuccess else {
            throw KilnError(
                .imageUnsupported, "umoci could not unpack image \(reference) (\(unpacked.status))",
                hint: "check that the image's layers are intact (skopeo inspect)", details: Self.lastLines(unpacked.stderr))
        }
        // The mount points kiln's sandbox needs, in case the image lacks them (runc would make them
        // at every start otherwise, in a root that is meant to stay as unpacked).
        for directory in ["proc", "dev", "sys", "tmp"] where !FileManager.default.fileExists(atPath: "\(rootfs)/\(directory)") {
            try? FileManager.default.createDirectory(atPath: "\(rootfs)/\(directory)", withIntermediateDirectories: false)
        }
        return ImportedImage(reference: reference, image: image, copyMs: copyMs, unpackMs: unpackStart.duration(to: .now).milliseconds)
    }

    /// skopeo's failure as the error a user can act on: no such image, an image for another
    /// platform, a Docker daemon that is not running.
    static func explainCopyFailure(_ reference: ImageReference, stderr: String) -> KilnError {
        let details = lastLines(stderr)
        let text = stderr.lowercased()
        if text.contains("no image found in manifest list") || text.contains("choosing image instance") || text.contains("no matching manifest") {
            return KilnError(
                .imageUnsupported, "image \(reference) has no variant for linux/\(ImageConfig.hostArchitecture)",
                hint: "build or pull it for linux/\(ImageConfig.hostArchitecture); kiln cannot emulate another CPU", details: details)
        }
        if case .docker = reference,
            text.contains("cannot connect to the docker daemon") || text.contains("docker.sock") || text.contains("is the docker daemon running")
        {
            return KilnError(
                .toolMissing, "the Docker daemon is not reachable, so image \(reference) cannot be read from it",
                hint:
                    "start dockerd (or set DOCKER_HOST), or export the image first: docker save, or skopeo copy into an OCI layout and bake from oci:DIR",
                details: details)
        }
        let place: String =
            switch reference {
            case .ociLayout(let path, _): "the OCI layout \(path)"
            case .podman: "containers-storage (podman images lists it)"
            case .docker: "the Docker daemon (docker images lists it)"
            }
        return KilnError(
            .imageNotFound, "image \(reference) was not found in \(place)",
            hint: "check the name and tag; kiln reads local images only, pull or load it first (podman pull, docker pull, podman load)",
            details: details)
    }

    static func lastLines(_ text: String) -> [String] {
        text.split(separator: "\n").suffix(5).map { String($0.prefix(400)) }
    }
}
