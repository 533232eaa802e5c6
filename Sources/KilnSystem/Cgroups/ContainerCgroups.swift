import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One container's cgroups, seen from the host: the last line of defence of a tear-down.
///
/// `runc delete` removes a container's cgroups, but not when runc no longer knows the container
/// (a `runc restore` killed half-way may leave CRIU's restored processes running in them, with no
/// runc state), nor while a killed task is still exiting, nor while a checkpoint killed half-way
/// left the tasks frozen. Whatever runs in the cgroup after runc is done with it has no owner, so
/// it is killed; then the (empty) cgroups are removed.
package struct ContainerCgroups {
    /// The path under each controller's root, e.g. `/kiln/hello-3fa9c1`.
    package var path: String

    package init(path: String) { self.path = path }

    /// Every directory of this cgroup that exists, one per v1 controller (or the v2 one).
    package var existingDirectories: [String] {
        let controllers = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []
        return (controllers.map { "/sys/fs/cgroup/\($0)\(path)" } + ["/sys/fs/cgroup\(path)"]).filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0, isDirectory: &isDirectory) && isDirectory.boolValue
        }
    }

    /// Kills every task left in the cgroup and removes it; returns what could not be removed
    /// within `timeout` (empty when all is gone).
    @discardableResult
    package func killAndRemove(timeout: Duration = .seconds(5)) async -> [String] {
        guard !existingDirectories.isEmpty else { return [] }
        // A frozen task cannot die: thaw first (cgroup v1 freezer; v2's cgroup.kill needs no thaw).
        for directory in existingDirectories where directory.hasPrefix("/sys/fs/cgroup/freezer/") {
            try? "THAWED".write(toFile: "\(directory)/freezer.state", atomically: false, encoding: .utf8)
        }
        let deadline = ContinuousClock.now + timeout
        while true {
            for pid in ProcessInspector.pids(inCgroup: path) { kill(pid, SIGKILL) }
            for directory in existingDirectories { rmdir(directory) }
            let left = existingDirectories
            if left.isEmpty || ContinuousClock.now >= deadline { return left }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
