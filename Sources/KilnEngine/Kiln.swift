import Foundation
import KilnNetwork
import KilnOCI
import KilnSnapshot
import KilnSystem
import Logging

/// Where kiln keeps things on the host.
public struct KilnPaths: Sendable, Equatable {
    /// The snapshot store (snapshots are secrets: 0700).
    public var store: String
    /// Run-time state: runc's state, instance records and bundles, pinned network namespaces.
    public var state: String

    /// The cgroup parent of every kiln container (under each v1 controller, or the v2 root).
    public var cgroupParent: String

    public init(store: String = "/var/lib/kiln", state: String = "/run/kiln", cgroupParent: String = "/kiln") {
        self.store = store
        self.state = state
        self.cgroupParent = cgroupParent
    }

    /// `$KILN_STORE`, `$KILN_STATE` and `$KILN_CGROUP_PARENT` override the defaults (tests use
    /// private ones). A state directory other than the default gets a cgroup parent of its own,
    /// so two kilns never count, collect or remove each other's cgroups.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> KilnPaths {
        let state = environment["KILN_STATE"] ?? "/run/kiln"
        let parent = environment["KILN_CGROUP_PARENT"] ?? (state == "/run/kiln" ? "/kiln" : "/kiln" + state.replacingOccurrences(of: "/", with: "_"))
        return KilnPaths(store: environment["KILN_STORE"] ?? "/var/lib/kiln", state: state, cgroupParent: parent)
    }

    public var runcRoot: String { "\(state)/runc" }
    public var instances: String { "\(state)/instances" }
    public var networkNamespaces: String { "\(state)/netns" }
    /// Logs kept for a user to read after a failure.
    public var logs: String { "\(state)/logs" }
    /// Decompressed and decrypted images of compressed and encrypted snapshots, on tmpfs (also
    /// where an encrypted bake's plain dump lives until it is encrypted).
    public var dumpCache: String {
        "/dev/shm/kiln-images" + (state == "/run/kiln" ? "" : state.replacingOccurrences(of: "/", with: "_"))
    }
    /// Records of snapshots verified since boot (``VerificationRecord``): on tmpfs, root-only.
    public var verificationRecords: String {
        "/dev/shm/kiln-verified" + (state == "/run/kiln" ? "" : state.replacingOccurrences(of: "/", with: "_"))
    }
    /// What CRIU and runc answered about themselves (``ExecutableProbeCache``).
    public var executableProbes: String { "\(state)/executable-probes.json" }
    /// What the first copy of each snapshot wrote first (``Kiln/firstWritesPath(of:)``).
    public var firstWrites: String { "\(state)/first-writes" }
    /// Scratch space of bakes in progress.
    public var bakes: String { "\(state)/bakes" }
    /// The CRIU configuration runc passes to every checkpoint and restore.
    public var criuConfig: String { "\(state)/criu-runc.conf" }
    /// The CRIU configuration of a bake's checkpoint (``CRIUConfiguration/dumpContents``).
    public var criuDumpConfig: String { "\(state)/criu-runc-dump.conf" }
    /// The CRIU configuration of a standby copy's restore (``CRIUConfiguration/standbyRestoreContents(for:)``).
    public var criuStandbyConfig: String { "\(state)/criu-runc-standby.conf" }
}

/// kiln's entry point for everything that touches containers: bake, restore, inspect, stop.
///
/// Opening one checks the host first (root, CRIU version, runc, the shim), so each command fails
/// up front with a clear error rather than half-way through.
public struct Kiln: Sendable {
    public var paths: KilnPaths
    public var store: SnapshotStore
    /// The OCI runtime that starts, checkpoints and restores containers (runc; a fake in tests).
    public var runtime: any ContainerRuntime
    public var criu: CRIU
    public var logger: Logger
    /// Whether instances this value starts live only as long as this process: each is marked
    /// with it, and once it is gone (killed, crashed) `kiln gc` and the next `kiln serve` stop
    /// them. The gateway's instances are; `kiln run`'s outlive the command that made them.
    public var ownsInstances = false
    /// Keys to decrypt encrypted snapshots with (`--key`); each snapshot's manifest names the
    /// one it needs.
    public var keys = SnapshotKeyring()
    /// What a sandbox's life does to the host outside the runtime (a fake in tests).
    package var host: any SandboxHost = LinuxSandboxHost()
    /// Where this host's facts come from and which differences the user waived
    /// (`--ignore-host-check`), for the host check before every restore and pull.
    public var hostCheck = HostCheckPolicy()
    /// Opens a network by name instead of kiln's CNI networks (a fake in tests).
    package var openNetwork: (@Sendable (String) throws -> any SandboxNetwork)?
    /// How long a ``StandbyMode/ready`` copy waits before its native heap trim (HotSpot's
    /// chunk-pool cleaner first; none in tests with a fake agent).
    package var readyStandbyTrimWait = JVMCompactor.chunkPoolCleanupWait
    /// How long a ``StandbyMode/ready`` copy's agent may take to answer its trim (1.2-1.5 ms
    /// measured); one that does not is frozen untrimmed (shorter in tests).
    package var readyStandbyTrimTimeout = Duration.seconds(10)

    public static func open(paths: KilnPaths = .fromEnvironment(), logger: Logger = Logger(label: "kiln"), toDo action: String) throws -> Kiln {
        try HostPrivileges.requireRoot(toDo: action)
        // Before the state directory exists (the first command) the answers are just not kept.
        let probes = ExecutableProbeCache(file: paths.executableProbes)
        let criu = try CRIU.locate(probes: probes)
        let runcBinary = try Runc.locate()
        let shim = try Runc.locateShim()
        for directory in [paths.state, paths.runcRoot, paths.instances, paths.networkNamespaces, paths.logs, paths.bakes] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        var runtime = Runc(
            binary: runcBinary, stateRoot: paths.runcRoot, criuPath: criu.path, logDirectory: paths.logs, shimPath: shim, logger: logger)
        runtime.probes = probes
        try CRIUConfiguration.write(to: paths.criuConfig, contents: CRIUConfiguration.restoreContents(for: criu))
        try CRIUConfiguration.write(to: paths.criuDumpConfig, contents: CRIUConfiguration.dumpContents(for: criu))
        try CRIUConfiguration.write(to: paths.criuStandbyConfig, contents: CRIUConfiguration.standbyRestoreContents(for: criu))
        var store = SnapshotStore(root: paths.store)
        store.verificationRecords = VerificationRecords(directory: paths.verificationRecords)
        try store.prepare()
        return Kiln(paths: paths, store: store, runtime: runtime, criu: criu, logger: logger)
    }

    /// The light way in, for commands that only read the store and the instance records, remove
    /// snapshots or talk to instances (`kiln ls`, `ps`, `rm`, `request`): it checks root, as
    /// ``open(paths:logger:toDo:)`` does, but needs neither CRIU, runc nor kiln-shim, and creates
    /// no directory and writes no configuration.
    public static func openStore(paths: KilnPaths = .fromEnvironment(), logger: Logger = Logger(label: "kiln"), toDo action: String) throws
        -> KilnStoreAccess
    {
        try HostPrivileges.requireRoot(toDo: action)
        return KilnStoreAccess(
            paths: paths, store: SnapshotStore(root: paths.store), logger: logger,
            runtime: KilnStoreAccess.installedRunc(paths: paths, logger: logger))
    }

    /// The store and records of this kiln, with its runc.
    public var storeAccess: KilnStoreAccess { KilnStoreAccess(paths: paths, store: store, logger: logger, runtime: runtime) }

    /// Removes a snapshot and any decompressed or decrypted copy of it.
    public func removeSnapshot(_ name: String) throws { try storeAccess.removeSnapshot(name) }

    /// A new container id: the snapshot name and 6 random hex digits, e.g. `hello-3fa9c1`.
    package func makeInstanceID(for name: String) -> String {
        "\(name)-\((0..<3).map { _ in UInt8.random(in: .min ... .max) }.hexDigits)"
    }

    /// The lifecycle of a new sandbox `id` in `directory`, doing `purpose` (the action its errors
    /// name). A bake's checkpoint uses ``KilnPaths/criuDumpConfig``, a standby copy's restore
    /// ``KilnPaths/criuStandbyConfig`` (its processes are left stopped until it is frozen);
    /// everything else the restore one.
    package func makeSandbox(id: String, directory: String, purpose: String, forCheckpoint: Bool = false, standby: Bool = false)
        -> SandboxLifecycle
    {
        let configuration = forCheckpoint ? paths.criuDumpConfig : standby ? paths.criuStandbyConfig : paths.criuConfig
        var lifecycle = SandboxLifecycle(
            id: id, directory: directory, purpose: purpose, paths: paths, criuConfigPath: configuration, runtime: runtime, host: host,
            logger: logger)
        lifecycle.restoresStopped = standby && !forCheckpoint
        return lifecycle
    }

    /// The lifecycle of a sandbox that exists already (an instance from its record, or one
    /// `kiln gc` found), to tear it down.
    package func adoptSandbox(id: String, directory: String, shimPid: Int32? = nil, containerPid: Int32 = 0, purpose: String? = nil)
        -> SandboxLifecycle
    {
        SandboxLifecycle.adopting(
            id: id, directory: directory, shimPid: shimPid, containerPid: containerPid, paths: paths, runtime: runtime, host: host, logger: logger,
            purpose: purpose)
    }
}
