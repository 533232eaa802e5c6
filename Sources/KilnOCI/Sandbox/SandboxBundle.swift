import CKilnShims
import Foundation
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Lays out an OCI bundle (config.json + root filesystem) for one container of a sandbox.
public enum SandboxBundle {
    /// Host `/etc` entries a JVM reads (Debian's JDK keeps its `conf/` there and `java` resolves
    /// through /etc/alternatives). Only these are bound, never all of /etc (shadow, keys, ...).
    package static func hostEtcBinds() -> [String] {
        let fileManager = FileManager.default
        var binds = ["/etc/alternatives", "/etc/ssl"]
        if let entries = try? fileManager.contentsOfDirectory(atPath: "/etc") {
            binds += entries.filter { $0.hasPrefix("java-") }.sorted().map { "/etc/\($0)" }
        }
        // Binding a host path that is a symlink breaks CRIU's mount restore (mount-v2
        // "Failed to move_mount"); keep only real directories.
        return binds.filter { path in
            var info = stat()
            return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
        }
    }

    /// Creates `instance.bundlePath` with its config.json (and rootfs for a host root).
    public static func create(spec: SandboxSpec, instance: SandboxContainer) throws {
        let fileManager = FileManager.default
        let bundle = instance.bundlePath
        do {
            try fileManager.createDirectory(atPath: bundle, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let rootPath: String
            var binds: [String] = []
            switch spec.rootFilesystem {
            case .directory(let path):
                rootPath = path
            case .host:
                rootPath = "\(bundle)/rootfs"
                binds = ["/usr"] + hostEtcBinds()
                try layOutHostRoot(at: rootPath, hostname: instance.id, binds: binds, mode: spec.rootMode)
            }
            let extra =
                try extraBinds(spec, instance: instance, root: rootPath, kilnBinds: binds)
                + agentBinds(spec, instance: instance, root: rootPath)
            let config = OCIConfig(spec: spec, instance: instance, rootPath: rootPath, binds: binds, extraMounts: extra)
            try RuntimeFile.write(KilnJSON.prettyEncoder().encode(config), to: "\(bundle)/config.json")
        } catch let error as KilnError {
            throw error
        } catch {
            throw KilnError(.systemCall, "could not lay out the sandbox bundle at \(bundle): \(error)")
        }
    }

    /// Where the bundle keeps the file bound at `/etc/resolv.conf` (a sandbox on a network).
    static func resolvConfPath(of instance: SandboxContainer) -> String { "\(instance.bundlePath)/resolv.conf" }

    /// Rewrites the bundle's `/etc/resolv.conf` file with `instance.resolvConf` (a copy whose
    /// network answered after its bundle was written). Written in place, not replaced: the
    /// running container's bind mount holds the file's inode. Nothing happens to a bundle
    /// without that file (the snapshot's own binds provide `/etc/resolv.conf`).
    public static func updateResolvConf(of instance: SandboxContainer) throws {
        let path = resolvConfPath(of: instance)
        guard let text = instance.resolvConf, FileManager.default.fileExists(atPath: path) else { return }
        do {
            try RuntimeFile.write(text, to: path)
        } catch {
            throw KilnError(.systemCall, "could not write the sandbox's resolv.conf at \(path): \(error)")
        }
    }

    /// The mounts for ``SandboxSpec/binds``: host paths as they are; for each bind without a
    /// source a fresh file or directory in the bundle (the copy's hostname in `/etc/hostname`,
    /// its hosts file in `/etc/hosts`, empty otherwise). Destinations kiln binds anyway are
    /// skipped; in a generated root, their mount points are made here.
    static func extraBinds(_ spec: SandboxSpec, instance: SandboxContainer, root: String, kilnBinds: [String]) throws -> [OCIConfig.Mount] {
        let fileManager = FileManager.default
        let generatedRoot = spec.rootFilesystem == .host
        var mounts: [OCIConfig.Mount] = []
        for (index, bind) in (spec.binds ?? []).enumerated() where !kilnBinds.contains(bind.destination) && bind.destination != spec.appDirectory {
            let source: String
            if let given = bind.source {
                source = given
            } else {
                source = "\(instance.bundlePath)/binds/\(index)"
                try fileManager.createDirectory(atPath: "\(instance.bundlePath)/binds", withIntermediateDirectories: true)
                if bind.isDirectory {
                    try fileManager.createDirectory(atPath: source, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o1777])
                } else {
                    let content =
                        switch bind.destination {
                        case "/etc/hostname": "\(instance.id)\n"
                        case "/etc/hosts": hostsFile(hostname: instance.id)
                        default: ""
                        }
                    try RuntimeFile.write(content, to: source)
                }
            }
            if generatedRoot {
                let target = root + bind.destination
                try fileManager.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                if bind.isDirectory {
                    try fileManager.createDirectory(atPath: target, withIntermediateDirectories: true)
                } else if !fileManager.fileExists(atPath: target) {
                    try? RuntimeFile.write(Data(), to: target)
                }
            }
            mounts.append(
                .init(
                    destination: bind.destination, type: "bind", source: source,
                    options: ["rbind", "nosuid", "nodev"] + (bind.readOnly ? ["ro"] : [])))
        }
        // A sandbox on a network gets its network's DNS configuration, read-only. The mount is
        // in every container of a networked snapshot (bake and copies alike), so CRIU finds the
        // mount tree it dumped; each copy's file has its own network's text.
        if let resolvConf = instance.resolvConf, !mounts.contains(where: { $0.destination == "/etc/resolv.conf" }),
            !(spec.binds ?? []).contains(where: { $0.destination == "/etc/resolv.conf" })
        {
            let source = resolvConfPath(of: instance)
            try RuntimeFile.write(resolvConf, to: source)
            let target = root + "/etc/resolv.conf"
            if !fileManager.fileExists(atPath: target) {
                try? fileManager.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
                try? RuntimeFile.write(Data(), to: target)
            }
            mounts.append(.init(destination: "/etc/resolv.conf", type: "bind", source: source, options: ["rbind", "ro", "nosuid", "nodev"]))
        }
        return mounts
    }

    /// The agent's mounts. The current layout (``CRaCAgent/mountsOneDirectory``): one, the parent
    /// of this container's control directory at ``CRaCAgent/directoryInSandbox``, holding a copy
    /// of the jar (root's, read-only) and the control directory (writable by the service's user).
    /// The older layout: the host's jar read-only, and the control directory read-write. In a
    /// generated root, their mount points are made here.
    static func agentBinds(_ spec: SandboxSpec, instance: SandboxContainer, root: String) throws -> [OCIConfig.Mount] {
        guard let agent = spec.agent else { return [] }
        guard let control = instance.agentDirectory else {
            throw KilnError(.runtimeFailed, "the sandbox \(instance.id) has an agent but no control directory")
        }
        let fileManager = FileManager.default
        guard fileManager.fileExists(atPath: agent.jarPath) else {
            throw KilnError(
                .toolMissing, "kiln's CRaC agent jar \(agent.jarPath) is missing",
                hint: agent.mountsOneDirectory
                    ? "the snapshot lacks its copy of the agent: pull or bake it again"
                    : "build it with 'make samples' (or agent/build.sh) at that path, or bake again (with --no-agent to go without)")
        }
        try fileManager.createDirectory(atPath: control, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if let user = spec.user { chown(control, user.uid, user.gid) }
        // A restored JVM holds the wake FIFO open: CRIU opens it again by its path.
        let wake = "\(control)/\(CRaCAgent.wakeName)"
        unlink(wake)
        guard mkfifo(wake, 0o600) == 0 else { throw KilnError.systemCall("mkfifo", errno: errno, wake) }
        if let user = spec.user { chown(wake, user.uid, user.gid) }
        if agent.mountsOneDirectory {
            let directory = (control as NSString).deletingLastPathComponent
            chmod(directory, 0o755)
            let jar = "\(directory)/\(CRaCAgent.jarName)"
            unlink(jar)
            try fileManager.copyItem(atPath: agent.jarPath, toPath: jar)
            chmod(jar, 0o444)
            if spec.rootFilesystem == .host {
                try fileManager.createDirectory(atPath: root + CRaCAgent.directoryInSandbox, withIntermediateDirectories: true)
            }
            return [.init(destination: CRaCAgent.directoryInSandbox, type: "bind", source: directory, options: ["rbind", "nosuid", "nodev"])]
        }
        if spec.rootFilesystem == .host {
            try fileManager.createDirectory(atPath: root + CRaCAgent.controlInSandbox, withIntermediateDirectories: true)
            let jarTarget = root + CRaCAgent.jarInSandbox
            try fileManager.createDirectory(atPath: (jarTarget as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if !fileManager.fileExists(atPath: jarTarget) { try? RuntimeFile.write(Data(), to: jarTarget) }
        }
        return [
            .init(destination: CRaCAgent.jarInSandbox, type: "bind", source: agent.jarPath, options: ["rbind", "ro", "nosuid", "nodev"]),
            .init(destination: CRaCAgent.controlInSandbox, type: "bind", source: control, options: ["rbind", "nosuid", "nodev"]),
        ]
    }

    static func hostsFile(hostname: String) -> String {
        "127.0.0.1\tlocalhost \(hostname)\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    }

    /// An empty root whose /bin, /lib, ... are symlinks into /usr (as on the host, where they are
    /// symlinks too and so cannot be bind-mounted), plus a minimal generated /etc.
    package static func layOutHostRoot(at root: String, hostname: String, binds: [String], mode: Int? = nil) throws {
        let fileManager = FileManager.default
        defer { chmod(root, mode_t(mode ?? 0o755)) }
        for directory in ["usr", "proc", "dev", "sys", "tmp", "etc", "run", "var/tmp"] {
            try fileManager.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
        }
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            guard let target = try? fileManager.destinationOfSymbolicLink(atPath: "/\(name)") else { continue }
            try fileManager.createSymbolicLink(atPath: "\(root)/\(name)", withDestinationPath: target)
        }
        for path in binds where path.hasPrefix("/etc/") {
            try fileManager.createDirectory(atPath: root + path, withIntermediateDirectories: true)
        }
        if let zone = try? fileManager.destinationOfSymbolicLink(atPath: "/etc/localtime") {
            try fileManager.createSymbolicLink(atPath: "\(root)/etc/localtime", withDestinationPath: zone)
        }
        let files = [
            "passwd": "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            "group": "root:x:0:\nnogroup:x:65534:\n",
            "hosts": hostsFile(hostname: hostname),
            "hostname": "\(hostname)\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
            "resolv.conf": "",
        ]
        for (name, content) in files {
            try RuntimeFile.write(content, to: "\(root)/etc/\(name)")
        }
    }

    /// Removes the bundle directory (best effort: it is only kiln's own scratch space).
    public static func remove(_ instance: SandboxContainer) {
        try? FileManager.default.removeItem(atPath: instance.bundlePath)
    }
}
