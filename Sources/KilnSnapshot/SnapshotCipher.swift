import Crypto
import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Encryption of snapshot image files at rest: AES-256-GCM over fixed-size chunks, so a page
/// image of hundreds of MB streams through a few MiB of memory.
///
/// The construction follows age's payload format (STREAM), with AES-GCM:
///
/// ```
/// header (32 bytes)   "KILNENC" | version 1 | cipher 1 (AES-256-GCM) | 3 zero bytes
///                     | chunk size (UInt32, big-endian) | file nonce (16 random bytes)
/// chunk 0...n-1       AES-256-GCM(chunk of `chunk size` plaintext bytes; the last may be shorter,
///                     even empty) followed by its 16-byte tag
/// ```
///
/// - Each file is sealed with its own key, `HKDF-SHA256(snapshot key, salt: file nonce)`: the
///   16 random bytes play the part of a per-file nonce prefix without its birthday bound (two
///   files collide only if their 128-bit nonces do), and the snapshot key itself never touches
///   AES.
/// - Chunk `i` has the GCM nonce `i` (11 bytes, big-endian) followed by a final-chunk flag byte.
/// - Every chunk's additional data is the header, `i`, the final flag, and the file's
///   ``Binding`` (snapshot name, bake id, path in the snapshot). So chunks cannot be reordered,
///   dropped or moved between files, the file cannot be cut at a chunk boundary (its new last
///   chunk was not sealed as final), the header cannot be altered, and a file cannot be renamed,
///   swapped with another or mixed in from another bake of the same key.
///
/// A file that fails any of this is a ``Failure``; the caller names the file.
public enum SnapshotCipher {
    /// The cipher's name in manifests.
    public static let name = "aes-256-gcm"
    /// 1 MiB: large enough that the 16-byte tags cost 0.0015% and the per-chunk calls are few,
    /// small enough to keep memory bounded.
    public static let defaultChunkSize = 1 << 20
    /// Chunk sizes a reader accepts (the header says which one a file uses).
    static let chunkSizes = 4096...(64 << 20)
    /// Encrypted image files end in this (`pages-1.img.enc`, `pages-1.img.zst.enc`).
    package static let suffix = ".enc"

    static let magic = Array("KILNENC".utf8)
    static let version: UInt8 = 1
    static let aes256GCM: UInt8 = 1
    static let headerSize = 32
    static let tagSize = 16
    static let fileKeyInfo = Array("kiln snapshot image v1".utf8)

    /// What a file is bound to: decrypting it as anything else fails.
    public struct Binding: Sendable, Equatable {
        public var snapshot: String
        /// Random id of one bake (``SnapshotEncryption/bakeID``).
        public var bake: String
        /// The file's path in the snapshot's image directory, as the manifest lists it.
        public var path: String

        public init(snapshot: String, bake: String, path: String) {
            self.snapshot = snapshot
            self.bake = bake
            self.path = path
        }

        /// Length-prefixed fields, so no two bindings share an encoding.
        var bytes: [UInt8] {
            [snapshot, bake, path].flatMap { field -> [UInt8] in
                let utf8 = Array(field.utf8)
                return bigEndianBytes(UInt64(utf8.count), count: 4) + utf8
            }
        }
    }

    /// Why a file did not decrypt.
    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// No kiln header: not an encrypted image file.
        case notEncrypted
        case unsupportedVersion(UInt8)
        case unsupportedCipher(UInt8)
        case invalidChunkSize(Int)
        /// The header says one chunk size, the manifest another.
        case chunkSizeMismatch(file: Int, manifest: Int)
        /// Too short to hold a header and one sealed chunk.
        case truncated(bytes: Int64)
        /// Chunk `chunk` (0-based) of `chunks` did not authenticate: altered, cut, reordered,
        /// from another file, or sealed with another key.
        case authenticationFailed(chunk: Int, chunks: Int)

        public var description: String {
            switch self {
            case .notEncrypted: "has no kiln encryption header"
            case .unsupportedVersion(let version): "has encryption format version \(version), this kiln reads version \(SnapshotCipher.version)"
            case .unsupportedCipher(let cipher): "names cipher \(cipher), this kiln knows only \(SnapshotCipher.aes256GCM) (\(SnapshotCipher.name))"
            case .invalidChunkSize(let size): "has an invalid chunk size (\(size) bytes)"
            case .chunkSizeMismatch(let file, let manifest): "has chunk size \(file), the manifest says \(manifest)"
            case .truncated(let bytes): "is truncated (\(bytes) bytes, too short for any encrypted file)"
            case .authenticationFailed(let chunk, let chunks): "failed authentication at chunk \(chunk + 1) of \(chunks)"
            }
        }
    }

    /// The size of `plaintextSize` bytes once encrypted: a header and a tag per chunk (an empty
    /// file is one empty chunk, so even it carries a tag that pins where it ends).
    public static func encryptedSize(ofPlaintext plaintextSize: Int64, chunkSize: Int = defaultChunkSize) -> Int64 {
        let chunks = max(1, (plaintextSize + Int64(chunkSize) - 1) / Int64(chunkSize))
        return Int64(headerSize) + plaintextSize + chunks * Int64(tagSize)
    }

    /// Encrypts `source` into a new file `destination` (created 0600; it must not exist).
    public static func encrypt(
        _ source: String, to destination: String, binding: Binding, key: SnapshotKey, chunkSize: Int = defaultChunkSize
    ) throws {
        precondition(chunkSizes.contains(chunkSize), "chunk size out of range")
        let input = try RawFile(reading: source)
        defer { input.close() }
        let output = try RawFile(creating: destination)
        var finished = false
        defer {
            output.close()
            if !finished { unlink(destination) }
        }
        // 16 bytes from BoringSSL's RAND_bytes, the same source as a key.
        let nonce = SymmetricKey(size: SymmetricKeySize(bitCount: 128)).withUnsafeBytes { Array($0) }
        let header = magic + [version, aes256GCM, 0, 0, 0] + bigEndianBytes(UInt64(chunkSize), count: 4) + nonce
        try output.write(header)
        let sealer = ChunkSealer(key: key, header: header, binding: binding)
        let size = try input.size()
        let chunks = Int(max(1, (size + Int64(chunkSize) - 1) / Int64(chunkSize)))
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        for index in 0..<chunks {
            let wanted = Int(min(Int64(chunkSize), size - Int64(index) * Int64(chunkSize)))
            let count = try input.read(into: &buffer, count: wanted)
            guard count == wanted else {
                throw KilnError(.systemCall, "\(source) shrank while it was being encrypted (read \(count) of \(wanted) bytes at chunk \(index + 1))")
            }
            let sealed = try sealer.seal(buffer[0..<count], index: index, final: index == chunks - 1)
            try output.write(sealed.ciphertext)
            try output.write(sealed.tag)
        }
        try output.sync()
        finished = true
    }

    /// Decrypts `source` into a new file `destination` (created 0600; it must not exist). A chunk
    /// that fails authentication stops it with a ``Failure`` and removes `destination`, so no
    /// unauthenticated plaintext is ever left behind.
    public static func decrypt(
        _ source: String, to destination: String, binding: Binding, key: SnapshotKey, expectedChunkSize: Int? = nil
    ) throws {
        let input = try RawFile(reading: source)
        defer { input.close() }
        let size = try input.size()
        guard size >= Int64(headerSize + tagSize) else {
            if size >= Int64(magic.count), try input.read(count: magic.count) != magic { throw Failure.notEncrypted }
            throw Failure.truncated(bytes: size)
        }
        let header = try input.read(count: headerSize)
        guard Array(header[0..<magic.count]) == magic else { throw Failure.notEncrypted }
        guard header[7] == version else { throw Failure.unsupportedVersion(header[7]) }
        guard header[8] == aes256GCM else { throw Failure.unsupportedCipher(header[8]) }
        let chunkSize = header[12..<16].reduce(0) { $0 << 8 | Int($1) }
        guard chunkSizes.contains(chunkSize), header[9..<12].allSatisfy({ $0 == 0 }) else { throw Failure.invalidChunkSize(chunkSize) }
        if let expectedChunkSize, expectedChunkSize != chunkSize {
            throw Failure.chunkSizeMismatch(file: chunkSize, manifest: expectedChunkSize)
        }
        // Chunk boundaries follow from the file's size alone: every chunk but the last is full.
        let body = size - Int64(headerSize)
        let sealedChunk = Int64(chunkSize + tagSize)
        let chunks = Int((body + sealedChunk - 1) / sealedChunk)
        let lastLength = body - Int64(chunks - 1) * sealedChunk
        let output = try RawFile(creating: destination)
        var finished = false
        defer {
            output.close()
            if !finished { unlink(destination) }
        }
        let sealer = ChunkSealer(key: key, header: header, binding: binding)
        var buffer = [UInt8](repeating: 0, count: chunkSize + tagSize)
        for index in 0..<chunks {
            let final = index == chunks - 1
            let wanted = final ? Int(lastLength) : Int(sealedChunk)
            let count = try input.read(into: &buffer, count: wanted)
            // A last chunk shorter than a tag cannot be one: the file was cut inside a tag.
            guard count == wanted, count >= tagSize else { throw Failure.authenticationFailed(chunk: index, chunks: chunks) }
            let plaintext = try sealer.open(buffer[0..<count], index: index, final: final, chunks: chunks)
            try output.write(plaintext)
        }
        finished = true
    }

    /// Seals and opens the chunks of one file.
    struct ChunkSealer {
        let fileKey: SymmetricKey
        let fixedData: [UInt8]
        let header: [UInt8]

        init(key: SnapshotKey, header: [UInt8], binding: Binding) {
            let fileNonce = header[(headerSize - 16)..<headerSize]
            fileKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: key.key, salt: fileNonce, info: fileKeyInfo, outputByteCount: 32)
            self.header = header
            fixedData = binding.bytes
        }

        func nonce(index: Int, final: Bool) throws -> AES.GCM.Nonce {
            try AES.GCM.Nonce(data: bigEndianBytes(UInt64(index), count: 11) + [final ? 1 : 0])
        }

        func associatedData(index: Int, final: Bool) -> [UInt8] {
            header + bigEndianBytes(UInt64(index), count: 8) + [final ? 1 : 0] + fixedData
        }

        func seal(_ chunk: ArraySlice<UInt8>, index: Int, final: Bool) throws -> AES.GCM.SealedBox {
            try AES.GCM.seal(
                chunk, using: fileKey, nonce: nonce(index: index, final: final), authenticating: associatedData(index: index, final: final))
        }

        func open(_ sealed: ArraySlice<UInt8>, index: Int, final: Bool, chunks: Int) throws -> Data {
            do {
                let box = try AES.GCM.SealedBox(
                    nonce: nonce(index: index, final: final), ciphertext: sealed.dropLast(tagSize), tag: sealed.suffix(tagSize))
                return try AES.GCM.open(box, using: fileKey, authenticating: associatedData(index: index, final: final))
            } catch {
                throw Failure.authenticationFailed(chunk: index, chunks: chunks)
            }
        }
    }
}

/// `value` as `count` big-endian bytes (high bytes beyond 8 are zero).
func bigEndianBytes(_ value: UInt64, count: Int) -> [UInt8] {
    (0..<count).map { position in
        let shift = (count - 1 - position) * 8
        return shift >= 64 ? 0 : UInt8(truncatingIfNeeded: value >> UInt64(shift))
    }
}

/// A file descriptor with the read/write loops the cipher needs (EINTR, short reads and writes).
struct RawFile {
    let fd: Int32
    let path: String

    init(reading path: String) throws {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw KilnError.systemCall("open", errno: errno, path) }
        self.path = path
    }

    /// Creates a new private file; an existing one (or a symlink) at `path` is an error.
    init(creating path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KilnError.systemCall("create", errno: errno, path) }
        self.path = path
    }

    func close() { _ = Glibc.close(fd) }

    func size() throws -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw KilnError.systemCall("fstat", errno: errno, path) }
        return Int64(info.st_size)
    }

    /// Reads until `count` bytes or the end of the file; returns how many were read.
    func read(into buffer: inout [UInt8], count: Int) throws -> Int {
        var done = 0
        try buffer.withUnsafeMutableBytes { bytes in
            while done < count {
                let n = Glibc.read(fd, bytes.baseAddress! + done, count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw KilnError.systemCall("read", errno: errno, path)
                }
                if n == 0 { break }
                done += n
            }
        }
        return done
    }

    func read(count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let n = try read(into: &buffer, count: count)
        return Array(buffer[0..<n])
    }

    func write(_ data: some DataProtocol) throws {
        for region in data.regions {
            try region.withUnsafeBytes { try Descriptor.writeAll($0, to: fd, path: path) }
        }
    }

    func sync() throws {
        guard fsync(fd) == 0 else { throw KilnError.systemCall("fsync", errno: errno, path) }
    }
}
