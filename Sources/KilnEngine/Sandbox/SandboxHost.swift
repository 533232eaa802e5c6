import CKilnShims
import Foundation
import KilnOCI
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// What a sandbox's life does to the host outside the container runtime: its scratch directory,
/// its network namespace, its bundle, its hostname, the wait for its service, and the clean-up of
/// whatever the runtime may leave behind.
///
/// The seam between ``SandboxLifecycle`` and the machine: ``LinuxSandboxHost`` does it for real
/// (as root); tests pass a recording fake to check the order of the steps and that every failure
/// releases what was acquired, without root.
package protocol SandboxHost: Sendable {
    /// Creates `path` (0700); with `ownerMark`, marks it as this process's (``OwnerMark``), so
    /// `kiln gc` leaves it alone while this process lives.
    func makeDirectory(_ path: String, ownerMark: Bool) throws
    /// Creates and pins a network namespace at `path`, with `lo` up.
    func createNetworkNamespace(at path: String) throws
    /// Unpins and deletes the namespace at `path`; nothing happens if there is none.
    func removeNetworkNamespace(at path: String)
    /// Writes the OCI bundle of `spec` for `instance` (config.json and, if needed, its root).
    func writeBundle(_ spec: SandboxSpec, for instance: SandboxContainer) throws
    /// Rewrites the bundle's `/etc/resolv.conf` file with `instance.resolvConf`, in place (a
    /// running container's bind mount shows the new text).
    func updateResolvConf(for instance: SandboxContainer) throws
    /// Sets the hostname in the UTS namespace of process `pid`.
    func setHostname(_ name: String, ofProcess pid: Int32) throws
    /// Polls the service until it answers, dies or runs out of time.
    func waitUntilReady(_ probe: ReadinessProbe) async throws -> ReadinessProbe.Outcome
    /// Sends `GET` of each of `paths` in turn over kept-alive connections of `perConnection`
    /// requests each, and returns each reply's HTTP status.
    func sendRequests(_ paths: [String], to endpoint: ServiceEndpoint, perConnection: Int, shapes: [RequestShape]) async throws -> [Int]
    /// The ports process `pid` listens on (to explain a service that never answered).
    func listeningPorts(ofProcess pid: Int32) -> [Int]
    /// Kills whatever is left in the cgroup `cgroupPath` and removes it, unmounts what is mounted
    /// under `mountRoots`, and removes runc's state directory `runtimeState` if it holds no
    /// state. Returns what could not be removed.
    func removeLeftovers(cgroupPath: String, mountRoots: [String], runtimeState: String) async -> [String]
    /// Reaps the supervising shim once it exits, so no zombie is left.
    func reapShim(_ pid: Int32)
    /// Moves a file (a log being kept); false if it could not.
    func moveFile(_ path: String, to destination: String) -> Bool
    /// Removes a directory tree; nothing happens if there is none.
    func removeDirectory(_ path: String)
    /// Tells the CRaC agent to look at its control directory (agent/PROTOCOL.md): a byte into
    /// the wake FIFO `wakeFIFO` when a JVM holds it open, else SIGWINCH to the process of the
    /// cgroup `cgroupPath` whose pid in its own namespace is `namespacePid`. `containerPid` is
    /// the host pid of the container's first process (pid 1 in its namespace).
    func wakeAgent(namespacePid: Int32, inCgroup cgroupPath: String, containerPid: Int32, wakeFIFO: String) throws
    /// What the checkpoint preflight needs to know of every process in the cgroup `cgroupPath`.
    func preflightSnapshot(ofCgroup cgroupPath: String, containerPid: Int32) -> PreflightSnapshot
    /// Freezes (`true`) or thaws every task of the cgroup `cgroupPath` (``CgroupFreezer``); a
    /// freeze returns once all are frozen.
    func setFrozen(_ frozen: Bool, cgroupPath: String) throws
    /// Sends SIGCONT to every process of the cgroup `cgroupPath`: a standby copy CRIU left
    /// stopped, frozen since, moves from its stop into the freezer without running.
    func continueStopped(inCgroup cgroupPath: String) throws
}

/// ``SandboxHost`` on Linux, as root.
package struct LinuxSandboxHost: SandboxHost {
    package init() {}

    package func makeDirectory(_ path: String, ownerMark: Bool) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KilnError.wrapping(error, as: .systemCall, "could not create \(path): \(error.localizedDescription)")
        }
        if ownerMark { try OwnerMark.write(into: path) }
    }

    package func createNetworkNamespace(at path: String) throws {
        try NetworkNamespace.create(at: path)
    }

    package func removeNetworkNamespace(at path: String) {
        NetworkNamespace.remove(at: path)
    }

    package func writeBundle(_ spec: SandboxSpec, for instance: SandboxContainer) throws {
        try SandboxBundle.create(spec: spec, instance: instance)
    }

    package func updateResolvConf(for instance: SandboxContainer) throws {
        try SandboxBundle.updateResolvConf(of: instance)
    }

    package func setHostname(_ name: String, ofProcess pid: Int32) throws {
        guard kiln_set_hostname_in("/proc/\(pid)/ns/uts", name) == 0 else {
            throw KilnError.systemCall("sethostname", errno: errno, "instance \(name)")
        }
    }

    package func waitUntilReady(_ probe: ReadinessProbe) async throws -> ReadinessProbe.Outcome {
        try await probe.wait()
    }

    package func sendRequests(_ paths: [String], to endpoint: ServiceEndpoint, perConnection: Int, shapes: [RequestShape]) async throws -> [Int] {
        var statuses: [Int] = []
        try await InstanceHTTPClient.sendKeepingAlive(paths, to: endpoint, perConnection: perConnection, shapes: shapes, timeout: .seconds(30)) {
            reply, _ in
            statuses.append(reply.status)
        }
        return statuses
    }

    package func listeningPorts(ofProcess pid: Int32) -> [Int] {
        ProcessInspector.listeningPorts(of: pid)
    }

    package func removeLeftovers(cgroupPath: String, mountRoots: [String], runtimeState: String) async -> [String] {
        let left = await ContainerCgroups(path: cgroupPath).killAndRemove()
        // A runc killed half-way leaves its mounts and a state directory without state.json.
        HostMounts.unmountAll(under: [runtimeState] + mountRoots)
        if !FileManager.default.fileExists(atPath: "\(runtimeState)/state.json") {
            try? FileManager.default.removeItem(atPath: runtimeState)
        }
        return left
    }

    package func reapShim(_ pid: Int32) {
        ChildReaper.reap(pid)
    }

    package func moveFile(_ path: String, to destination: String) -> Bool {
        (try? FileManager.default.moveItem(atPath: path, toPath: destination)) != nil
    }

    package func removeDirectory(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    package func wakeAgent(namespacePid: Int32, inCgroup cgroupPath: String, containerPid: Int32, wakeFIFO: String) throws {
        if Self.write(toReadFIFO: wakeFIFO) { return }
        // Mostly the JVM is the container's first process: no need to read the cgroup's pids.
        let found =
            namespacePid == 1
            ? containerPid : ProcessInspector.pids(inCgroup: cgroupPath).first(where: { ProcessInspector.namespacePid(of: $0) == namespacePid })
        guard let pid = found else {
            throw KilnError(
                .runtimeFailed, "no process of the sandbox has pid \(namespacePid) in it (the JVM whose agent answered)",
                hint: "the JVM with kiln's CRaC agent exited; see the service's output")
        }
        guard kill(pid, SIGWINCH) == 0 else { throw KilnError.systemCall("kill(SIGWINCH)", errno: errno, "pid \(pid)") }
    }

    /// Writes one byte into the FIFO at `path` if some process holds it open for reading, without
    /// ever blocking; false when none does (no such FIFO, or no reader: an agent older than the
    /// wake FIFO, which then takes the signal). The byte wakes a thread blocked reading it in
    /// tens of microseconds; the JDK runs a signal's Java handler on a thread it creates for
    /// each signal, which took 1.2-2.7 ms in a just-thawed hello-jdk copy.
    package static func write(toReadFIFO path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFIFO else { return false }
        var byte: UInt8 = 1
        return Glibc.write(fd, &byte, 1) == 1
    }

    package func preflightSnapshot(ofCgroup cgroupPath: String, containerPid: Int32) -> PreflightSnapshot {
        PreflightSnapshot.read(cgroupPath: cgroupPath, containerPid: containerPid)
    }

    package func setFrozen(_ frozen: Bool, cgroupPath: String) throws {
        let freezer = CgroupFreezer(path: cgroupPath)
        if frozen { try freezer.freeze() } else { try freezer.thaw() }
    }

    package func continueStopped(inCgroup cgroupPath: String) throws {
        let pids = ProcessInspector.pids(inCgroup: cgroupPath)
        guard !pids.isEmpty else { throw KilnError(.runtimeFailed, "no process left in the cgroup \(cgroupPath) to continue") }
        for pid in pids where kill(pid, SIGCONT) != 0 && errno != ESRCH {
            throw KilnError(.systemCall, "could not continue process \(pid) of \(cgroupPath): \(String(cString: strerror(errno)))")
        }
    }
}
