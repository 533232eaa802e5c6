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
        // A frozen task cannot die: thaw first.
        try? CgroupFreezer(path: path).thaw()
        let deadline = ContinuousClock.now + timeout
        while true {
            for pid in ProcessInspector.pids(inCgroup: path) { kill(pid, SIGKILL) }
            for directory in existingDirectories { rmdir(directory) }
            let left = existingDirectories
            if left.isEmpty || ContinuousClock.now >= deadline { return left }
            // Cleanup runs on a cancelled task too (a command stopped by SIGINT): there the
            // sleep throws at once, and the loop must still wait rather than spin.
            if (try? await Task.sleep(for: .milliseconds(20))) == nil { usleep(20_000) }
        }
    }
}

/// A container's cgroup freezer: standby copies are kept frozen in it and thawed on demand.
///
/// A frozen task is stopped by the kernel wherever it is, without a signal it could see (unlike
/// SIGSTOP, which a ptracer or the JVM's own threads would notice), so it uses no CPU and answers
/// nothing until it is thawed. A direct write to the control file takes well under a millisecond,
/// where `runc pause`/`resume` spawn a process and read its state (tens of ms): the thaw is on
/// a request's path. runc sees the result as "paused", which is what it is.
package struct CgroupFreezer: Sendable {
    /// The path under each controller's root, e.g. `/kiln/hello-3fa9c1`.
    package var path: String

    package init(path: String) { self.path = path }

    /// cgroup v1: `freezer.state` (FROZEN, FREEZING, THAWED); v2: `cgroup.freeze` (1/0) and the
    /// `frozen` line of `cgroup.events`.
    private var v1State: String { "\(CgroupHierarchy.mountPoint)/freezer\(path)/freezer.state" }
    private var v2Directory: String { CgroupHierarchy.mountPoint + path }

    /// Whether every task of the cgroup is frozen now.
    package var isFrozen: Bool {
        if CgroupHierarchy.isUnified {
            let events = (try? String(contentsOfFile: "\(v2Directory)/cgroup.events", encoding: .utf8)) ?? ""
            return events.split(separator: "\n").contains("frozen 1")
        }
        return (try? String(contentsOfFile: v1State, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) == "FROZEN"
    }

    /// Freezes every task and returns once the kernel says they all are (a task in the middle of
    /// a system call keeps the cgroup FREEZING for a moment); a cgroup still not frozen after
    /// `timeout` is thawed again and the failure thrown, so no copy is left half-frozen.
    package func freeze(timeout: Duration = .seconds(2)) throws {
        try write(frozen: true)
        let deadline = ContinuousClock.now + timeout
        while !isFrozen {
            guard ContinuousClock.now < deadline else {
                try? write(frozen: false)
                throw KilnError(
                    .runtimeFailed, "the cgroup \(path) did not freeze within \(timeout.components.seconds) s",
                    hint: "a task of the sandbox is stuck in the kernel (see /proc/PID/stack of the sandbox's processes)")
            }
            // FREEZING retries by itself in v1 only when asked again.
            if !CgroupHierarchy.isUnified { try? "FROZEN".write(toFile: v1State, atomically: false, encoding: .utf8) }
            usleep(200)
        }
    }

    /// Thaws every task; they run again at once. Thawing a cgroup that is not frozen does nothing.
    package func thaw() throws {
        try write(frozen: false)
    }

    private func write(frozen: Bool) throws {
        let (file, value) = CgroupHierarchy.isUnified ? ("\(v2Directory)/cgroup.freeze", frozen ? "1" : "0") : (v1State, frozen ? "FROZEN" : "THAWED")
        let fd = open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw KilnError.systemCall("open", errno: errno, "\(file) (is the freezer controller mounted, and the container running?)")
        }
        defer { close(fd) }
        let written = value.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard written >= 0 else { throw KilnError.systemCall("write", errno: errno, "\(value) to \(file)") }
    }
}

/// The cgroup filesystem as mounted on the host: one hierarchy per v1 controller under
/// `/sys/fs/cgroup/<controller>`, or the single v2 hierarchy at `/sys/fs/cgroup`. The one place
/// that walks it.
package enum CgroupHierarchy {
    package static let mountPoint = "/sys/fs/cgroup"

    /// Whether the host runs cgroup v2 (one unified hierarchy). Looked up once: a thaw at zero
    /// writes the freezer on the request's path, and the hierarchy does not change under kiln.
    package static let isUnified: Bool = FileManager.default.fileExists(atPath: "\(mountPoint)/cgroup.controllers")

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
