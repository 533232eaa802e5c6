import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The files kiln writes for running sandboxes and its own bookkeeping (OCI bundles, instance
/// records, the agent's control files, what a snapshot's copies write first, CNI results),
/// written without `fsync`.
///
/// swift-foundation's `Data.write(to:)` and `String.write(toFile:)` call `fsync` on every file
/// they write, atomically or not: 0.3-1 ms each where the state directory is on a disk
/// filesystem (this VM's `/run` is ext4), and a restore of the Spring sample wrote seven such
/// files before its copy answered. These files describe processes that end with the machine, and
/// `kiln gc` drops the records of instances that are gone; waiting for them to reach the disk
/// buys nothing. What must outlive a crash (the store's manifests, keys, signatures, exports)
/// keeps its `fsync`.
public enum RuntimeFile {
    /// Writes `data` to `path`, creating it (`permissions`, less the umask, as Foundation does)
    /// or truncating it in place: a bind mount of the file keeps seeing it.
    public static func write(_ data: Data, to path: String, permissions: mode_t = 0o666) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, permissions)
        guard descriptor >= 0 else { throw KilnError.systemCall("open", errno: errno, path) }
        defer { close(descriptor) }
        try data.withUnsafeBytes { try Descriptor.writeAll($0, to: descriptor, path: path) }
    }

    /// Writes `text` (UTF-8) to `path`, as the `Data` variant does.
    public static func write(_ text: String, to path: String, permissions: mode_t = 0o666) throws {
        try write(Data(text.utf8), to: path, permissions: permissions)
    }

    /// Replaces `path` with `data` whole: written beside it under a hidden temporary name, then
    /// renamed over it, so a reader finds the old file or the new one, never a part of either.
    /// The temporary file is removed if anything fails.
    public static func replace(_ path: String, with data: Data, permissions: mode_t = 0o666) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temporary = "\(directory.isEmpty ? "." : directory)/.\(name).tmp-\(getpid())-\(UInt32.random(in: .min ... .max))"
        do {
            try write(data, to: temporary, permissions: permissions)
            guard rename(temporary, path) == 0 else { throw KilnError.systemCall("rename", errno: errno, "\(temporary) -> \(path)") }
        } catch {
            unlink(temporary)
            throw error
        }
    }
}
