import Foundation
import Testing

@testable import KilnSystem

/// The host's cgroup mounts as `/proc/self/mountinfo` lists them (`kiln doctor`'s "cgroup moves").
@Suite struct CgroupMountTests {
    static let hybrid = """
        24 31 0:22 / /sys fs rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
        26 24 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
        27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate,favordynmods
        30 26 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
        31 26 0:29 / /sys/fs/cgroup/my\\040hierarchy rw,relatime - cgroup none rw,name=test
        """

    @Test func cgroupMountsAreFoundWithTheirTypeAndSuperblockOptions() {
        let mounts = CgroupMount.parse(mountInfo: Self.hybrid)
        #expect(mounts.map(\.path) == ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/my hierarchy"])
        #expect(mounts.map(\.type) == ["cgroup2", "cgroup", "cgroup"])
        #expect(mounts[0].superOptions == ["rw", "nsdelegate", "favordynmods"])
        #expect(mounts.map(\.favorsDynamicModifications) == [true, false, false])
    }

    @Test func withoutTheOptionNoMountFavorsMoves() {
        let mounts = CgroupMount.parse(mountInfo: Self.hybrid.replacingOccurrences(of: ",favordynmods", with: ""))
        #expect(mounts.count == 3)
        #expect(mounts.allSatisfy { !$0.favorsDynamicModifications })
        // Only superblock options count: the word elsewhere in a line is no option.
        let elsewhere = "40 26 0:30 / /favordynmods rw,relatime - cgroup2 cgroup2 rw"
        #expect(CgroupMount.parse(mountInfo: elsewhere).map(\.favorsDynamicModifications) == [false])
    }

    @Test func malformedLinesAreSkipped() {
        #expect(CgroupMount.parse(mountInfo: "27 26 0:25 / /x rw - cgroup2").isEmpty, "no source or options after the type")
        #expect(CgroupMount.parse(mountInfo: "garbage\n\n- cgroup2 cgroup2 rw").isEmpty)
    }
}

/// A `mountinfo` line as the cgroup check, the checkpoint preflight and the teardown of runc's
/// leftover mounts read it.
@Suite struct MountInfoLineTests {
    @Test func theTypeAndOptionsFollowTheSeparatorHoweverManyOptionalFieldsComeFirst() throws {
        let none = try #require(MountInfoLine("600 500 0:50 / / ro,relatime - ext4 /dev/vda1 rw,errors=remount-ro"))
        #expect(none.mountPoint == "/")
        #expect(none.type == "ext4")
        #expect(none.superOptions == ["rw", "errors=remount-ro"])
        let two = try #require(MountInfoLine("27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid shared:10 master:3 - cgroup2 cgroup2 rw,nsdelegate"))
        #expect(two.mountPoint == "/sys/fs/cgroup/unified")
        #expect(two.type == "cgroup2")
        #expect(two.superOptions == ["rw", "nsdelegate"])
    }

    @Test func escapedMountPointsAreDecoded() {
        #expect(MountInfoLine(#"90 1 0:60 / /run/kiln/a\040b\134c rw - tmpfs tmpfs rw"#)?.mountPoint == #"/run/kiln/a b\c"#)
    }

    @Test func linesWithoutTheSeparatorOrItsFieldsAreSkipped() {
        #expect(MountInfoLine("600 500 0:50 / / ro,relatime ext4 /dev/vda1 rw") == nil)
        #expect(MountInfoLine("600 500 0:50 / / ro,relatime - ext4 /dev/vda1") == nil)
        #expect(MountInfoLine("600 500 - / / ro - ext4 /dev/vda1 rw") == nil, "a '-' before the sixth field is no separator")
        #expect(MountInfoLine.parse("600 500 0:50 / / ro - ext4 /dev/vda1 rw\n\ngarbage\n").map(\.mountPoint) == ["/"])
    }

    /// `kiln doctor`'s "state directory": which filesystem holds kiln's run-time state.
    @Test func thePathIsHeldByTheDeepestMountOfWholeComponentsTheLaterOfTwoAtOnePoint() throws {
        let table = MountInfoLine.parse(
            """
            20 1 254:0 / / rw,relatime - ext4 /dev/vda rw
            21 20 0:22 / /run rw - ext4 /dev/vda rw
            22 21 0:40 / /run/kiln rw - tmpfs kiln-state rw,size=4915200k,mode=700
            23 20 0:41 / /dev/shm rw - tmpfs shm rw
            24 23 0:42 / /dev/shm rw - ramfs none rw
            """)
        #expect(MountInfoLine.holding("/run/kiln", in: table)?.type == "tmpfs")
        #expect(MountInfoLine.holding("/run/kiln/instances/a-1/bundle", in: table)?.type == "tmpfs")
        #expect(MountInfoLine.holding("/run/kiln-test", in: table)?.mountPoint == "/run", "/run/kiln is no leading component of /run/kiln-test")
        #expect(MountInfoLine.holding("/var/lib/kiln", in: table)?.mountPoint == "/")
        #expect(MountInfoLine.holding("/dev/shm/kiln-images", in: table)?.type == "ramfs", "the later mount at one point hides the earlier")
        #expect(MountInfoLine.holding("/anything", in: []) == nil)
    }
}
