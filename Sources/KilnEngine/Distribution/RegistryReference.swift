import Foundation
import KilnOCI
import KilnSystem

/// Where a snapshot lives in an OCI registry: `HOST[:PORT]/REPOSITORY[:TAG]`, as `docker push`
/// and skopeo's `docker://` transport write it (the tag defaults to `latest`).
public struct RegistryReference: Sendable, Equatable, CustomStringConvertible {
    /// `host` or `host:port`, e.g. `127.0.0.1:5000`, `registry.example.com`.
    public var registry: String
    /// e.g. `kiln/hello`.
    public var repository: String
    public var tag: String

    public init(parsing text: String) throws {
        let syntax = "write it as HOST[:PORT]/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/kiln/hello:v1"
        var rest = text
        if rest.hasPrefix("docker://") { rest.removeFirst("docker://".count) }
        guard let slash = rest.firstIndex(of: "/") else {
            throw KilnError(.invalidArgument, "'\(text)' names no registry host", hint: syntax)
        }
        let registry = String(rest[..<slash])
        var path = String(rest[rest.index(after: slash)...])
        var tag = "latest"
        if let colon = path.lastIndex(of: ":"), !path[colon...].contains("/") {
            tag = String(path[path.index(after: colon)...])
            path = String(path[..<colon])
        }
        let hostCharacters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
        let pathCharacters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyz0123456789._-/")
        let tagCharacters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard !registry.isEmpty, registry.unicodeScalars.allSatisfy(hostCharacters.contains),
            registry.contains(".") || registry.contains(":") || registry == "localhost"
        else {
            throw KilnError(
                .invalidArgument, "'\(text)' does not start with a registry host (a name with a dot or a port, or localhost)", hint: syntax)
        }
        guard !path.isEmpty, path.unicodeScalars.allSatisfy(pathCharacters.contains), !path.hasPrefix("/"), !path.hasSuffix("/"), !path.contains("//")
        else {
            throw KilnError(.invalidArgument, "'\(text)' has no valid repository (lowercase letters, digits, '.', '_', '-', '/')", hint: syntax)
        }
        guard !tag.isEmpty, tag.count <= 128, tag.unicodeScalars.allSatisfy(tagCharacters.contains), tag.first != ".", tag.first != "-" else {
            throw KilnError(.invalidArgument, "'\(text)' has no valid tag (up to 128 letters, digits, '.', '_', '-')", hint: syntax)
        }
        (self.registry, self.repository, self.tag) = (registry, path, tag)
    }

    public var description: String { "\(registry)/\(repository):\(tag)" }

    /// skopeo's name for it.
    var transport: String { "docker://\(description)" }

    /// The tag a signature of the manifest `digest` is stored under, as cosign names them:
    /// `sha256-<hex>.sig`.
    func signatureTag(for digest: String) -> RegistryReference {
        var reference = self
        reference.tag = digest.replacingOccurrences(of: "sha256:", with: "sha256-") + ".sig"
        return reference
    }

    /// The registry's host without its port.
    var host: String {
        if registry.hasPrefix("["), let end = registry.firstIndex(of: "]") {
            return String(registry[registry.index(after: registry.startIndex)..<end])
        }
        return String(registry.split(separator: ":").first ?? "")
    }

    /// Whether the registry is on this machine's loopback: the only place `--insecure` (no TLS
    /// verification) is allowed, since nothing crosses a network there.
    public var isLoopback: Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets.first == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}

/// How to reach a registry: credentials, which CA to trust, and whether to skip TLS verification.
public struct RegistryAccess: Sendable {
    /// `USER:PASSWORD` for basic auth (handed to skopeo through a private auth file, never on its
    /// command line).
    public var credentials: String?
    /// A containers auth file (`auth.json`) to use instead.
    public var authFile: String?
    /// A directory of `*.crt` CA certificates (and client `*.cert`/`*.key`) for the registry's TLS.
    public var certificateDirectory: String?
    /// No TLS verification, or plain HTTP: loopback registries only.
    public var insecure: Bool

    public init(credentials: String? = nil, authFile: String? = nil, certificateDirectory: String? = nil, insecure: Bool = false) {
        self.credentials = credentials
        self.authFile = authFile
        self.certificateDirectory = certificateDirectory
        self.insecure = insecure
    }

    /// ``validate(for:)``, for commands that check their options before they start.
    public func check(for reference: RegistryReference) throws { try validate(for: reference) }

    /// Refuses `--insecure` for a registry that is not on loopback, and malformed credentials.
    func validate(for reference: RegistryReference) throws {
        if insecure, !reference.isLoopback {
            throw KilnError(
                .invalidArgument, "--insecure is only allowed for a registry on loopback (127.0.0.0/8, ::1, localhost), not \(reference.registry)",
                hint: "trust the registry's CA instead: --cert-dir DIR with its ca.crt")
        }
        if let credentials, !credentials.contains(":") || credentials.hasPrefix(":") {
            throw KilnError(.invalidArgument, "registry credentials must be USER:PASSWORD", hint: "e.g. --creds kiln:secret, or KILN_REGISTRY_CREDS")
        }
        if credentials != nil, authFile != nil {
            throw KilnError(.invalidArgument, "give registry credentials or an auth file, not both")
        }
    }

    /// skopeo's options for this registry, `prefix` being `src` or `dest` (copy) or empty
    /// (inspect); the auth file kiln writes for `credentials` goes into `work`.
    func skopeoOptions(_ prefix: String, reference: RegistryReference, work: String) throws -> [String] {
        let flag = { (name: String) in prefix.isEmpty ? "--\(name)" : "--\(prefix)-\(name)" }
        var options: [String] = []
        if let credentials {
            let path = "\(work)/auth.json"
            if !FileManager.default.fileExists(atPath: path) {
                let auth = ["auths": [reference.registry: ["auth": Data(credentials.utf8).base64EncodedString()]]]
                let data = try JSONSerialization.data(withJSONObject: auth)
                guard FileManager.default.createFile(atPath: path, contents: data, attributes: [.posixPermissions: 0o600]) else {
                    throw KilnError(.systemCall, "could not write the registry auth file \(path)")
                }
            }
            options += [flag("authfile"), path]
        } else if let authFile {
            options += [flag("authfile"), authFile]
        }
        if let certificateDirectory { options += [flag("cert-dir"), certificateDirectory] }
        if insecure { options += [flag("tls-verify") + "=false"] }
        return options
    }
}
