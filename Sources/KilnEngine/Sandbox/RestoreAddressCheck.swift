import Foundation
import KilnNetwork
import KilnSystem

/// A copy restored at another address than its snapshot was baked at: a socket bound to the
/// bake-time address cannot come back. CRIU either fails to bind it (an IPv4 socket: "Can't bind
/// inet socket ... Cannot assign requested address") or, for an IPv6 socket (a JVM's, mapping
/// IPv4), binds it with IP_FREEBIND to an address no interface has, where it never receives a
/// connection. Both become one error naming the socket and the fix.
package enum RestoreAddressCheck {
    /// `error` of a restore at `attachment`'s address, translated when CRIU's log shows a socket
    /// that could not be bound; otherwise unchanged.
    package static func explain(_ error: any Error, attachment: NetworkAttachment?) -> any Error {
        guard let attachment, let kiln = error as? KilnError, let log = kiln.logPath,
            let text = try? String(contentsOfFile: log, encoding: .utf8)
        else { return error }
        guard let socket = unboundSocket(inCRIULog: text) else { return error }
        return stranded(socket, attachment: attachment, details: [socket.line], logPath: log)
    }

    /// A socket CRIU could not bind, from its restore log: the line, and the port and address of
    /// the socket it was restoring then (its debug line "Restore: family ... port P ... src_addr A").
    package static func unboundSocket(inCRIULog text: String) -> (line: String, port: Int?, address: String?)? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard let failure = lines.firstIndex(where: { $0.contains("Can't bind inet socket") && $0.contains("Cannot assign requested address") })
        else {
            return nil
        }
        var port: Int?
        var address: String?
        for line in lines[..<failure].reversed() where line.contains("src_addr") && line.contains(" port ") {
            port = field(after: " port ", in: line).flatMap { Int($0) }
            address = field(after: "src_addr ", in: line)
            break
        }
        return (lines[failure].trimmingCharacters(in: .whitespaces), port, address)
    }

    /// Listening sockets in the restored process's namespace bound to an address this sandbox
    /// does not have (neither a wildcard, loopback nor `address`): `(address, port)` each.
    ///
    /// Asked of the kernel's sock_diag (``NetworkNamespace/tcpListeners(at:)``); the /proc tables
    /// only if that fails: reading them walks the host's whole TCP hash, milliseconds on the
    /// restore path of every networked copy.
    package static func strandedListeners(ofProcess pid: Int32, address: String) -> [(address: String, port: Int)] {
        if let listeners = try? NetworkNamespace.tcpListeners(at: "/proc/\(pid)/ns/net") {
            return strandedListeners(listeners, address: address)
        }
        var found: [(String, Int)] = []
        for table in ["tcp", "tcp6"] {
            guard let text = ProcFile.text("/proc/\(pid)/net/\(table)") else { continue }
            found += strandedListeners(inTable: text, address: address)
        }
        return found
    }

    /// The same, from the namespace's listening sockets. IPv6 addresses that map no IPv4 one are
    /// not kiln's to judge (kiln's network has no IPv6), `::` is the wildcard.
    package static func strandedListeners(_ listeners: [NetworkNamespace.TCPListener], address: String) -> [(address: String, port: Int)] {
        listeners.filter { listener in
            !listener.address.contains(":") && listener.address != "0.0.0.0" && !listener.address.hasPrefix("127.") && listener.address != address
        }.map { ($0.address, $0.port) }
    }

    /// The same, from the text of a `/proc/net/tcp` or `tcp6` table.
    package static func strandedListeners(inTable text: String, address: String) -> [(address: String, port: Int)] {
        var found: [(String, Int)] = []
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, fields[3] == "0A" else { continue }
            let local = fields[1].split(separator: ":")
            guard local.count == 2, let port = Int(local[1], radix: 16), let ip = ipv4(fromHex: String(local[0])) else { continue }
            if ip == "0.0.0.0" || ip.hasPrefix("127.") || ip == address { continue }
            found.append((ip, port))
        }
        return found
    }

    /// The IPv4 address of a table's hex address: 8 digits (IPv4), or 32 of an IPv4-mapped or
    /// unspecified IPv6 address; nil for another IPv6 address (not kiln's to judge) and `::1`.
    static func ipv4(fromHex hex: String) -> String? {
        func word(_ digits: Substring) -> UInt32? { UInt32(digits, radix: 16).map { UInt32(bigEndian: $0) } }
        let value: UInt32
        if hex.count == 8 {
            guard let parsed = word(Substring(hex)) else { return nil }
            value = parsed
        } else if hex.count == 32 {
            let words = stride(from: 0, to: 32, by: 8).map { hex.dropFirst($0).prefix(8) }.compactMap(word)
            guard words.count == 4, words[0] == 0, words[1] == 0 else { return nil }
            if words[2] == 0, words[3] == 0 { return "0.0.0.0" }
            guard words[2] == 0x0000_FFFF else { return nil }
            value = words[3]
        } else {
            return nil
        }
        // The kernel prints each 32-bit word in host order: on little-endian, the bytes of the
        // address reversed, which `bigEndian:` above undid into the address's own order.
        return IPv4.format(value)
    }

    /// The error for a socket bound to an address the copy does not have.
    package static func stranded(
        _ socket: (line: String, port: Int?, address: String?), attachment: NetworkAttachment, details: [String], logPath: String?
    ) -> KilnError {
        let what = [socket.port.map { "port \($0)" }, socket.address.map { "address \($0)" }].compactMap { $0 }.joined(separator: " on ")
        return KilnError(
            .restoreFailed,
            "the service has a socket\(what.isEmpty ? "" : " (\(what))") bound to the address it had when the snapshot was baked; this copy is at \(attachment.ip), so the socket cannot be restored",
            hint:
                "make the service listen on the wildcard address (0.0.0.0 or ::, e.g. server.address unset or --bind 0.0.0.0) instead of its own address, then bake again; every copy gets an address of its own",
            details: details, logPath: logPath)
    }

    private static func field(after marker: String, in line: String) -> String? {
        guard let range = line.range(of: marker) else { return nil }
        return line[range.upperBound...].split(separator: " ", omittingEmptySubsequences: true).first.map(String.init)
    }
}
