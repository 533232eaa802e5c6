import Crypto
import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// A 256-bit key that snapshots are encrypted with at rest (`kiln bake --encrypt KEYFILE`).
///
/// A key file holds exactly 32 random bytes, or the same as 64 hex digits (optionally followed
/// by a newline), and must be private to its owner (no group or other permission bits), as ssh
/// demands of a private key. The key itself is never written anywhere by kiln; manifests and
/// messages name it by its ``id``.
///
/// `@unchecked Sendable`: `SymmetricKey` is an immutable value (copy-on-write secure bytes) that
/// swift-crypto 3 has not marked Sendable.
public struct SnapshotKey: @unchecked Sendable {
    /// Identifies the key without revealing it: the first 16 hex digits of a domain-separated
    /// SHA-256 of the key.
    public let id: String
    /// Where the key was read from (for messages), e.g. `/etc/kiln/hello.key`.
    public let source: String
    let key: SymmetricKey

    static let byteCount = 32
    static let makeOne = "head -c 32 /dev/urandom > KEYFILE && chmod 600 KEYFILE (or: kiln keygen KEYFILE)"

    /// A key from its 32 bytes; `source` names it in messages.
    public init(bytes: some ContiguousBytes, source: String) throws {
        let count = bytes.withUnsafeBytes(\.count)
        guard count == Self.byteCount else {
            throw KilnError(.invalidArgument, "the key \(source) has \(count) bytes, a snapshot key has 32", hint: "make one with: \(Self.makeOne)")
        }
        // Almost certainly `head -c 32 /dev/zero` or an unfilled buffer: no secret at all.
        guard bytes.withUnsafeBytes({ $0.contains { $0 != 0 } }) else {
            throw KilnError(.invalidArgument, "the key \(source) is all zero bytes", hint: "make a random one with: \(Self.makeOne)")
        }
        self.key = SymmetricKey(data: bytes)
        self.source = source
        self.id = Self.id(of: key)
    }

    /// Reads a key file, refusing one that others may read or that does not hold exactly one key.
    public init(contentsOf path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let problem = errno == ENOENT ? "does not exist" : "cannot be read: \(errnoDescription(errno))"
            throw KilnError(.invalidArgument, "the key file \(path) \(problem)", hint: "make one with: \(Self.makeOne)")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw KilnError(.invalidArgument, "the key file \(path) is not a regular file", hint: "make one with: \(Self.makeOne)")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw KilnError(
                .invalidArgument, "the key file \(path) is open to group or other (mode \(String(mode, radix: 8))): a snapshot key must be private",
                hint: "chmod 600 \(path)")
        }
        // Larger than any valid key file: refuse before reading a stray multi-GB file into memory.
        guard info.st_size <= 256, let data = FileManager.default.contents(atPath: path) else {
            throw KilnError(
                .invalidArgument, "the key file \(path) is not a key (\(info.st_size) bytes; a key is 32 bytes, or 64 hex digits)",
                hint: "make one with: \(Self.makeOne)")
        }
        try self.init(fileContents: data, source: path)
    }

    /// Parses a key file's contents: 32 raw bytes, or 64 hex digits with at most one newline after.
    init(fileContents data: Data, source: String) throws {
        if data.count == Self.byteCount {
            try self.init(bytes: Array(data), source: source)
            return
        }
        var text = data
        if text.last == UInt8(ascii: "\n") { text.removeLast() }
        if text.last == UInt8(ascii: "\r") { text.removeLast() }
        guard text.count == 2 * Self.byteCount, let bytes = Self.bytes(fromHex: text) else {
            throw KilnError(
                .invalidArgument, "the key file \(source) is not a key (\(data.count) bytes; a key is 32 random bytes, or 64 hex digits)",
                hint: "make one with: \(Self.makeOne)")
        }
        try self.init(bytes: bytes, source: source)
    }

    /// `kiln keygen`: writes a new random key as 64 hex digits and a newline to a new file,
    /// mode 0600. Refuses to overwrite anything: replacing a key would make every snapshot
    /// baked with it unrestorable.
    public static func generate(at path: String) throws -> SnapshotKey {
        let key = SymmetricKey(size: .bits256)
        let hex = key.withUnsafeBytes { $0.hexDigits } + "\n"
        // O_EXCL: fails if the path exists (a symlink included), so nothing is ever replaced.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            if errno == EEXIST {
                throw KilnError(
                    .invalidArgument, "\(path) already exists; kiln keygen never overwrites a key",
                    hint: "choose another path, or remove the old file if no snapshot needs it")
            }
            throw KilnError.systemCall("open", errno: errno, path)
        }
        defer { close(fd) }
        // The umask may only remove bits; make sure it is exactly 0600 anyway.
        fchmod(fd, 0o600)
        let written = hex.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        guard written == hex.utf8.count, fsync(fd) == 0 else {
            let code = errno
            unlink(path)
            throw KilnError.systemCall("write", errno: code, path)
        }
        return try SnapshotKey(bytes: key.withUnsafeBytes { Array($0) }, source: path)
    }

    /// `SHA-256("kiln snapshot key id v1" || 0x00 || key)`, first 8 bytes in hex. The prefix keeps
    /// the id from equalling any other hash someone might publish of the same bytes.
    static func id(of key: SymmetricKey) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("kiln snapshot key id v1".utf8) + [0])
        key.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return hasher.finalize().prefix(8).hexDigits
    }

    static func bytes(fromHex text: some Collection<UInt8>) -> [UInt8]? {
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        guard text.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var iterator = text.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            guard let h = nibble(high), let l = nibble(low) else { return nil }
            bytes.append(h << 4 | l)
        }
        return bytes
    }
}

/// The keys a restoring command was given (`--key KEYFILE` or `--key NAME=KEYFILE`, repeatable):
/// which one decrypts a snapshot is decided by the key id its manifest records, so `kiln serve`
/// can hold the keys of many functions at once.
public struct SnapshotKeyring: Sendable {
    /// Keys for any snapshot.
    public var keys: [SnapshotKey]
    /// Keys for one snapshot (function) only, by its name.
    public var scoped: [String: SnapshotKey]

    public init(keys: [SnapshotKey] = [], scoped: [String: SnapshotKey] = [:]) {
        self.keys = keys
        self.scoped = scoped
    }

    /// Parses `--key` arguments: `KEYFILE` (any snapshot) or `NAME=KEYFILE` (snapshot NAME only)
    /// and reads each key file.
    public init(arguments: [String]) throws {
        self.init()
        for argument in arguments {
            if let equals = argument.firstIndex(of: "="), (try? SnapshotStore.validate(name: String(argument[..<equals]))) != nil,
                argument.index(after: equals) < argument.endIndex
            {
                let name = String(argument[..<equals])
                guard scoped[name] == nil else {
                    throw KilnError(
                        .invalidArgument, "--key gives snapshot '\(name)' two keys", hint: "give each snapshot one key: --key \(name)=KEYFILE")
                }
                scoped[name] = try SnapshotKey(contentsOf: String(argument[argument.index(after: equals)...]))
            } else {
                keys.append(try SnapshotKey(contentsOf: argument))
            }
        }
    }

    public var isEmpty: Bool { keys.isEmpty && scoped.isEmpty }

    /// The key that decrypts `manifest`'s images: nil for a plain snapshot. An encrypted one
    /// without a matching key is an error naming the key id it needs, checked before any
    /// decryption is attempted.
    public func key(for manifest: SnapshotManifest) throws -> SnapshotKey? {
        guard let encryption = manifest.encryption else { return nil }
        let candidates = scoped[manifest.name].map { [$0] } ?? keys
        if let match = candidates.first(where: { $0.id == encryption.keyID }) { return match }
        let name = manifest.name
        guard !candidates.isEmpty else {
            throw KilnError(
                .keyRequired, "snapshot '\(name)' is encrypted (with key \(encryption.keyID)) and no key was given",
                hint: "pass the key file it was baked with: --key KEYFILE (kiln serve: --key \(name)=KEYFILE)")
        }
        let given = candidates.map { "\($0.source) is key \($0.id)" }.joined(separator: ", ")
        throw KilnError(
            .keyMismatch, "snapshot '\(name)' was encrypted with key \(encryption.keyID); \(given)",
            hint: "pass the key file given to 'kiln bake --encrypt' when '\(name)' was baked (key ids are printed by kiln bake and kiln keygen)")
    }
}
