import KilnSystem

/// A container kiln started or restored.
public struct ContainerProcess: Sendable {
    /// The container's init process, as seen from the host.
    public var pid: Int32
    /// The `kiln-shim` supervising it (holding its stdio and reaping it).
    public var shimPid: Int32

    public init(pid: Int32, shimPid: Int32) {
        self.pid = pid
        self.shimPid = shimPid
    }
}

/// A container as the runtime reports it.
public struct ContainerState: Codable, Sendable {
    public var id: String
    public var pid: Int32
    public var status: String
    public var bundle: String?
}

/// A runtime that can start, checkpoint and restore sandboxed containers: the seam between kiln
/// and runc (and, later, other OCI runtimes).
///
/// When `start` or `restore` fails, the runtime has reaped any supervisor it spawned; the
/// container itself may be left half-made, and ``delete(id:)`` removes it.
public protocol ContainerRuntime: Sendable {
    /// The runtime's name and version, e.g. "runc 1.1.5+ds1", recorded with each snapshot.
    func versionDescription() -> String
    /// Starts the container described by the bundle, detached, its output appended to `logPath`.
    func start(_ instance: SandboxContainer, logPath: String) async throws -> ContainerProcess
    /// Checkpoints a running container into `dumpDirectory`, stopping it; CRIU's log goes
    /// to `workDirectory`.
    func checkpoint(id: String, dumpDirectory: String, workDirectory: String) async throws
    /// Restores a checkpoint as a new container, detached, its output appended to `logPath`;
    /// with `mergeMemory`, all its anonymous memory is offered to KSM.
    func restore(
        _ instance: SandboxContainer, dumpDirectory: String, workDirectory: String, logPath: String, mergeMemory: Bool
    ) async throws -> ContainerProcess
    /// Runs a command inside a running container, with `input` on its stdin, and returns what it printed.
    func exec(id: String, _ command: [String], input: String?) async throws -> CommandOutput
    /// Kills and deletes a container; succeeds if it is already gone.
    func delete(id: String) async throws
    /// Every container the runtime knows.
    func list() async throws -> [ContainerState]
    /// The executables each restore runs, by absolute path (the runtime, CRIU, the supervisor):
    /// what a host that pages idle memory out must keep resident for a restore after a quiet
    /// minute to read nothing back from disk. Empty for a runtime that runs none.
    var programs: [String] { get }
}

extension ContainerRuntime {
    public var programs: [String] { [] }
}
