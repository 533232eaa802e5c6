/// One line of a `mountinfo` file, the fields kiln reads: `ID PARENT MAJ:MIN ROOT MOUNTPOINT
/// OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS` (proc(5)). The optional fields vary in
/// number, so the type and what follows are found after the `-` separator; octal escapes in the
/// mount point (`\040` for a space) are decoded.
package struct MountInfoLine: Equatable, Sendable {
    /// Where it is mounted.
    package var mountPoint: String
    /// The filesystem type (`ext4`, `tmpfs`, `cgroup2`...).
    package var type: String
    /// The superblock's options (`rw,nsdelegate`, a v1 cgroup hierarchy's controllers...).
    package var superOptions: [String]

    /// Parses one line; nil for one without the fields and the separator every line has.
    package init?(_ line: Substring) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let separator = fields.firstIndex(of: "-"), separator >= 6, fields.count >= separator + 4 else {
            return nil
        }
        mountPoint = HostMounts.decode(String(fields[4]))
        type = String(fields[separator + 1])
        superOptions = fields[separator + 3].split(separator: ",").map(String.init)
    }

    /// Every well-formed line of a `mountinfo` text.
    package static func parse(_ text: String) -> [MountInfoLine] {
        text.split(separator: "\n").compactMap(MountInfoLine.init)
    }

    /// The mount that holds the absolute, symlink-free `path`: the one whose mount point is its
    /// longest leading run of whole path components; of two at the same point, the later (a
    /// mount hides what was mounted there before it, and mountinfo lists in mount order).
    package static func holding(_ path: String, in mounts: [MountInfoLine]) -> MountInfoLine? {
        func covers(_ point: String) -> Bool {
            point == "/" || path == point || path.hasPrefix(point.hasSuffix("/") ? point : point + "/")
        }
        var found: MountInfoLine?
        for mount in mounts where covers(mount.mountPoint) && mount.mountPoint.count >= (found?.mountPoint.count ?? 0) {
            found = mount
        }
        return found
    }
}
