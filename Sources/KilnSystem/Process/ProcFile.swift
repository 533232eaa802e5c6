import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reads a file of /proc or a cgroup filesystem whole. These files say their size is 0 and are
/// generated a page at a time, and Foundation's `String(contentsOfFile:)` stops after the first
/// read: it returned 4,050 of the 807,300 bytes of a `/proc/net/tcp` with 5,382 sockets (27
/// lines), so the preflight missed a service's connection to its database once a long warm-up
/// had left thousands of TIME_WAIT sockets ahead of it in the table.
public enum ProcFile {
    /// The whole text of `path`, read until end of file in reads of up to `chunk` bytes; nil if
    /// it cannot be opened or read.
    public static func text(_ path: String, chunk: Int = 64 * 1024) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
