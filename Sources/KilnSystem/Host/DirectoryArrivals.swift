import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Tells a waiter when a file is created in, or renamed into, one directory (inotify), so that a
/// wait for a file another process writes ends when it arrives rather than at the next poll.
///
/// Create it *before* checking whether the file is already there: anything that arrives after
/// the watch exists is reported, so check, wait, check again never misses one.
public final class DirectoryArrivals: @unchecked Sendable {
    // Only read after init; the descriptor is closed in deinit, when no wait can be running
    // (each wait holds a reference to self).
    private let descriptor: Int32
    public let directory: String

    /// Watches `directory`; nil when inotify is not available (the caller polls instead).
    public init?(watching directory: String) {
        let descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else { return nil }
        guard inotify_add_watch(descriptor, directory, UInt32(IN_CREATE | IN_MOVED_TO)) >= 0 else {
            close(descriptor)
            return nil
        }
        self.descriptor = descriptor
        self.directory = directory
    }

    deinit {
        // Closing an inotify instance waits for the kernel's SRCU grace period: 10-20 ms seen
        // here, on the restore path of every copy when it was closed in place.
        let descriptor = descriptor
        DispatchQueue.global(qos: .background).async { close(descriptor) }
    }

    /// Waits until something arrives or `timeout` passes: true when something arrived (which
    /// may be a file the caller does not wait for). The blocking wait runs on a thread of its
    /// own, neither on the caller's executor nor on a dispatch worker.
    public func next(timeout: Duration) async -> Bool {
        await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: self.waitBlocking(timeout: timeout))
            }
            thread.start()
        }
    }

    /// The blocking form of ``next(timeout:)``.
    public func waitBlocking(timeout: Duration) -> Bool {
        var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(clamping: Int64(max(0, timeout.milliseconds)))
        var ready: Int32
        repeat {
            ready = poll(&entry, 1, milliseconds)
        } while ready < 0 && errno == EINTR
        guard ready > 0 else { return false }
        // Drain every queued event: the caller looks at the directory itself.
        var buffer = [UInt8](repeating: 0, count: 4096)
        while buffer.withUnsafeMutableBytes({ read(descriptor, $0.baseAddress, $0.count) }) > 0 {}
        return true
    }
}
