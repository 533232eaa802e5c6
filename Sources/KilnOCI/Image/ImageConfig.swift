import Foundation
import KilnSystem

/// The parts of an OCI image configuration kiln honours: what to run, with which environment,
/// where, as whom, on which port, and for which platform.
public struct ImageConfig: Sendable, Equatable {
    public var architecture: String
    public var os: String
    public var entrypoint: [String]
    public var cmd: [String]
    /// `KEY=VALUE` entries, in the image's order.
    public var env: [String]
    public var workingDir: String
    /// `uid[:gid]` or a user name; empty means root.
    public var user: String
    /// `PORT/PROTO` entries, sorted.
    public var exposedPorts: [String]

    public init(
        architecture: String = "amd64", os: String = "linux", entrypoint: [String] = [], cmd: [String] = [], env: [String] = [],
        workingDir: String = "", user: String = "", exposedPorts: [String] = []
    ) {
        self.architecture = architecture
        self.os = os
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.exposedPorts = exposedPorts
    }

    /// Decodes the config blob of an image (`application/vnd.oci.image.config.v1+json`, which
    /// Docker's config format matches in every field read here).
    public init(json data: Data) throws {
        struct Document: Decodable {
            // The field names are the OCI image config's own.
            // swift-format-ignore: AlwaysUseLowerCamelCase
            struct Config: Decodable {
                var Entrypoint: [String]?
                var Cmd: [String]?
                var Env: [String]?
                var WorkingDir: String?
                var User: String?
                var ExposedPorts: [String: EmptyObject]?
            }
            struct EmptyObject: Decodable {}
            var architecture: String?
            var os: String?
            var config: Config?
        }
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: data)
        } catch {
            throw KilnError(.imageUnsupported, "the image's configuration is not a valid OCI image config: \(error)")
        }
        let config = document.config
        self.init(
            architecture: document.architecture ?? "", os: document.os ?? "", entrypoint: config?.Entrypoint ?? [], cmd: config?.Cmd ?? [],
            env: config?.Env ?? [], workingDir: config?.WorkingDir ?? "", user: config?.User ?? "",
            exposedPorts: (config?.ExposedPorts.map { Array($0.keys) } ?? []).sorted())
    }

    /// The architecture name images use for this machine (GOARCH spelling).
    public static var hostArchitecture: String {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        switch machine {
        case "x86_64": return "amd64"
        case "aarch64": return "arm64"
        case "i386", "i686": return "386"
        case "armv7l": return "arm"
        default: return machine
        }
    }

    /// Refuses an image this machine cannot run: another OS or CPU architecture.
    public func checkPlatform(reference: String, hostArchitecture: String = Self.hostArchitecture) throws {
        guard os.isEmpty || os == "linux", architecture == hostArchitecture else {
            throw KilnError(
                .imageUnsupported,
                "image \(reference) is for \(os.isEmpty ? "linux" : os)/\(architecture), this machine runs linux/\(hostArchitecture)",
                hint:
                    "build or pull the image for linux/\(hostArchitecture) (e.g. docker build --platform linux/\(hostArchitecture)); kiln cannot emulate another CPU"
            )
        }
    }

    /// The TCP ports the image exposes (`EXPOSE 8080`), in order.
    public var tcpPorts: [Int] {
        exposedPorts.compactMap { entry in
            let parts = entry.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, parts.count == 1 || parts[1] == "tcp", let port = Int(parts[0]), InputValidation.isServicePort(port) else {
                return nil
            }
            return port
        }
    }

    /// The image's `User` as a uid and gid, or nil for root. Only numeric users are honoured:
    /// a name would have to be looked up in the image's /etc/passwd, which kiln does not trust
    /// to mean the same thing at every restore.
    public func sandboxUser(reference: String) throws -> SandboxUser? {
        guard !user.isEmpty else { return nil }
        let parts = user.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let uid = UInt32(parts[0]), parts.count == 1 || UInt32(parts[1]) != nil else {
            throw KilnError(
                .imageUnsupported, "image \(reference) runs as user '\(user)': kiln accepts only a numeric user (uid or uid:gid)",
                hint: "set a numeric USER in the image (e.g. USER 1000:1000) and build it again")
        }
        let gid = parts.count == 2 ? UInt32(parts[1])! : 0
        return uid == 0 && gid == 0 ? nil : SandboxUser(uid: uid, gid: gid)
    }

    /// The sandbox a bake of this image runs in, from what the user gave on the command line:
    /// `base.command` replaces the image's `Cmd` (as with `docker run IMAGE ARGS...`) and follows
    /// its `Entrypoint`; `base.environment` (`--env`) is laid over the image's `Env`; `base.port`
    /// 0 means "not given", and the image's one exposed TCP port is used. The root is `rootfs`
    /// (read-only), the working directory the image's (default `/`).
    public func sandbox(applyingTo base: SandboxSpec, rootfs: String, reference: String) throws -> SandboxSpec {
        var spec = base
        spec.command = entrypoint + (base.command.isEmpty ? cmd : base.command)
        guard !spec.command.isEmpty else {
            throw KilnError(
                .invalidArgument, "image \(reference) has no Entrypoint or Cmd, and no command was given",
                hint: "put the service's command after '--', e.g. kiln bake NAME --image \(reference) -- java -jar /app/app.jar")
        }
        var environment: [String: String] = [:]
        for entry in env {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex, !entry.utf8.contains(0) else { continue }
            environment[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        spec.environment = environment.merging(base.environment) { _, given in given }
        let directory = workingDir.isEmpty ? "/" : (workingDir.hasPrefix("/") ? workingDir : "/" + workingDir)
        spec.workingDirectory = (directory as NSString).standardizingPath
        spec.rootFilesystem = .directory(rootfs)
        spec.user = try sandboxUser(reference: reference)
        if base.port == 0 {
            let ports = tcpPorts
            guard ports.count == 1 else {
                throw KilnError(
                    .invalidArgument,
                    ports.isEmpty
                        ? "image \(reference) exposes no TCP port, and no --port was given"
                        : "image \(reference) exposes several TCP ports (\(ports.map(String.init).joined(separator: ", "))): which one answers HTTP?",
                    hint: "pass --port with the port the service listens on")
            }
            spec.port = ports[0]
        }
        return spec
    }
}

/// Reads an OCI image layout (`oci-layout`, `index.json`, `blobs/`) as skopeo writes it.
public struct OCILayout: Sendable {
    public var path: String

    public init(path: String) {
        self.path = path
    }

    /// What one image of the layout is: its manifest's and config's digests and the config.
    public struct Image: Sendable, Equatable {
        public var manifestDigest: String
        public var configDigest: String
        public var config: ImageConfig
    }

    private struct Descriptor: Decodable {
        var mediaType: String?
        var digest: String
        var annotations: [String: String]?
    }
    private struct Index: Decodable { var manifests: [Descriptor] }
    private struct Manifest: Decodable {
        var mediaType: String?
        var config: Descriptor
        var layers: [Descriptor]
    }

    static let refNameAnnotation = "org.opencontainers.image.ref.name"

    /// The image tagged `tag` (or the only one, without a tag).
    public func image(tag: String?) throws -> Image {
        let index: Index = try decode(read("index.json"), "index.json")
        let candidates = tag.map { tag in index.manifests.filter { $0.annotations?[Self.refNameAnnotation] == tag } } ?? index.manifests
        guard candidates.count == 1, let descriptor = candidates.first else {
            throw KilnError(
                .imageNotFound,
                "the OCI layout \(path) has \(candidates.isEmpty ? "no" : "more than one") image\(tag.map { " tagged '\($0)'" } ?? "")",
                hint:
                    "name the tag, e.g. oci:\(path):latest (tags: \(index.manifests.compactMap { $0.annotations?[Self.refNameAnnotation] }.joined(separator: ", ")))"
            )
        }
        let manifest: Manifest = try decode(try blob(descriptor.digest), "manifest \(descriptor.digest)")
        let config = try ImageConfig(json: try blob(manifest.config.digest))
        return Image(manifestDigest: descriptor.digest, configDigest: manifest.config.digest, config: config)
    }

    /// The bytes of a blob, checked against its digest (kiln records the digest as the image's identity).
    func blob(_ digest: String) throws -> Data {
        guard Self.isDigest(digest) else {
            throw KilnError(.imageUnsupported, "the OCI layout \(path) refers to '\(digest)', which is not a sha256 digest")
        }
        let data = try read("blobs/sha256/\(digest.dropFirst("sha256:".count))")
        guard "sha256:" + FileDigest.sha256(data) == digest else {
            throw KilnError(.imageUnsupported, "the blob \(digest) in the OCI layout \(path) does not match its digest")
        }
        return data
    }

    /// `sha256:` and 64 lowercase hex digits.
    public static func isDigest(_ text: String) -> Bool {
        guard text.hasPrefix("sha256:") else { return false }
        let hex = text.utf8.dropFirst(7)
        return hex.count == 64
            && hex.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }

    private func decode<T: Decodable>(_ data: Data, _ what: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw KilnError(.imageUnsupported, "the \(what) of the OCI layout \(path) cannot be read: \(error)")
        }
    }

    private func read(_ relative: String) throws -> Data {
        guard let data = FileManager.default.contents(atPath: "\(path)/\(relative)") else {
            throw KilnError(
                .imageNotFound, "the OCI layout \(path) has no \(relative)", hint: "is \(path) an OCI image layout (skopeo copy ... oci:\(path))?")
        }
        return data
    }
}
