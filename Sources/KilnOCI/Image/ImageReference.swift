import Foundation
import KilnSystem

/// Where `kiln bake --image` takes a container image from.
///
/// Written `oci:DIR[:TAG]` (an OCI image layout on disk), `podman:NAME[:TAG]` (the local
/// containers-storage that Podman, Buildah and CRI-O share), `docker:NAME[:TAG]` (the local Docker
/// daemon), or a bare path to a directory holding an `oci-layout` file. No registry: kiln bakes
/// what is already on the machine.
public enum ImageReference: Sendable, Equatable, CustomStringConvertible {
    /// An OCI image layout directory (absolute) and the tag in its index, if any.
    case ociLayout(path: String, tag: String?)
    /// An image in containers-storage. The name may start with skopeo's storage specifier,
    /// `[driver@graphroot+runroot]`, to use a store other than the default one.
    case podman(String)
    /// An image the local Docker daemon holds.
    case docker(String)

    /// Parses what `--image` was given; relative layout paths are taken from `directory`.
    public init(parsing text: String, relativeTo directory: String = FileManager.default.currentDirectoryPath) throws {
        let syntax = "write it as oci:DIR[:TAG], podman:NAME[:TAG] or docker:NAME[:TAG] (or the path of an OCI layout directory)"
        guard !text.isEmpty, !text.utf8.contains(0), !text.contains(where: { $0.isNewline }) else {
            throw KilnError(.invalidArgument, "--image '\(text)' is not an image reference", hint: syntax)
        }
        let absolute = { (path: String) in URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: directory)).standardizedFileURL.path }
        if text.hasPrefix("oci:") {
            let rest = String(text.dropFirst(4))
            // The tag follows the last colon, unless that colon belongs to the path.
            var path = rest
            var tag: String?
            if let colon = rest.lastIndex(of: ":"), !rest[rest.index(after: colon)...].contains("/") {
                path = String(rest[..<colon])
                tag = String(rest[rest.index(after: colon)...])
            }
            guard !path.isEmpty, tag.map({ !$0.isEmpty }) ?? true else {
                throw KilnError(.invalidArgument, "--image '\(text)' names no layout directory or an empty tag", hint: syntax)
            }
            self = .ociLayout(path: absolute(path), tag: tag)
        } else if text.hasPrefix("podman:") || text.hasPrefix("docker:") {
            let name = String(text.drop { $0 != ":" }.dropFirst())
            guard Self.isImageName(name) else {
                throw KilnError(.invalidArgument, "--image '\(text)' has no valid image name", hint: syntax)
            }
            self = text.hasPrefix("podman:") ? .podman(name) : .docker(name)
        } else if FileManager.default.fileExists(atPath: "\(absolute(text))/oci-layout") {
            self = .ociLayout(path: absolute(text), tag: nil)
        } else {
            throw KilnError(.invalidArgument, "--image '\(text)' names no image kiln knows how to read", hint: syntax)
        }
    }

    /// A name skopeo will take as one argument: no spaces, no leading dash (an option), not empty.
    static func isImageName(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix("-") && !name.contains(where: { $0.isWhitespace })
            && name.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.isASCII }
    }

    /// The name with `:latest` added when it has neither tag nor digest (skopeo's docker-daemon
    /// transport insists on one; Docker and Podman mean `latest` when none is given).
    static func withDefaultTag(_ name: String) -> String {
        let bare = name.hasPrefix("[") ? String(name.drop { $0 != "]" }.dropFirst()) : name
        let last = bare.split(separator: "/").last.map(String.init) ?? bare
        return last.contains(":") || last.contains("@") ? name : name + ":latest"
    }

    /// The source argument of `skopeo copy`.
    package var skopeoSource: String {
        switch self {
        case .ociLayout(let path, let tag): "oci:\(path)" + (tag.map { ":\($0)" } ?? "")
        case .podman(let name): "containers-storage:\(Self.withDefaultTag(name))"
        case .docker(let name): "docker-daemon:\(Self.withDefaultTag(name))"
        }
    }

    /// As the user writes it (and as the snapshot manifest records it).
    public var description: String {
        switch self {
        case .ociLayout(let path, let tag): "oci:\(path)" + (tag.map { ":\($0)" } ?? "")
        case .podman(let name): "podman:\(name)"
        case .docker(let name): "docker:\(name)"
        }
    }
}
