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
        CgroupHierarchy.hierarchies().map { $0 + path }.filter(CgroupHierarchy.isDirectory)
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

/// The cgroup filesystem as mounted on the host: one hierarchy per v1 controller under
/// `/sys/fs/cgroup/<controller>`, or the single v2 hierarchy at `/sys/fs/cgroup`. The one place
/// that walks it.
package enum CgroupHierarchy {
    package static let mountPoint = "/sys/fs/cgroup"

    /// Whether the host runs cgroup v2 (one unified hierarchy).
    package static var isUnified: Bool { FileManager.default.fileExists(atPath: "\(mountPoint)/cgroup.controllers") }

    /// The root of every hierarchy: each v1 controller's directory, and the mount point itself
    /// (the v2 root, or nothing under v1, where paths below it do not exist).
    package static func hierarchies() -> [String] {
        let controllers = (try? FileManager.default.contentsOfDirectory(atPath: mountPoint)) ?? []
        return controllers.map { "\(mountPoint)/\($0)" }.filter(isDirectory) + [mountPoint]
    }

    /// The cgroups directly below `parent` (e.g. kiln's `/kiln`) in each hierarchy, as
    /// (hierarchy root, child name) pairs.
    package static func children(of parent: String) -> [(hierarchy: String, name: String)] {
        hierarchies().flatMap { root in
            ((try? FileManager.default.contentsOfDirectory(atPath: root + parent)) ?? [])
                .filter { isDirectory("\(root)\(parent)/\($0)") }
                .map { (root, $0) }
        }
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
}
