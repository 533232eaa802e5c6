import Foundation
import KilnSystem

/// The CRIU options kiln gives runc (through the `org.criu.config` annotation), which runc's own
/// flags cannot express. Measured on a 2-core VM with Linux 6.18 (helper study, 15 interleaved
/// runs): restore of a small JVM server to first response went from ~195 ms to ~80 ms, the Spring
/// sample from ~275 ms to ~150 ms.
public enum CRIUConfiguration {
    public static let contents = """
        # Written by kiln; runc passes it to CRIU for every checkpoint and restore.
        #
        # Each container joins a network namespace kiln made for it, which CRIU treats as external
        # and never dumps, and kiln never checkpoints a service with a connection open. So there is
        # nothing for a network lock to protect: locking ran iptables-restore six times per restore
        # (~65 ms) and dropped connections made while it held. The lock method is recorded in the
        # images, so it must be chosen at checkpoint time.
        network-lock skip
        # runc creates the container's cgroups and applies its limits itself; CRIU mounting a
        # cgroup filesystem to do it again cost 8-28 ms per restore. ("=" is required here: the
        # config parser splits "manage-cgroups ignore" wrongly.)
        manage-cgroups=ignore

        """

    /// What every restore gets: ``contents`` and the options of kiln's CRIU patches that `criu`
    /// has: 0001's mapping of the page images copy-on-write instead of reading them (patches/criu:
    /// the restorer's `preadv` of the pages was ~half of a restore; mapped, copies of one snapshot
    /// share every page they have not written, through the page cache) and 0005's catch of the
    /// restored threads without hardware breakpoints.
    public static func restoreContents(for criu: CRIU) -> String {
        var text = contents
        if criu.mapsPageImages {
            text += """
                # kiln's CRIU patch 0001 (patches/criu): map pages-*.img MAP_PRIVATE over the restored
                # process's private anonymous memory instead of reading it. The image files are never
                # rewritten while copies run (kiln unlinks and renames, never writes in place).
                mmap-page-images

                """
        }
        if criu.avoidsBreakpoints { text += noBreakpoints }
        return text
    }

    /// kiln's CRIU patch 0005, for dumps and restores alike.
    static let noBreakpoints = """
        # kiln's CRIU patch 0005 (patches/criu): catch each thread leaving the restorer (or the
        # parasite) by tracing its system calls. A hardware breakpoint is a perf event, and the
        # first one after a second without any waits for an RCU grace period (5-17 ms).
        no-breakpoints

        """

    /// What a standby copy's restore gets: ``restoreContents(for:)`` and CRIU's
    /// `leave-stopped`. CRIU resumes a restored task, so the copy ran for as long as runc took to
    /// return and kiln to freeze it (0.2-5 ms): Spring sample standby copies then held 1-48 MiB of
    /// the snapshot's pages (the kernel maps 16 pages around each page read) and did work in the
    /// bake's identity. Left stopped, they run nothing until their thaw.
    public static func standbyRestoreContents(for criu: CRIU) -> String {
        restoreContents(for: criu) + """
            # A standby copy: CRIU leaves its processes stopped (SIGSTOP); kiln freezes its cgroup,
            # then continues them into the freezer. Nothing of the copy runs before its thaw.
            leave-stopped

            """
    }

    /// What a bake's checkpoint gets: the same network lock, but cgroups managed as CRIU does by
    /// default, so the images record the cgroup controllers. A restore that lets CRIU manage
    /// cgroups (Podman's, which passes no CRIU options) fails on images dumped with
    /// `manage-cgroups=ignore` ("cg: Can't move 1 into unified//...: No such file or directory"),
    /// and kiln's own restores ignore them either way.
    public static let dumpContents = """
        # Written by kiln; runc passes it to CRIU when a bake checkpoints its service.
        # See criu-runc.conf: the same, but the images record the cgroup controllers, so the
        # snapshot also restores where CRIU manages cgroups (podman container restore --import).
        network-lock skip

        """

    /// What a bake's checkpoint gets: ``dumpContents`` and the options of kiln's CRIU patches that
    /// `criu` has: 0002's record of each tmpfs mount without regular files as a listing its restore
    /// makes in-process, without tar (the Spring sample's 6 tmpfs mounts, a tar + gzip of 4-7 ms
    /// each per restore on a quiet VM; such images need a CRIU with the patch to restore, Podman's
    /// cannot), and 0005's catch of the threads leaving the parasite without hardware breakpoints.
    public static func dumpContents(for criu: CRIU) -> String {
        var text = dumpContents
        if criu.inlinesTmpfs {
            text += """
                # kiln's CRIU patch 0002 (patches/criu): a tmpfs mount without regular files (/dev,
                # /dev/shm, ...) is dumped as a listing its restore makes without tar; others as before.
                tmpfs-inline

                """
        }
        if criu.avoidsBreakpoints { text += noBreakpoints }
        return text
    }

    /// Writes the file if it is missing or different.
    public static func write(to path: String, contents: String = contents) throws {
        if FileManager.default.contents(atPath: path) == Data(contents.utf8) { return }
        do {
            try Data(contents.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw KilnError(.systemCall, "could not write CRIU's configuration to \(path): \(error)")
        }
    }
}
