import Foundation
import Testing

@testable import KilnEngine
@testable import KilnNetwork
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite("a copy restored at another address")
struct RestoreAddressCheckTests {
    @Test func criusBindFailureNamesTheSocketItWasRestoring() throws {
        let log = """
            (00.012345)      1: Restore: family AF_INET    type SOCK_STREAM    proto IPPROTO_TCP      port 8080 state TCP_LISTEN       src_addr 0.0.0.0
            (00.012400)      1: Restore: family AF_INET    type SOCK_STREAM    proto IPPROTO_TCP      port 9000 state TCP_LISTEN       src_addr 10.213.0.7
            (00.012500)      1: Error (criu/sk-inet.c:1059): Can't bind inet socket (id 1234): Cannot assign requested address
            (00.012600) Error (criu/cr-restore.c:2000): Restoring FAILED.
            """
        let socket = try #require(RestoreAddressCheck.unboundSocket(inCRIULog: log))
        #expect(socket.port == 9000)
        #expect(socket.address == "10.213.0.7")
        #expect(socket.line.contains("id 1234"))
        #expect(RestoreAddressCheck.unboundSocket(inCRIULog: "(00.1) Error: Can't bind inet socket (id 1): Address already in use") == nil)
    }

    @Test func aFailedRestoreBecomesAnErrorNamingTheSocketAndTheFix() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-address-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try """
        (00.1) 1: Restore: family AF_INET type SOCK_STREAM proto IPPROTO_TCP port 9000 state TCP_LISTEN src_addr 10.213.0.7
        (00.2) 1: Error (criu/sk-inet.c:1059): Can't bind inet socket (id 12): Cannot assign requested address
        """.write(toFile: "\(directory)/restore.log", atomically: true, encoding: .utf8)
        let attachment = NetworkAttachment(
            network: "kiln", id: "svc-1", tag: "svc", interface: "eth0", address: "10.213.0.9/16", gateway: nil, hostInterface: nil,
            namespacePath: "/run/kiln/netns/svc-1", resolvConf: "", result: Data())
        let original = KilnError(.restoreFailed, "runc restore exited with 1", logPath: "\(directory)/restore.log")
        let explained = try #require(RestoreAddressCheck.explain(original, attachment: attachment) as? KilnError)
        #expect(explained.message.contains("port 9000 on address 10.213.0.7"), "\(explained.message)")
        #expect(explained.message.contains("10.213.0.9"))
        #expect(explained.hint?.contains("0.0.0.0") == true)
        // Without a network, nothing to translate.
        #expect((RestoreAddressCheck.explain(original, attachment: nil) as? KilnError)?.message == original.message)
    }

    @Test func listenersOnAnotherAddressAreFoundInBothTables() {
        // 0.0.0.0:8080, 127.0.0.1:8081, 10.213.0.7:9000 (LISTEN), 10.213.0.9:9001 (its own), one ESTABLISHED.
        let tcp = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
               1: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
               2: 0700D50A:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
               3: 0900D50A:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
               4: 0700D50A:232A 0100D50A:C000 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
            """
        #expect(RestoreAddressCheck.strandedListeners(inTable: tcp, address: "10.213.0.9").map { "\($0.address):\($0.port)" } == ["10.213.0.7:9000"])
        // A JVM's sockets are IPv6: [::]:8080 and [::ffff:10.213.0.7]:9000, restored by CRIU with IP_FREEBIND.
        let tcp6 = """
              sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
               1: 0000000000000000FFFF00000700D50A:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
               2: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
            """
        #expect(RestoreAddressCheck.strandedListeners(inTable: tcp6, address: "10.213.0.9").map { "\($0.address):\($0.port)" } == ["10.213.0.7:9000"])
    }

    /// The kernel's own answer (sock_diag), for this process's namespace: an IPv4 listener on
    /// loopback, a dual-stack wildcard one and one bound with IP_FREEBIND to an IPv4-mapped
    /// address no interface has (what CRIU restores for a JVM baked at another address).
    @Test(.enabled(if: getuid() == 0, "setns(2) into a network namespace needs CAP_SYS_ADMIN"))
    func theKernelListsListenersOfANamespaceAndTheStrandedOneIsFound() throws {
        func listener(_ family: Int32, bind: (Int32) -> Int32) throws -> (fd: Int32, port: Int) {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
            try #require(fd >= 0)
            var on: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_IP), IP_FREEBIND, &on, socklen_t(MemoryLayout<Int32>.size))
            try #require(bind(fd) == 0, "bind: \(String(cString: strerror(errno)))")
            try #require(Glibc.listen(fd, 1) == 0)
            var address = sockaddr_in6()
            var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
            return (fd, Int(UInt16(bigEndian: address.sin6_port)))
        }
        let loopback = try listener(AF_INET) { fd in
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr = in_addr(s_addr: inet_addr("127.0.0.1"))
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        func v6(_ text: String) -> (Int32) -> Int32 {
            { fd in
                var address = sockaddr_in6()
                address.sin6_family = sa_family_t(AF_INET6)
                _ = inet_pton(AF_INET6, text, &address.sin6_addr)
                return withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
                }
            }
        }
        let wildcard = try listener(AF_INET6, bind: v6("::"))
        let stranded = try listener(AF_INET6, bind: v6("::ffff:10.213.0.7"))
        defer { for fd in [loopback.fd, wildcard.fd, stranded.fd] { close(fd) } }

        let listeners = try NetworkNamespace.tcpListeners(at: "/proc/self/ns/net")
        #expect(listeners.contains(NetworkNamespace.TCPListener(address: "127.0.0.1", port: loopback.port, isIPv6: false)), "\(listeners)")
        #expect(listeners.contains(NetworkNamespace.TCPListener(address: "::", port: wildcard.port, isIPv6: true)), "\(listeners)")
        #expect(listeners.contains(NetworkNamespace.TCPListener(address: "10.213.0.7", port: stranded.port, isIPv6: true)), "\(listeners)")
        let ours = listeners.filter { [loopback.port, wildcard.port, stranded.port].contains($0.port) }
        let found = RestoreAddressCheck.strandedListeners(ours, address: "10.213.0.9")
        #expect(found.map { "\($0.address):\($0.port)" } == ["10.213.0.7:\(stranded.port)"])
        #expect(RestoreAddressCheck.strandedListeners(ours, address: "10.213.0.7").isEmpty, "its own address is fine")
        #expect(throws: KilnError.self) { try NetworkNamespace.tcpListeners(at: "/nonexistent/ns/net") }
    }
}
