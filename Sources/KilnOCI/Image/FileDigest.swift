import Crypto
import Foundation
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// SHA-256 of files, streamed in large chunks.
package enum FileDigest {
    package static func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).hexDigits
    }

    package static func sha256(ofFile path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw KilnError.systemCall("open", errno: errno, path) }
        defer { close(fd) }
        var hasher = SHA256()
        let chunkSize = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(fd, buffer.baseAddress, chunkSize)
            if count < 0 {
                if errno == EINTR { continue }
                throw KilnError.systemCall("read", errno: errno, path)
            }
            if count == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
        return hasher.finalize().hexDigits
    }

    /// SHA-256 of a directory tree's listing, not its contents: for every entry below `root`
    /// (sorted, symlinks not followed) its relative path, type, permission bits, owner, size,
    /// modification time and link target. Cheap enough to check before every restore (a stat per
    /// entry), it catches files added, removed, replaced, truncated or rewritten by anything that
    /// does not also forge their mtime; it is not a content digest.
    package static func listingSHA256(of root: String) throws -> String {
        guard let enumerator = FileManager.default.enumerator(atPath: root) else {
            throw KilnError(.systemCall, "cannot list \(root)")
        }
        var paths: [String] = []
        while let path = enumerator.nextObject() as? String { paths.append(path) }
        var hasher = SHA256()
        for path in paths.sorted() {
            var info = stat()
            guard lstat("\(root)/\(path)", &info) == 0 else { throw KilnError.systemCall("lstat", errno: errno, "\(root)/\(path)") }
            let type = info.st_mode & S_IFMT
            var line = "\(path)\u{0}\(type)\u{0}\(info.st_mode & 0o7777)\u{0}\(info.st_uid):\(info.st_gid)\u{0}"
            if type == S_IFREG || type == S_IFLNK { line += "\(info.st_size)\u{0}\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)" }
            if type == S_IFLNK { line += "\u{0}" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(root)/\(path)")) ?? "") }
            hasher.update(data: Data((line + "\n").utf8))
        }
        return hasher.finalize().hexDigits
    }
}
