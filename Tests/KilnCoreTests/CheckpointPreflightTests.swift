import Foundation
import Testing

@testable import KilnEngine
@testable import KilnSystem

/// The preflight's analysis on fixture /proc text: each kind found, named, explained; what a JVM
/// always has (its jars, /dev/urandom, the JDK's half-closed socketpair, kiln's stdio pipes) not.
@Suite("checkpoint preflight analysis")
struct CheckpointPreflightTests {
    static let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

    static func tcpLine(_ slot: Int, _ local: String, _ remote: String, _ state: String, inode: Int) -> String {
        "   \(slot): \(local) \(remote) \(state) 00000000:00000000 00:00000000 00000000     0        0 \(inode) 1 0000000000000000 20 4 30 10 -1\n"
    }

    /// Every JVM has these; none blocks.
    static let jvmFiles: [PreflightSnapshot.OpenFile] = [
        .init(fd: 0, target: "pipe:[900]", flags: 0), .init(fd: 1, target: "pipe:[901]", flags: 1), .init(fd: 2, target: "pipe:[901]", flags: 1),
        .init(fd: 3, target: "/usr/lib/jvm/java-17-openjdk-amd64/lib/modules", flags: 0o100000),
        .init(fd: 4, target: "/run/kiln/agent/kiln-crac-agent.jar", flags: 0o100000), .init(fd: 5, target: "/dev/urandom", flags: 0o100000),
        .init(fd: 6, target: "socket:[500]", flags: 2), .init(fd: 8, target: "socket:[502]", flags: 0o4002),
        .init(fd: 9, target: "anon_inode:[eventpoll]", flags: 0o2000002), .init(fd: 10, target: "/tmp/cache.bin", flags: 0o100002),
    ]
    static let tcp =
        header
        + tcpLine(0, "00000000000000000000000000000000:1F90", "00000000000000000000000000000000:0000", "0A", inode: 502)
        + tcpLine(1, "0100007F:A028", "0100007F:238B", "01", inode: 600)
        + tcpLine(2, "0100007F:238B", "0100007F:A028", "01", inode: 601)
        + tcpLine(3, "0100007F:1F91", "00000000:0000", "0A", inode: 602)
        + tcpLine(4, "0000000000000000FFFF00000100007F:1F90", "0000000000000000FFFF00000100007F:B000", "08", inode: 603)
    static let unix =
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        + "0000000010a98fd1: 00000002 00000000 00000000 0001 03 500\n"
        + "0000000010a98fd2: 00000002 00000000 00000000 0001 03 501\n"
        + "0000000010a98fd3: 00000002 00000000 00000000 0001 03 510\n"
        + "0000000010a98fd4: 00000002 00000000 00000000 0001 03 511\n"
    static let peers = """
        Netid State Recv-Q Send-Q Local Address:Port    Peer Address:Port
        u_str ESTAB 0      0                  * 500            * 0
        u_str ESTAB 0      0                  * 501            * 777
        u_str ESTAB 0      0                  * 510            * 511
        u_str ESTAB 0      0                  * 511            * 510
        """
    static let mounts = """
        600 500 0:50 / / ro,relatime - ext4 /dev/vda1 rw
        601 600 0:51 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw,size=65536k
        602 600 0:52 /work/app /work/app ro - ext4 /dev/vda1 rw
        603 600 0:53 /state/x/data /var/data rw - ext4 /dev/vda1 rw
        """

    static func snapshot(_ files: [PreflightSnapshot.OpenFile], more: [PreflightSnapshot.Process] = []) -> PreflightSnapshot {
        PreflightSnapshot(
            processes: [.init(pid: 5000, namespacePid: 1, parent: 4990, command: "java", files: files)] + more,
            tcp: tcp, udp: "", unix: unix, unixPeers: peers, mounts: mounts)
    }

    /// A JVM with a TCP connection to a listener of its own (both ends), as the bake fake uses.
    static let connectedJVM = snapshot(jvmFiles + [.init(fd: 11, target: "socket:[600]", flags: 2), .init(fd: 12, target: "socket:[601]", flags: 2)])

    @Test func aPlainJVMHasNothingThatBlocks() {
        let findings = CheckpointPreflight.analyze(Self.snapshot(Self.jvmFiles), servicePort: 8080, servicePid: 5000)
        #expect(findings == [], "\(findings)")
        #expect(CheckpointPreflight.blocked(findings, allowed: []) == nil)
        #expect(CheckpointPreflight.render(findings) == ["nothing found that would break the restored copies"])
    }

    @Test func anEstablishedConnectionIsNamedWithBothEndsAndAFix() throws {
        let findings = CheckpointPreflight.analyze(Self.connectedJVM, servicePort: 8080, servicePid: 5000)
        #expect(
            findings.map(\.what) == [
                "TCP 127.0.0.1:41000 -> 127.0.0.1:9099 (ESTABLISHED)", "TCP 127.0.0.1:9099 -> 127.0.0.1:41000 (ESTABLISHED)",
            ])
        #expect(findings.allSatisfy { $0.kind == .tcpConnection && $0.process == "pid 1 (java)" })
        let error = try #require(CheckpointPreflight.blocked(findings, allowed: []))
        #expect(error.code == .checkpointBlocked)
        #expect(error.message.hasPrefix("2 things in the sandbox would break the restored copies (tcp-connection)"))
        #expect(error.hint?.contains("--allow tcp-connection") == true)
        #expect(error.details.contains { $0.hasPrefix("    fix: close the connection") })
        #expect(CheckpointPreflight.blocked(findings, allowed: [.tcpConnection]) == nil)
        #expect(CheckpointPreflight.render(findings, allowed: [.tcpConnection])[0].hasPrefix("tcp-connection (allowed): "))
    }

    @Test func kiln_sHalfClosedProbeAndTheServiceListenerDoNotBlockButAnotherListenerDoes() {
        // 603 is CLOSE_WAIT on the service port (an IPv4-mapped IPv6 socket): still a connection.
        let files = Self.jvmFiles + [.init(fd: 11, target: "socket:[602]", flags: 2), .init(fd: 12, target: "socket:[603]", flags: 2)]
        let findings = CheckpointPreflight.analyze(Self.snapshot(files), servicePort: 8080, servicePid: 5000)
        #expect(findings.map(\.kind) == [.tcpConnection, .listener])
        #expect(findings.map(\.what) == ["TCP 127.0.0.1:8080 -> 127.0.0.1:45056 (CLOSE_WAIT)", "TCP listener on 127.0.0.1:8081"])
    }

    @Test func unixSocketsBlockOnlyWithAPeerOutsideTheSandbox() {
        // 501's peer 777 is held by nobody in the sandbox; 510/511 is a pair the JVM holds both ends of.
        let files =
            Self.jvmFiles + [
                .init(fd: 11, target: "socket:[501]", flags: 2), .init(fd: 12, target: "socket:[510]", flags: 2),
                .init(fd: 13, target: "socket:[511]", flags: 2),
            ]
        let findings = CheckpointPreflight.analyze(Self.snapshot(files), servicePort: 8080, servicePid: 5000)
        #expect(findings.map(\.kind) == [.unixSocket])
        #expect(findings.first?.what == "connected unix socket (unnamed) fd 11")
    }

    @Test func filesDevicesAndChildrenAreNamed() {
        let files =
            Self.jvmFiles + [
                .init(fd: 11, target: "/var/data/app.log", flags: 0o102001), .init(fd: 12, target: "/var/data/old.db (deleted)", flags: 0o100002),
                .init(fd: 13, target: "/dev/nvidia0", flags: 2), .init(fd: 14, target: "/work/app/app.jar", flags: 0o100000),
                .init(fd: 15, target: "/memfd:jit (deleted)", flags: 2),
            ]
        let child = PreflightSnapshot.Process(pid: 5100, namespacePid: 40, parent: 5000, command: "convert", files: [])
        let wrapper = PreflightSnapshot.Process(pid: 4990, namespacePid: 1, parent: 1, command: "sh", files: [])
        var snapshot = Self.snapshot(files, more: [child, wrapper])
        snapshot.processes[0].namespacePid = 7
        let findings = CheckpointPreflight.analyze(snapshot, servicePort: 8080, servicePid: 5000)
        #expect(findings.map(\.kind) == [.fileWrite, .deletedFile, .childProcess, .device])
        #expect(
            findings.map(\.what) == [
                "/var/data/app.log open for writing (fd 11, ext4)", "/var/data/old.db (deleted, fd 12)", "child of pid 7", "/dev/nvidia0 (fd 13)",
            ])
        #expect(findings[2].process == "pid 40 (convert)")
        // The wrapper shell above the JVM is the service's own line, not a child.
        #expect(!findings.contains { $0.process.contains("sh") })
    }

    @Test func addressesDecodeAsTheKernelPrintsThem() {
        #expect(CheckpointPreflight.endpoint("0100007F:1F90")?.description == "127.0.0.1:8080")
        #expect(CheckpointPreflight.endpoint("00000000000000000000000001000000:0050")?.description == "[0:0:0:0:0:0:0:1]:80")
        #expect(CheckpointPreflight.endpoint("0000000000000000FFFF00000A00A8C0:01BB")?.description == "192.168.0.10:443")
        #expect(CheckpointPreflight.endpoint("zz:1") == nil)
        #expect(CheckpointPreflight.filesystem(of: "/tmp/x", in: CheckpointPreflight.parseMounts(Self.mounts)) == "tmpfs")
        #expect(CheckpointPreflight.filesystem(of: "/tmpx", in: CheckpointPreflight.parseMounts(Self.mounts)) == "ext4")
    }

    /// The agent's io-stacks.json (`kiln bake --preflight`): each socket finding gets the stack
    /// recorded for its peer, each file finding the one of its path; a repeat prints once.
    @Test func openingStacksFromTheAgentAreAttachedByPeerAndPath() throws {
        let json = """
            {"protocol":1,"events":12,"elapsed_us":900,"sockets":[
              {"address":"127.0.0.1","port":9099,"event":"jdk.SocketWrite","time":"t","thread":"main","truncated":false,
               "stack":["org.postgresql.core.PGStream.flush:724","com.zaxxer.hikari.pool.HikariPool.<init>:110"]},
              {"address":"0:0:0:0:0:0:0:1%lo","port":5432,"event":"jdk.SocketRead","time":"t","thread":null,"truncated":true,"stack":["A.b:1"]}],
             "files":[{"path":"/var/data/app.log","event":"jdk.FileWrite","time":"t","thread":"log","truncated":false,"stack":["Log.open:3"]}]}
            """
        let stacks = try #require(CheckpointPreflight.IOStacks(json: json))
        #expect(stacks.sockets.keys.sorted() == ["127.0.0.1:9099", "[0:0:0:0:0:0:0:1]:5432"])
        #expect(CheckpointPreflight.IOStacks(json: "not json") == nil)

        let findings: [CheckpointPreflight.Finding] = [
            .init(kind: .tcpConnection, process: "pid 1 (java)", what: "TCP a -> 127.0.0.1:9099", peer: "127.0.0.1:9099"),
            .init(kind: .tcpConnection, process: "pid 1 (java)", what: "TCP b -> 127.0.0.1:9099", peer: "127.0.0.1:9099"),
            .init(kind: .tcpConnection, process: "pid 1 (java)", what: "TCP c -> 127.0.0.1:7000", peer: "127.0.0.1:7000"),
            .init(kind: .fileWrite, process: "pid 1 (java)", what: "/var/data/app.log open for writing", path: "/var/data/app.log"),
        ]
        let attached = CheckpointPreflight.attach(stacks, to: findings)
        #expect(attached[0].openedBy?.frames.first == "org.postgresql.core.PGStream.flush:724")
        #expect(attached[0].openedBy?.thread == "main")
        #expect(attached[1].openedBy == attached[0].openedBy)
        #expect(attached[2].openedBy == nil, "no I/O recorded to that peer")
        #expect(attached[3].openedBy?.frames == ["Log.open:3"])

        let text = CheckpointPreflight.render(attached).joined(separator: "\n")
        #expect(text.contains("opened by (Java stack of its first I/O in thread \"main\", jdk.SocketWrite):"), "\(text)")
        #expect(text.contains("        at com.zaxxer.hikari.pool.HikariPool.<init>:110"), "\(text)")
        #expect(text.components(separatedBy: "at org.postgresql.core.PGStream.flush").count == 2, "the repeated stack is printed once: \(text)")
        #expect(text.contains("opened by: the same stack as above"), "\(text)")

        // What analyze records for matching: the remote end as Endpoint prints it, the file's path.
        let found = CheckpointPreflight.analyze(Self.connectedJVM, servicePort: 8080, servicePid: 5000)
        #expect(found.compactMap(\.peer).sorted() == ["127.0.0.1:41000", "127.0.0.1:9099"], "\(found)")
    }
}
