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
