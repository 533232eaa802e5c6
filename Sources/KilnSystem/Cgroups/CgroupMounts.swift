import Foundation

/// One cgroup filesystem mounted on the host, as `/proc/self/mountinfo` lists it.
package struct CgroupMount: Equatable, Sendable {
    /// Where it is mounted.
    package var path: String
    /// `cgroup` (a v1 hierarchy) or `cgroup2`.
    package var type: String
    /// Its superblock options (`rw,nsdelegate,favordynmods`, or a v1 hierarchy's controllers).
    package var superOptions: [String]

    /// Whether the mount has `favordynmods`: moving a task between cgroups then no longer waits
    /// for an RCU grace period. The lock every such move takes (`cgroup_threadgroup_rwsem`) is
    /// shared by all hierarchies, so one mount with it is enough for all of them.
    package var favorsDynamicModifications: Bool { superOptions.contains("favordynmods") }

    /// The cgroup mounts in a `mountinfo` text (``MountInfoLine``).
    package static func parse(mountInfo text: String) -> [CgroupMount] {
        MountInfoLine.parse(text).filter { $0.type == "cgroup" || $0.type == "cgroup2" }.map {
            CgroupMount(path: $0.mountPoint, type: $0.type, superOptions: $0.superOptions)
        }
    }

    /// The host's cgroup mounts (empty when `/proc/self/mountinfo` cannot be read).
    package static func current() -> [CgroupMount] {
        parse(mountInfo: ProcFile.text("/proc/self/mountinfo") ?? "")
    }
}
