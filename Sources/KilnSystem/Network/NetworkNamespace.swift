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
}
