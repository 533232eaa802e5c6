import Foundation
import KilnOCI
import KilnSystem

/// What a sandbox's processes hold that a checkpoint would copy into every restored copy, or that
/// CRIU cannot restore: read from /proc before the dump (``PreflightSnapshot``), judged by a pure
/// function (``CheckpointPreflight/analyze(_:servicePort:servicePid:)``) so it is tested on
/// fixture /proc text.
package enum CheckpointPreflight {
    /// A kind of thing that blocks a checkpoint; the names are what `kiln bake --allow` takes.
    package enum Kind: String, Codable, Sendable, CaseIterable, Comparable {
        case tcpConnection = "tcp-connection"
        case udpConnected = "udp-connected"
        case listener
        case unixSocket = "unix-socket"
        case fileWrite = "file-write"
        case deletedFile = "deleted-file"
        case childProcess = "child-process"
        case device

        package static func < (lhs: Kind, rhs: Kind) -> Bool {
            allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
        }

        /// Why copies break because of it.
        package var why: String {
            switch self {
            case .tcpConnection:
                "CRIU does not dump established TCP connections (kiln does not ask for --tcp-established), and a copy restored with one would share the peer's connection state with every other copy"
            case .udpConnected:
                "every copy would send from the same socket to the same peer, which sees one address answering from many processes"
            case .listener:
                "kiln routes only the service port to a copy; this port gets no traffic in the copies, and every copy listens on it"
            case .unixSocket:
                "a connected unix socket's peer is not in the snapshot (CRIU refuses an external peer, and a copy could not reach it again)"
            case .fileWrite:
                "every copy would write into the same file at the same offset, and the file must be unchanged for CRIU to restore it"
            case .deletedFile:
                "CRIU copies a deleted file's contents into the images (up to its ghost limit) and every copy gets the old contents"
            case .childProcess:
                "the process is frozen mid-work into every copy: whatever it was doing (a build, a download, a helper daemon) resumes many times"
            case .device:
                "a device's state is not in the images; every copy reopens it and shares it, or fails to restore where it differs"
            }
        }

        /// What to do about it.
        package var fix: String {
            switch self {
            case .tcpConnection:
                "close the connection (pool, database, broker) in a CRaC beforeCheckpoint and reopen it in afterRestore, or pass --allow tcp-connection"
            case .udpConnected:
                "close the socket in beforeCheckpoint and reconnect in afterRestore, or pass --allow udp-connected"
            case .listener:
                "listen only on the service port (--port), stop the extra listener in beforeCheckpoint, or pass --allow listener"
            case .unixSocket:
                "close the socket in beforeCheckpoint and reconnect in afterRestore, or pass --allow unix-socket"
            case .fileWrite:
                "write under /tmp (a tmpfs, part of the snapshot), close the file in beforeCheckpoint, or pass --allow file-write"
            case .deletedFile:
                "close the file before the checkpoint (or keep it under /tmp), or pass --allow deleted-file"
            case .childProcess:
                "let the child finish (or stop it in beforeCheckpoint) before the checkpoint, or pass --allow child-process"
            case .device:
                "close the device in beforeCheckpoint and reopen it in afterRestore, or pass --allow device"
            }
        }
    }

    /// One thing that blocks the checkpoint.
    package struct Finding: Codable, Sendable, Equatable {
        package var kind: Kind
        /// The process, as "pid 7 (java)" with its pid inside the sandbox when known.
        package var process: String
        /// What exactly, e.g. "TCP 127.0.0.1:41234 -> 127.0.0.1:9099 (ESTABLISHED)".
        package var what: String
        /// A socket's remote end as `address:port` (`[v6]:port`), for TCP and UDP findings.
        package var peer: String? = nil
        /// A file's path, for file findings.
        package var path: String? = nil
        /// With the agent's I/O stacks (`kiln bake --preflight`): the Java stack of the first I/O
        /// on this peer or path.
        package var openedBy: OpeningStack? = nil
        package var why: String { kind.why }
        package var fix: String { kind.fix }
    }

    /// The Java stack of the first read or write the agent recorded on a socket's remote
    /// address:port or on a file's path (agent/PROTOCOL.md, `io-stacks.json`): the code that
    /// opened it, as the first write on a new connection is sent by whatever opened it. Not the
    /// stack of the open itself (CRaC's `jdk.crac.collect-fd-stacktraces` records that).
    package struct OpeningStack: Codable, Sendable, Equatable {
        /// The JFR event: `jdk.SocketWrite`, `jdk.SocketRead` or `jdk.FileWrite`.
        package var event: String
        /// The Java thread that did the I/O.
        package var thread: String?
        /// Innermost first, as `class.method:line`, starting at the first frame outside the JDK.
        package var frames: [String]
        /// JFR cut the stack (deeper than its stack depth).
        package var truncated: Bool

        package init(event: String, thread: String?, frames: [String], truncated: Bool) {
            self.event = event
            self.thread = thread
            self.frames = frames
            self.truncated = truncated
        }
    }

    /// What the agent's `io-stacks.json` says: the opening stacks by peer (`address:port`, as
    /// ``Endpoint`` prints it) and by path.
    package struct IOStacks: Sendable, Equatable {
        package var sockets: [String: OpeningStack] = [:]
        package var files: [String: OpeningStack] = [:]

        /// The name of the agent's file in its control directory.
        package static let fileName = "io-stacks.json"

        package init(sockets: [String: OpeningStack] = [:], files: [String: OpeningStack] = [:]) {
            self.sockets = sockets
            self.files = files
        }

        /// Parses `io-stacks.json`; nil when it is not that document.
        package init?(json text: String) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
            func stack(_ entry: [String: Any]) -> OpeningStack {
                OpeningStack(
                    event: entry["event"] as? String ?? "?", thread: entry["thread"] as? String, frames: entry["stack"] as? [String] ?? [],
                    truncated: entry["truncated"] as? Bool ?? false)
            }
            for entry in object["sockets"] as? [[String: Any]] ?? [] {
                guard var address = entry["address"] as? String, let port = entry["port"] as? Int else { continue }
                // Java prints an IPv6 scope as "%eth0"; /proc has none.
                if let percent = address.firstIndex(of: "%") { address = String(address[..<percent]) }
                sockets[Endpoint(address: address, port: port).description] = stack(entry)
            }
            for entry in object["files"] as? [[String: Any]] ?? [] {
                guard let path = entry["path"] as? String else { continue }
                files[path] = stack(entry)
            }
        }
    }

    /// `findings` with the opening stack of each socket's peer and each file's path from `stacks`.
    package static func attach(_ stacks: IOStacks, to findings: [Finding]) -> [Finding] {
        findings.map { finding in
            var finding = finding
            if let peer = finding.peer { finding.openedBy = stacks.sockets[peer] }
            if let path = finding.path { finding.openedBy = finding.openedBy ?? stacks.files[path] }
            return finding
        }
    }

    /// Devices every sandbox has (runc's defaults) and that carry no state a copy would miss.
    static let harmlessDevices: Set<String> = [
        "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/console",
    ]

    /// Everything in `snapshot` that blocks a checkpoint. `servicePort` is the port kiln routes;
    /// `servicePid` (host pid) the service's main process (the JVM whose agent answered, else
    /// the container's first process): it and its ancestors are not "child processes".
    package static func analyze(_ snapshot: PreflightSnapshot, servicePort: Int, servicePid: Int32) -> [Finding] {
        var findings: [Finding] = []
        let tcp = parseInet(snapshot.tcp)
        let udp = parseInet(snapshot.udp)
        let unix = parseUnix(snapshot.unix)
        let peers = parseUnixPeers(snapshot.unixPeers)
        let heldSockets = Set(snapshot.processes.flatMap { $0.files.compactMap { socketInode($0.target) } })
        let mounts = parseMounts(snapshot.mounts)
        let byPid = Dictionary(snapshot.processes.map { ($0.pid, $0) }, uniquingKeysWith: { first, _ in first })
        var serviceLine: Set<Int32> = []
        var walk: Int32? = servicePid
        while let pid = walk, let process = byPid[pid], !serviceLine.contains(pid) {
            serviceLine.insert(pid)
            walk = process.parent
        }

        for process in snapshot.processes {
            let name = "pid \(process.namespacePid ?? process.pid) (\(process.command))"
            if !serviceLine.contains(process.pid), byPid[process.parent] != nil {
                findings.append(
                    Finding(kind: .childProcess, process: name, what: "child of pid \(byPid[process.parent]!.namespacePid ?? process.parent)"))
            }
            for file in process.files {
                let target = file.target
                if let inode = socketInode(target) {
                    if let socket = tcp[inode] {
                        if socket.state == "0A" {
                            if socket.local.port != servicePort {
                                findings.append(Finding(kind: .listener, process: name, what: "TCP listener on \(socket.local)"))
                            }
                        } else if socket.state != "07" {
                            findings.append(
                                Finding(
                                    kind: .tcpConnection, process: name,
                                    what: "TCP \(socket.local) -> \(socket.remote) (\(tcpStateName(socket.state)))", peer: socket.remote.description))
                        }
                    } else if let socket = udp[inode], socket.state == "01" {
                        findings.append(
                            Finding(
                                kind: .udpConnected, process: name, what: "UDP \(socket.local) -> \(socket.remote)", peer: socket.remote.description))
                    } else if let socket = unix[inode], socket.state == "03", let peer = peers[inode], peer != 0, !heldSockets.contains(peer) {
                        // A pair whose both ends the sandbox holds is dumped whole; one whose peer is
                        // closed (peer 0: the JDK's pre-close socketpair, one end closed at once) too.
                        // A socket whose peer is unknown (no `ss` to ask, as in kiln's Docker image)
                        // is not refused on a guess: CRIU still refuses a real external peer.
                        findings.append(
                            Finding(
                                kind: .unixSocket, process: name,
                                what: "connected unix socket \(socket.path.isEmpty ? "(unnamed)" : socket.path) fd \(file.fd)"))
                    }
                    continue
                }
                guard target.hasPrefix("/") else { continue }  // pipe:, anon_inode:, ...
                // kiln's own wake FIFO for the agent: made again in every copy before its restore.
                if target == CRaCAgent.wakeInSandbox { continue }
                if target.hasSuffix(" (deleted)") {
                    let path = String(target.dropLast(" (deleted)".count))
                    if !path.hasPrefix("/memfd:") {
                        findings.append(Finding(kind: .deletedFile, process: name, what: "\(path) (deleted, fd \(file.fd))", path: path))
                    }
                    continue
                }
                if target.hasPrefix("/dev/"), !target.hasPrefix("/dev/shm/"), !target.hasPrefix("/dev/mqueue/"), !target.hasPrefix("/dev/pts/") {
                    if !harmlessDevices.contains(target) {
                        findings.append(Finding(kind: .device, process: name, what: "\(target) (fd \(file.fd))"))
                    }
                    continue
                }
                // The sandbox's stdio is kiln's (the console log), given again at every restore.
                guard file.fd > 2, let flags = file.flags, flags & 0o3 != 0 else { continue }
                let fsType = filesystem(of: target, in: mounts)
                if !["tmpfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue"].contains(fsType) {
                    findings.append(
                        Finding(kind: .fileWrite, process: name, what: "\(target) open for writing (fd \(file.fd), \(fsType))", path: target))
                }
            }
        }
        return findings.sorted { ($0.kind, $0.process, $0.what) < ($1.kind, $1.process, $1.what) }
    }

    /// The table kiln prints: one block per finding (what, why, fix).
    package static func render(_ findings: [Finding], allowed: Set<Kind> = []) -> [String] {
        guard !findings.isEmpty else { return ["nothing found that would break the restored copies"] }
        var lines: [String] = []
        var previous: OpeningStack?
        for finding in findings {
            let mark = allowed.contains(finding.kind) ? " (allowed)" : ""
            lines.append("\(finding.kind.rawValue)\(mark): \(finding.process): \(finding.what)")
            lines.append("    why: \(finding.why)")
            lines.append("    fix: \(finding.fix)")
            if let stack = finding.openedBy {
                lines += render(stack, sameAsPrevious: stack == previous)
                previous = stack
            }
        }
        return lines
    }

    /// The frames printed of an opening stack (``OpeningStack/frames`` has up to the agent's 40).
    static let printedFrames = 20

    static func render(_ stack: OpeningStack, sameAsPrevious: Bool) -> [String] {
        let thread = stack.thread.map { " in thread \"\($0)\"" } ?? ""
        if sameAsPrevious { return ["    opened by: the same stack as above (first I/O\(thread))"] }
        var lines = ["    opened by (Java stack of its first I/O\(thread), \(stack.event)):"]
        lines += stack.frames.prefix(printedFrames).map { "        at \($0)" }
        let more = stack.frames.count - printedFrames
        if more > 0 {
            lines.append("        ... \(more) more (--json has every recorded frame)")
        } else if stack.truncated {
            lines.append("        ... (deeper frames not recorded)")
        }
        return lines
    }

    /// The error that refuses the dump, or nil when every finding's kind is allowed.
    package static func blocked(_ findings: [Finding], allowed: Set<Kind>) -> KilnError? {
        let blocking = findings.filter { !allowed.contains($0.kind) }
        guard !blocking.isEmpty else { return nil }
        let kinds = Set(blocking.map(\.kind)).sorted().map(\.rawValue)
        return KilnError(
            .checkpointBlocked,
            "\(blocking.count) thing\(blocking.count == 1 ? "" : "s") in the sandbox would break the restored copies (\(kinds.joined(separator: ", "))); nothing was dumped:",
            hint: "fix them as each says, or accept a kind with --allow \(kinds[0]); 'kiln bake --preflight' prints this report without baking",
            details: render(blocking))
    }

    // MARK: - Parsing /proc text

    package struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        package var address: String
        package var port: Int
        package var description: String { address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)" }
    }

    struct InetSocket {
        var local: Endpoint
        var remote: Endpoint
        var state: String
    }

    struct UnixSocket {
        var state: String
        var path: String
    }

    /// `socket:[1234]` -> 1234.
    static func socketInode(_ target: String) -> UInt64? {
        guard target.hasPrefix("socket:["), target.hasSuffix("]") else { return nil }
        return UInt64(target.dropFirst("socket:[".count).dropLast())
    }

    /// /proc/net/{tcp,tcp6,udp,udp6} lines by inode.
    static func parseInet(_ text: String) -> [UInt64: InetSocket] {
        var sockets: [UInt64: InetSocket] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 10, fields[0].hasSuffix(":"), let inode = UInt64(fields[9]), inode != 0,
                let local = endpoint(fields[1]), let remote = endpoint(fields[2])
            else { continue }
            sockets[inode] = InetSocket(local: local, remote: remote, state: String(fields[3]))
        }
        return sockets
    }

    /// `0100007F:1F90` -> 127.0.0.1:8080 (the kernel prints each 32-bit word in host order).
    static func endpoint(_ text: Substring) -> Endpoint? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1], radix: 16) else { return nil }
        let hex = Array(parts[0])
        guard hex.count == 8 || hex.count == 32 else { return nil }
        var bytes: [UInt8] = []
        for word in stride(from: 0, to: hex.count, by: 8) {
            var wordBytes: [UInt8] = []
            for index in stride(from: word, to: word + 8, by: 2) {
                guard let byte = UInt8(String(hex[index...index + 1]), radix: 16) else { return nil }
                wordBytes.append(byte)
            }
            bytes += wordBytes.reversed()
        }
        if bytes.count == 4 { return Endpoint(address: bytes.map(String.init).joined(separator: "."), port: port) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return Endpoint(address: bytes[12...].map(String.init).joined(separator: "."), port: port)
        }
        let groups = stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return Endpoint(address: groups.joined(separator: ":"), port: port)
    }

    static func tcpStateName(_ hex: String) -> String {
        let names = [
            "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
            "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
        ]
        return names[hex] ?? "state \(hex)"
    }

    /// /proc/net/unix: `Num RefCount Protocol Flags Type St Inode [Path]`, by inode.
    static func parseUnix(_ text: String) -> [UInt64: UnixSocket] {
        var sockets: [UInt64: UnixSocket] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 7, fields[0].hasSuffix(":"), let inode = UInt64(fields[6]) else { continue }
            sockets[inode] = UnixSocket(state: String(fields[5]), path: fields.count > 7 ? String(fields[7]) : "")
        }
        return sockets
    }

    /// `ss -xn` in the sandbox's network namespace: each unix socket's inode -> its peer's inode.
    static func parseUnixPeers(_ text: String) -> [UInt64: UInt64] {
        var peers: [UInt64: UInt64] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("u_") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 8, let local = UInt64(fields[5]), let peer = UInt64(fields[7]) else { continue }
            peers[local] = peer
        }
        return peers
    }

    /// /proc/PID/mountinfo: (mount point, filesystem type), in order.
    static func parseMounts(_ text: String) -> [(point: String, type: String)] {
        MountInfoLine.parse(text).map { ($0.mountPoint, $0.type) }
    }

    /// The filesystem type of the mount that holds `path` (the last, longest match wins, as the
    /// kernel stacks mounts).
    static func filesystem(of path: String, in mounts: [(point: String, type: String)]) -> String {
        var best: (length: Int, type: String) = (-1, "unknown")
        for mount in mounts {
            let point = mount.point
            let matches = point == "/" || path == point || path.hasPrefix(point.hasSuffix("/") ? point : point + "/")
            if matches, point.count >= best.length { best = (point.count, mount.type) }
        }
        return best.type
    }
}

/// What the preflight reads of a sandbox: every process of its cgroup with its open files, and
/// the socket tables and mounts of its namespaces (all processes of a sandbox share them).
package struct PreflightSnapshot: Sendable, Equatable {
    package struct Process: Sendable, Equatable {
        /// Host pid, its pid in the sandbox, its parent's host pid, its command name.
        package var pid: Int32
        package var namespacePid: Int32?
        package var parent: Int32
        package var command: String
        package var files: [OpenFile]

        package init(pid: Int32, namespacePid: Int32?, parent: Int32, command: String, files: [OpenFile]) {
            self.pid = pid
            self.namespacePid = namespacePid
            self.parent = parent
            self.command = command
            self.files = files
        }
    }

    /// One descriptor: its number, what /proc/PID/fd/N points at, the `flags:` of its fdinfo (octal).
    package struct OpenFile: Sendable, Equatable {
        package var fd: Int
        package var target: String
        package var flags: Int?

        package init(fd: Int, target: String, flags: Int?) {
            self.fd = fd
            self.target = target
            self.flags = flags
        }
    }

    package var processes: [Process]
    /// /proc/PID/net/tcp + tcp6, udp + udp6, unix, and /proc/PID/mountinfo, as text.
    package var tcp: String
    package var udp: String
    package var unix: String
    /// `ss -xn` in the sandbox's network namespace (peer inodes, which /proc does not show).
    package var unixPeers: String
    package var mounts: String

    package init(processes: [Process], tcp: String, udp: String, unix: String, unixPeers: String = "", mounts: String) {
        self.unixPeers = unixPeers
        self.processes = processes
        self.tcp = tcp
        self.udp = udp
        self.unix = unix
        self.mounts = mounts
    }

    /// Reads a live sandbox (as root): the processes of `cgroupPath`; the tables of
    /// `containerPid`'s namespaces.
    package static func read(cgroupPath: String, containerPid: Int32) -> PreflightSnapshot {
        // Read whole: /proc files say they are empty and come a page at a time (``ProcFile``).
        func text(_ path: String) -> String { ProcFile.text(path) ?? "" }
        var processes: [Process] = []
        for pid in ProcessInspector.pids(inCgroup: cgroupPath) {
            let status = text("/proc/\(pid)/status")
            let parent =
                status.split(separator: "\n").first { $0.hasPrefix("PPid:") }
                .flatMap { Int32($0.dropFirst("PPid:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
            let command = text("/proc/\(pid)/comm").trimmingCharacters(in: .whitespacesAndNewlines)
            var files: [OpenFile] = []
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            for name in fds {
                guard let fd = Int(name), let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)") else {
                    continue
                }
                let flags = text("/proc/\(pid)/fdinfo/\(name)").split(separator: "\n").first { $0.hasPrefix("flags:") }
                    .flatMap { Int($0.dropFirst("flags:".count).trimmingCharacters(in: .whitespaces), radix: 8) }
                files.append(OpenFile(fd: fd, target: target, flags: flags))
            }
            processes.append(
                Process(
                    pid: pid, namespacePid: ProcessInspector.namespacePid(of: pid), parent: parent, command: command,
                    files: files.sorted { $0.fd < $1.fd }))
        }
        let base = "/proc/\(containerPid)"
        let peers = (try? Subprocess.run("/usr/bin/nsenter", ["--net=\(base)/ns/net", "ss", "-xn"]))?.stdout ?? ""
        return PreflightSnapshot(
            processes: processes, tcp: text("\(base)/net/tcp") + text("\(base)/net/tcp6"), udp: text("\(base)/net/udp") + text("\(base)/net/udp6"),
            unix: text("\(base)/net/unix"), unixPeers: peers, mounts: text("\(base)/mountinfo"))
    }
}
