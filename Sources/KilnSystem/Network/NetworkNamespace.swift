import CKilnShims
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A network namespace pinned at a path, like `ip netns add`, with `lo` up.
///
/// kiln creates each container's network namespace itself and hands runc its path. runc then
/// checkpoints it as external (no iptables dump, no network lock), and at restore each copy joins
/// a fresh namespace kiln made for it, already with `lo` up.
public enum NetworkNamespace {
    public static func create(at path: String) throws {
        let fileManager = FileManager.default
        let directory = (path as NSString).deletingLastPathComponent
        try? fileManager.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // The pin is created in place: FileManager.createFile writes a temporary file beside it and renames it, and
        // whoever lists the directory meanwhile sees that temporary name (issue 17, item 7).
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw KilnError.systemCall("open(O_CREAT|O_EXCL)", errno: errno, "network namespace pin file \(path)")
        }
        close(descriptor)
        guard kiln_create_netns(path) == 0 else {
            let code = errno
            try? fileManager.removeItem(atPath: path)
            throw KilnError.systemCall("unshare(CLONE_NEWNET)", errno: code, "network namespace \(path)")
        }
    }

    /// Unpins and deletes the namespace; the kernel frees it once no process is left in it.
    public static func remove(at path: String) {
        _ = umount2(path, Int32(MNT_DETACH))
        unlink(path)
    }

    /// Whether `path` is a pinned namespace (an nsfs mount), as opposed to a leftover file.
    public static func isPinned(_ path: String) -> Bool {
        kiln_is_nsfs(path) == 1
    }

    /// A listening TCP socket in a namespace: its local address (dotted IPv4, or IPv6 text) and port.
    public struct TCPListener: Sendable, Equatable {
        public var address: String
        public var port: Int
        /// Whether the socket is IPv6 (an IPv4-mapped address is shown as its IPv4 text).
        public var isIPv6: Bool
    }

    /// The listening TCP sockets of the namespace at `path` (a pin or `/proc/PID/ns/net`), from
    /// the kernel's sock_diag with only the LISTEN state asked for: fast on any host, where
    /// `/proc/PID/net/tcp` walks the whole established hash first (4-15 ms measured here, on the
    /// restore path of every networked copy).
    public static func tcpListeners(at path: String) throws -> [TCPListener] {
        var capacity = 64
        while true {
            var buffer = [kiln_tcp_listener](repeating: kiln_tcp_listener(), count: capacity)
            let count = Int(kiln_tcp_listeners(path, &buffer, Int32(capacity)))
            guard count >= 0 else { throw KilnError.systemCall("sock_diag dump of listening sockets", errno: errno, path) }
            guard count <= capacity else {
                capacity = count + 16  // sockets came and went between the two families' dumps
                continue
            }
            return buffer.prefix(count).map(Self.listener)
        }
    }

    static func listener(_ raw: kiln_tcp_listener) -> TCPListener {
        let bytes = withUnsafeBytes(of: raw.address) { Array($0) }
        if raw.family == AF_INET {
            return TCPListener(address: bytes.prefix(4).map(String.init).joined(separator: "."), port: Int(raw.port), isIPv6: false)
        }
        // ::ffff:a.b.c.d and :: are what a JVM's dual-stack sockets show; name them as IPv4.
        if bytes.prefix(10).allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return TCPListener(address: bytes.suffix(4).map(String.init).joined(separator: "."), port: Int(raw.port), isIPv6: true)
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = bytes.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &text, socklen_t(text.count)) }
        return TCPListener(address: String(cString: text), port: Int(raw.port), isIPv6: true)
    }
}
