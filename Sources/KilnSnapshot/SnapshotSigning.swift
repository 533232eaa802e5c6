import Crypto
import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// An Ed25519 key that signs pushed snapshots (`kiln keygen --signing`, `kiln push --sign`).
///
/// The private key file holds the 32-byte seed as 64 hex digits and a newline, mode 0600; the
/// public key sits beside it in `PATH.pub` (64 hex digits), to hand to whoever pulls
/// (`kiln pull --verify PATH.pub`). Keys are named by their ``SnapshotVerifyingKey/id``.
///
/// `@unchecked Sendable`: swift-crypto 3's `Curve25519.Signing.PrivateKey` is an immutable value
/// it has not marked Sendable.
public struct SnapshotSigningKey: @unchecked Sendable {
    public let source: String
    let key: Curve25519.Signing.PrivateKey

    public var publicKey: SnapshotVerifyingKey { SnapshotVerifyingKey(key: key.publicKey, source: "\(source) (its public key)") }
    public var id: String { publicKey.id }

    /// Reads a private key file, refusing one that group or others may read.
    public init(contentsOf path: String) throws {
        let data = try Self.readPrivate(path)
        guard let bytes = SnapshotKey.hexKey(data), let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: bytes) else {
            throw KilnError(
                .invalidArgument, "\(path) is not a kiln signing key (64 hex digits)", hint: "make one with: kiln keygen --signing KEYFILE")
        }
        self.key = key
        self.source = path
    }

    /// Writes a new key pair: `path` (private, 0600) and `path.pub`. Overwrites nothing.
    public static func generate(at path: String) throws -> SnapshotSigningKey {
        let key = Curve25519.Signing.PrivateKey()
        let publicPath = "\(path).pub"
        guard !FileManager.default.fileExists(atPath: publicPath) else {
            throw KilnError(.invalidArgument, "\(publicPath) already exists; kiln keygen never overwrites a key", hint: "choose another path")
        }
        try SnapshotKey.writeNew(key.rawRepresentation.hexDigits + "\n", to: path, mode: 0o600)
        do {
            try SnapshotKey.writeNew(key.publicKey.rawRepresentation.hexDigits + "\n", to: publicPath, mode: 0o644)
        } catch {
            unlink(path)
            throw error
        }
        return try SnapshotSigningKey(contentsOf: path)
    }

    /// Signs a pushed snapshot's OCI manifest digest.
    public func sign(manifestDigest: String) throws -> SnapshotSignature {
        let signature = try key.signature(for: SnapshotSignature.message(manifestDigest: manifestDigest))
        return SnapshotSignature(manifestDigest: manifestDigest, keyID: id, signature: signature.base64EncodedString())
    }

    static func readPrivate(_ path: String) throws -> Data {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw KilnError(
                .invalidArgument, "the signing key \(path) does not exist or is not a file", hint: "make one with: kiln keygen --signing KEYFILE")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw KilnError(
                .invalidArgument, "the signing key \(path) is open to group or other (mode \(String(info.st_mode & 0o777, radix: 8)))",
                hint: "chmod 600 \(path)")
        }
        guard info.st_size <= 256, let data = FileManager.default.contents(atPath: path) else {
            throw KilnError(.invalidArgument, "\(path) is not a kiln signing key", hint: "make one with: kiln keygen --signing KEYFILE")
        }
        return data
    }
}

/// The public half of a ``SnapshotSigningKey``: what `kiln pull --verify` trusts.
public struct SnapshotVerifyingKey: @unchecked Sendable {
    /// The first 16 hex digits of the SHA-256 of the 32-byte public key.
    public let id: String
    public let source: String
    let key: Curve25519.Signing.PublicKey

    init(key: Curve25519.Signing.PublicKey, source: String) {
        self.key = key
        self.source = source
        self.id = String(SHA256.hash(data: key.rawRepresentation).hexDigits.prefix(16))
    }

    /// Reads a public key file (64 hex digits), e.g. `KEYFILE.pub` from `kiln keygen --signing`.
    public init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 256 else {
            throw KilnError(.invalidArgument, "the public key \(path) cannot be read", hint: "give the .pub file kiln keygen --signing wrote")
        }
        guard let bytes = SnapshotKey.hexKey(data), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: bytes) else {
            throw KilnError(
                .invalidArgument, "\(path) is not a kiln public key (64 hex digits)", hint: "give the .pub file kiln keygen --signing wrote")
        }
        self.init(key: key, source: path)
    }

    /// Whether `signature` is this key's over `manifestDigest`.
    public func isValid(_ signature: SnapshotSignature, manifestDigest: String) -> Bool {
        guard signature.manifestDigest == manifestDigest, let bytes = Data(base64Encoded: signature.signature) else { return false }
        return key.isValidSignature(bytes, for: SnapshotSignature.message(manifestDigest: manifestDigest))
    }
}

/// What `kiln push --sign` stores beside a snapshot in the registry (the config of an artifact
/// tagged `sha256-<hex>.sig`, as cosign names its signatures).
public struct SnapshotSignature: Codable, Sendable, Equatable {
    public var format = 1
    public var algorithm = "ed25519"
    /// The OCI manifest digest signed, `sha256:<hex>`.
    public var manifestDigest: String
    /// ``SnapshotVerifyingKey/id`` of the signer.
    public var keyID: String
    /// Base64 of the 64-byte Ed25519 signature.
    public var signature: String

    public init(manifestDigest: String, keyID: String, signature: String) {
        self.manifestDigest = manifestDigest
        self.keyID = keyID
        self.signature = signature
    }

    /// The bytes signed: a domain-separation prefix and the digest, so a kiln signature cannot be
    /// taken for a signature over anything else the same key might sign.
    static func message(manifestDigest: String) -> Data {
        Data("kiln snapshot signature v1\0\(manifestDigest)".utf8)
    }

    /// Checks `signatures` (those found beside the snapshot) against the trusted keys: nil when
    /// one trusted key signed `manifestDigest`, else the error naming what was found and trusted.
    public static func refusal(
        of signatures: [SnapshotSignature], manifestDigest: String, trusted: [SnapshotVerifyingKey], reference: String
    ) -> KilnError? {
        let trustedIDs = trusted.map(\.id).joined(separator: ", ")
        guard !signatures.isEmpty else {
            return KilnError(
                .signatureInvalid, "\(reference) (\(manifestDigest)) is not signed; --verify trusts only key \(trustedIDs)",
                hint: "push it with 'kiln push --sign KEYFILE', or pull without --verify if you trust the registry")
        }
        for signature in signatures {
            if trusted.contains(where: { $0.isValid(signature, manifestDigest: manifestDigest) }) { return nil }
        }
        let found = signatures.map { signature in
            trusted.contains(where: { $0.id == signature.keyID }) ? "key \(signature.keyID) (invalid signature)" : "key \(signature.keyID)"
        }
        return KilnError(
            .signatureInvalid,
            "\(reference) (\(manifestDigest)) is signed by \(found.joined(separator: ", ")), not by a trusted key (\(trustedIDs)); refusing it",
            hint: "verify with the public key of the signer, if you trust it, or ask for a snapshot signed with key \(trustedIDs)")
    }
}

extension SnapshotKey {
    /// 32 bytes from 64 hex digits with at most one trailing newline.
    static func hexKey(_ data: Data) -> [UInt8]? {
        var text = data
        while text.last == UInt8(ascii: "\n") || text.last == UInt8(ascii: "\r") { text.removeLast() }
        guard text.count == 64 else { return nil }
        return bytes(fromHex: text)
    }

    /// Writes `contents` to a new file (O_EXCL: nothing is ever replaced) with exactly `mode`.
    static func writeNew(_ contents: String, to path: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else {
            if errno == EEXIST {
                throw KilnError(.invalidArgument, "\(path) already exists; kiln keygen never overwrites a key", hint: "choose another path")
            }
            throw KilnError.systemCall("open", errno: errno, path)
        }
        defer { close(fd) }
        fchmod(fd, mode)
        let written = contents.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        guard written == contents.utf8.count, fsync(fd) == 0 else {
            let code = errno
            unlink(path)
            throw KilnError.systemCall("write", errno: code, path)
        }
    }
}
