import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Operations on a raw file descriptor kiln opened itself.
package enum Descriptor {
    /// Writes all of `bytes` to `descriptor`, again after a short write or `EINTR`; `path`
    /// names the file in the error.
    package static func writeAll(_ bytes: UnsafeRawBufferPointer, to descriptor: Int32, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw KilnError.systemCall("write", errno: errno, path)
            }
            offset += written
        }
    }
}
