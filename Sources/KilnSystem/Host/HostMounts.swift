import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Mounts in kiln's own mount namespace, for cleaning up after a runc that died half-way: `runc
/// restore` bind-mounts the container's root at `<runc state>/<id>/criu-root` for CRIU and
/// unmounts it when it is done, which a killed runc never is.
package enum HostMounts {
    /// Mount points of this process's mount namespace (octal escapes decoded).
    package static func mountPoints() -> [String] {
        MountInfoLine.parse(stableMountTable()).map(\.mountPoint)
    }

    /// Lazily unmounts everything mounted at or below each of `directories`, deepest first;
    /// returns the mount points it unmounted.
    @discardableResult
    package static func unmountAll(under directories: [String]) -> [String] {
        let prefixes = directories.map { $0.hasSuffix("/") ? $0 : $0 + "/" }
        let doomed = mountPoints().filter { point in prefixes.contains { (point + "/").hasPrefix($0) } }
        return doomed.sorted { $0.count > $1.count }.filter { umount2($0, Int32(MNT_DETACH)) == 0 }
    }

    /// The calling thread's mountinfo (thread-self: the namespace umount2 acts in), read until two
    /// reads agree. A read that spans several read(2) calls while another thread mounts or
    /// unmounts can skip entries (the kernel resumes the table by position), and a teardown that
    /// misses a mount leaves it behind.
    static func stableMountTable(attempts: Int = 5) -> String {
        var previous: String?
        for _ in 0..<attempts {
            // In as few read(2) calls as its size allows: one, for a table that fits in 1 MiB.
            let table = ProcFile.text("/proc/thread-self/mountinfo", chunk: 1 << 20) ?? ""
            if table == previous { return table }
            previous = table
        }
        return previous ?? ""
    }

    /// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
    package static func decode(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
