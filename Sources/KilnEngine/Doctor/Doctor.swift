import Foundation
import KilnOCI
import KilnSnapshot
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// One answer of `kiln doctor`.
public struct DoctorCheck: Codable, Sendable {
    public enum Status: String, Codable, Sendable { case ok, warning, failed }
    public var name: String
    public var status: Status
    public var detail: String
    /// What to do when it is not ok.
    public var fix: String?
}

/// Can this machine checkpoint and restore? Each check says what it found and, if it is not
/// good, what to do.
public enum Doctor {
    public static func run(paths: KilnPaths = .fromEnvironment()) -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        func add(_ name: String, _ status: DoctorCheck.Status, _ detail: String, fix: String? = nil) {
            checks.append(DoctorCheck(name: name, status: status, detail: detail, fix: fix))
        }

        if geteuid() != 0 {
            add("root", .failed, "running as uid \(geteuid())", fix: "run kiln as root (sudo)")
        } else {
            let missing = HostPrivileges.missingCapabilities()
            add(
                "root", missing.isEmpty ? .ok : .failed,
                missing.isEmpty ? "uid 0 with the capabilities CRIU needs" : "missing \(missing.joined(separator: ", "))",
                fix: missing.isEmpty ? nil : "run kiln with its full capability set")
        }
        let kernel = HostFacts.kernelRelease()
        add("kernel", .ok, "Linux \(kernel)")

        do {
            let criu = try CRIU.locate()
            add("criu", .ok, "CRIU \(criu.version) at \(criu.path)")
            let notInUse = criu.optionsNotInUse
            add(
                "criu options", notInUse.isEmpty ? .ok : .warning,
                notInUse.isEmpty
                    ? "kiln's patches in use: mapped page images, tmpfs listings, no breakpoints"
                    : notInUse.map { "without --\($0.option): \($0.cost)" }.joined(separator: "; "),
                fix: notInUse.isEmpty ? nil : "run 'make setup' as root (it builds CRIU 4.2.1 with patches/criu), and leave the variables named unset"
            )
            if geteuid() == 0 {
                let check = criu.check()
                add(
                    "criu check", check.ok ? .ok : .failed, check.output.split(separator: "\n").last.map(String.init) ?? "",
                    fix: check.ok ? nil : "see 'criu check' output; CRIU \(CRIU.minimumVersion)+ built by 'make setup' is known to work on Linux 6.18"
                )
            }
        } catch let error as KilnError {
            add("criu", .failed, error.message, fix: error.hint)
        } catch {
            add("criu", .failed, "\(error)")
        }
        let kdat = FileManager.default.fileExists(atPath: "/dev/shm/criu.kdat") || FileManager.default.fileExists(atPath: "/run/criu.kdat")
        add(
            "criu kdat cache", kdat ? .ok : .warning, kdat ? "kernel feature cache present (saves ~30 ms per restore)" : "no criu.kdat cache yet",
            fix: kdat ? nil : "run 'criu check' once as root; CRIU built with RUNDIR on tmpfs (make setup) keeps the cache")

        do {
            let runc = try Runc.locate()
            let version = (try? Subprocess.run(runc, ["--version"]).stdout.split(separator: "\n").first.map(String.init)) ?? nil
            add("runc", .ok, "\(version ?? "runc") at \(runc)")
        } catch let error as KilnError {
            add("runc", .failed, error.message, fix: error.hint)
        } catch {
            add("runc", .failed, "\(error)")
        }
        if let iptables = ExecutableSearch.find("iptables-restore", in: "/usr/sbin:/sbin:/usr/bin") {
            add("iptables", .ok, iptables)
        } else {
            add("iptables", .warning, "iptables-restore not found", fix: "run 'make setup' (runc checkpoint may need it)")
        }
        do {
            add("kiln-shim", .ok, try Runc.locateShim())
        } catch let error as KilnError {
            add("kiln-shim", .failed, error.message, fix: error.hint)
        } catch {}
        do {
            add("crac agent", .ok, try CRaCAgent.locate())
        } catch let error as KilnError {
            // Only bakes need it, and --no-agent bakes without it.
            add("crac agent", .warning, error.message, fix: error.hint)
        } catch {}

        let memoryCgroup = CgroupHierarchy.isUnified || CgroupHierarchy.hierarchies().contains("\(CgroupHierarchy.mountPoint)/memory")
        add(
            "cgroups", memoryCgroup ? .ok : .failed,
            CgroupHierarchy.isUnified ? "cgroup v2" : "cgroup v1 (memory controller \(memoryCgroup ? "mounted" : "missing"))",
            fix: memoryCgroup ? nil : "mount the memory cgroup controller")
        // runc moves CRIU (and so the restored copy) into the container's cgroups: each such move
        // takes a lock shared by every hierarchy and, without favordynmods, first waits for an RCU
        // grace period (~10 ms of every restore on this 2-CPU VM; docs/restore-path.md).
        let cgroupMounts = CgroupMount.current()
        let favoring = cgroupMounts.first(where: \.favorsDynamicModifications)
        let remountTarget = cgroupMounts.first(where: { $0.type == "cgroup2" })?.path ?? cgroupMounts.first?.path ?? CgroupHierarchy.mountPoint
        add(
            "cgroup moves", favoring == nil ? .warning : .ok,
            favoring.map { "\($0.path) has favordynmods: moving a task between cgroups waits for no RCU grace period" }
                ?? "no cgroup mount has favordynmods: each restore waits for an RCU grace period (~10 ms) when runc moves CRIU into the container's cgroups",
            fix: favoring == nil ? "mount -o remount,favordynmods \(remountTarget) (make setup does; until the next boot)" : nil)

        // A host that pages out idle memory drops a function's pages after that long without a
        // start: the next restore or thaw reads them from disk (docs/restore-path.md).
        if let pageOut = IdlePageOut.current().first {
            let after = pageOut.minimumIdle.map { "after \(Int($0.components.seconds)) s idle" } ?? "after a while idle"
            add(
                "idle page-out", .warning,
                "DAMON (\(pageOut.kdamond)) pages out memory \(after), file pages too: a restore or a `kiln thaw` after that long reads the snapshot and the JDK from disk again (on kiln's 2-CPU test VM a standby copy's thaw went from 3.5 to 17 ms); kiln serve holds what its restores and standby copies use (the snapshots' files, the JDK's, runc, CRIU) and its own code against it, within --hold-pages (default a quarter of memory); kiln run and kiln thaw cannot",
                fix: "if the host can spare the memory, give the scheme a longer minimum age or turn the kdamond off; kiln does not change it")
        } else {
            add("idle page-out", .ok, "no DAMON page-out of idle memory")
        }

        // A restore's scratch space is kiln's state directory: the sandbox's bundle and root
        // layout, runc's state, CRIU's log and statistics, the namespace pin. On tmpfs (`/run` on
        // most hosts) that is memory work; on a disk filesystem every restore's directories and
        // files go through it. kiln's test VM has `/run` on an ext4 root without a journal, whose
        // inode allocator steps over every inode deleted in the last half minute, so the more
        // copies come and go, the slower the next one's (docs/restore-path.md).
        // Told by the same test as the dump cache's and the verification records' (statfs); the
        // mount table only names the filesystem for the message.
        let stateHolder = Self.nearestExisting(paths.state)
        let stateInMemory = DumpCache.isInMemory(stateHolder)
        let stateFilesystem = Self.filesystemType(holding: stateHolder)
        add(
            "state directory", stateInMemory ? .ok : .warning,
            stateInMemory
                ? "\(paths.state) is on \(stateFilesystem ?? "tmpfs")"
                : "\(paths.state) is on \(stateFilesystem ?? "a filesystem kiln could not find in /proc/self/mountinfo"), not tmpfs: each restore lays out its sandbox, runc's state and CRIU's log on it (`kiln run` of the Spring sample on kiln's test VM, whose /run is on ext4: sandbox prepared in 4.5-9.8 ms, the more copies had come and gone the slower; 2.1-2.2 ms on tmpfs) and the state outlives a reboot",
            fix: stateInMemory
                ? nil
                : "with no instance running, mount -t tmpfs -o mode=0700,size=20% kiln-state \(paths.state) ('make setup' does for the default /run/kiln), or set KILN_STATE to a directory on tmpfs"
        )

        var storeInfo = stat()
        if stat(paths.store, &storeInfo) == 0 {
            let mode = storeInfo.st_mode & 0o777
            add(
                "snapshot store", mode & 0o077 == 0 ? .ok : .failed, "\(paths.store) mode \(String(mode, radix: 8))",
                fix: mode & 0o077 == 0 ? nil : "chmod 700 \(paths.store): snapshots hold process memory, secrets included")
        } else {
            add("snapshot store", .ok, "\(paths.store) (created on first bake, mode 700)")
        }
        let ksm = (try? String(contentsOfFile: "/sys/kernel/mm/ksm/run", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        add("ksm", ksm == nil ? .warning : .ok, ksm == nil ? "KSM not available: copies will not share memory" : "KSM available (run=\(ksm!))")
        return checks
    }

    /// `path` if it exists, else its nearest existing parent: where it will be once created.
    static func nearestExisting(_ path: String) -> String {
        var existing = path
        while !existing.isEmpty, existing != "/", !FileManager.default.fileExists(atPath: existing) {
            existing = (existing as NSString).deletingLastPathComponent
        }
        return existing
    }

    /// The filesystem type of the mount holding the existing `path`; nil if it cannot be told.
    static func filesystemType(holding path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return MountInfoLine.holding(String(cString: resolved), in: MountInfoLine.parse(ProcFile.text("/proc/self/mountinfo") ?? ""))?.type
    }
}
