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

    /// The cgroup mounts in a `mountinfo` text: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
    /// [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS` per line (proc(5)); octal escapes in the mount
    /// point (`\040` for a space) are decoded.
    package static func parse(mountInfo text: String) -> [CgroupMount] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 7, let separator = fields.firstIndex(of: "-"), separator >= 6, fields.count >= separator + 4 else {
                return nil
            }
            let type = String(fields[separator + 1])
            guard type == "cgroup" || type == "cgroup2" else { return nil }
            return CgroupMount(
                path: HostMounts.decode(String(fields[4])), type: type, superOptions: fields[separator + 3].split(separator: ",").map(String.init))
        }
    }

    /// The host's cgroup mounts (empty when `/proc/self/mountinfo` cannot be read).
    package static func current() -> [CgroupMount] {
        parse(mountInfo: ProcFile.text("/proc/self/mountinfo") ?? "")
    }
}
