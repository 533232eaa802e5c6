import Foundation
import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// The iptables rules kiln installs for one of its networks (bridge `B`, subnet `S`):
///
/// ```
/// filter INPUT        -i B -j KILN-IN-B              sandboxes reach no service of the host:
///   KILN-IN-B         ESTABLISHED,RELATED ACCEPT      replies to the host's own connections,
///                     tcp REJECT tcp-reset; REJECT    everything else refused (not dropped)
/// filter FORWARD      -j KILN-FWD-B (first rule)
///   KILN-FWD-B        -i B -o B -d <broadcast, 224/4> DROP  no broadcast/multicast between sandboxes
///                     -i B -o B ESTABLISHED,RELATED ACCEPT
///                     -i B -o B -j KILN-ISO-B         between sandboxes: isolation first
///                     -i B -o B ACCEPT                then test hosts and same-snapshot peers
///                     -i B ! -o B ACCEPT              egress
///                     -o B ESTABLISHED,RELATED ACCEPT replies of egress
///   KILN-ISO-B        -d A -j KILN-T-<bridge,tag>     one rule per sandbox A ("kiln:<id>")
///   KILN-T-<h>        -s A -j RETURN ... ; -j DROP    the tag's (snapshot's) own sandboxes only
/// nat POSTROUTING     -j KILN-NAT-B
///   KILN-NAT-B        -s S ! -d S -j MASQUERADE       one rule for every sandbox
/// ip6tables           INPUT -i B, FORWARD -i/-o B: DROP (the network is IPv4 only; link-local
///                     IPv6 between sandboxes or to the host would bypass the rules above)
/// ```
///
/// Traffic between two sandboxes on the bridge is switched, not routed: it passes iptables only
/// with `net.bridge.bridge-nf-call-iptables = 1`, which ``ensureBase()`` checks and sets. Per
/// sandbox there are two rules, both commented `kiln:<id>`, added and removed in one
/// `iptables-restore --noflush` each. All changes take a file lock, so two kiln processes never
/// interleave them.
public struct NetworkFirewall: Sendable {
    public var bridge: String
    public var subnet: String
    public var masquerade: Bool
    /// The lock file serializing changes (kiln's state directory).
    public var lockPath: String

    public init(bridge: String, subnet: String, masquerade: Bool, lockPath: String) {
        self.bridge = bridge
        self.subnet = subnet
        self.masquerade = masquerade
        self.lockPath = lockPath
    }

    public var inputChain: String { "KILN-IN-\(bridge)" }
    public var forwardChain: String { "KILN-FWD-\(bridge)" }
    public var isolationChain: String { "KILN-ISO-\(bridge)" }
    public var natChain: String { "KILN-NAT-\(bridge)" }
    /// Every tag chain of this bridge starts with this.
    public var tagChainPrefix: String { "KILN-T-\(Self.hash(bridge))" }

    /// The chain listing the sandboxes of `tag` (e.g. a snapshot name).
    public func tagChain(_ tag: String) -> String { "\(tagChainPrefix)\(Self.hash(tag))" }

    /// The comment marking every per-sandbox rule.
    public static func comment(for id: String) -> String { "kiln:\(id)" }

    /// FNV-1a, 32 bits, as 8 hex digits: stable across processes (Swift's Hasher is seeded).
    static func hash(_ text: String) -> String {
        var value: UInt32 = 2_166_136_261
        for byte in text.utf8 { value = (value ^ UInt32(byte)) &* 16_777_619 }
        return value.hexDigits
    }

    // MARK: network-wide rules

    /// The networks whose base rules this process has put in place (``ensureBase()`` runs once).
    private static let ensured = LockedSet()

    var key: String { "\(bridge) \(subnet) \(masquerade)" }

    /// The network's chains and jumps, added where missing (the per-sandbox rules are kept).
    /// Checked once per process and network; ``removeAll()`` forgets it.
    ///
    /// Every `kiln run` is a new process, so the check itself is on the restore path: it reads
    /// the rules (one `iptables-save` of every table and one `ip6tables-save`) and writes them
    /// only when they differ from what kiln last wrote, recorded as a digest of the base chains'
    /// lines as iptables printed them back (``baseFingerprint(ipv4:ipv6:)``). Any change to those
    /// lines by anyone, a flush, a reboot, shows as a different digest and kiln writes them again.
    ///
    /// Returns the chains the rules had when they were read (nil when this process had already
    /// checked): ``add(id:address:tag:chainsSeen:)`` takes them as a hint.
    @discardableResult
    public func ensureBase() async throws -> Set<String>? {
        guard !Self.ensured.contains(key) else { return nil }
        try enableBridgeFiltering()
        let chains = try await locked { () async throws -> Set<String> in
            let tables = try await save(table: nil)
            let filter6 = try await save(table: "filter", ipv6: true)
            if let recorded = try? String(contentsOfFile: fingerprintPath, encoding: .utf8),
                recorded == baseFingerprint(ipv4: tables, ipv6: filter6)
            {
                return Set(Self.chains(in: tables))
            }
            var filterBatch = ["*filter"]
            // Declared chains are flushed and written again: they hold only network-wide rules.
            filterBatch += [":\(inputChain) - [0:0]", ":\(forwardChain) - [0:0]"]
            if !tables.contains(":\(isolationChain) ") { filterBatch.append(":\(isolationChain) - [0:0]") }
            filterBatch += baseFilterRules()
            if !tables.contains("-A INPUT -i \(bridge) -j \(inputChain)\n") { filterBatch.append("-I INPUT 1 -i \(bridge) -j \(inputChain)") }
            if !tables.contains("-A FORWARD -j \(forwardChain)\n") { filterBatch.append("-I FORWARD 1 -j \(forwardChain)") }
            filterBatch.append("COMMIT")
            var natBatch = ["*nat", ":\(natChain) - [0:0]"]
            if masquerade { natBatch.append("-A \(natChain) -s \(subnet) ! -d \(subnet) -j MASQUERADE") }
            if !tables.contains("-A POSTROUTING -j \(natChain)\n") { natBatch.append("-A POSTROUTING -j \(natChain)") }
            natBatch.append("COMMIT")
            try await restore(filterBatch + natBatch)
            // IPv6: kiln's network has none, but every sandbox gets a link-local address on eth0,
            // and bridged IPv6 would pass the IPv4 rules by: drop all of it on the bridge.
            var batch6 = ["*filter", ":\(inputChain) - [0:0]", ":\(forwardChain) - [0:0]"] + baseIPv6Rules()
            if !filter6.contains("-A INPUT -i \(bridge) -j \(inputChain)\n") { batch6.append("-I INPUT 1 -i \(bridge) -j \(inputChain)") }
            if !filter6.contains("-A FORWARD -j \(forwardChain)\n") { batch6.append("-I FORWARD 1 -j \(forwardChain)") }
            try await restore(batch6 + ["COMMIT"], ipv6: true)
            let written = try await save(table: nil)
            try? baseFingerprint(ipv4: written, ipv6: try await save(table: "filter", ipv6: true))
                .write(toFile: fingerprintPath, atomically: true, encoding: .utf8)
            return Set(Self.chains(in: written))
        }
        Self.ensured.insert(key)
        return chains
    }

    /// Where ``ensureBase()`` records the digest of the base rules it wrote (beside the lock).
    var fingerprintPath: String { "\((lockPath as NSString).deletingLastPathComponent)/firewall-\(bridge).base" }

    /// A digest of this network's base rules as iptables-save printed them: the lines of its
    /// input, forward and NAT chains, the isolation chain's existence, and the jumps to them from
    /// INPUT, FORWARD and POSTROUTING. Per-sandbox rules (isolation and tag chains) are not in it:
    /// they change with every sandbox.
    func baseFingerprint(ipv4: String, ipv6: String) -> String {
        let own = ["-A \(inputChain) ", "-A \(forwardChain) ", "-A \(natChain) "]
        let jumps = [
            "-A INPUT -i \(bridge) -j \(inputChain)", "-A FORWARD -j \(forwardChain)", "-A POSTROUTING -j \(natChain)",
        ]
        func lines(_ save: String) -> [String] {
            save.split(separator: "\n").map(String.init).filter { line in
                own.contains { line.hasPrefix($0) } || jumps.contains(line) || line.hasPrefix(":\(isolationChain) ")
            }.map { $0.hasPrefix(":") ? ":\(isolationChain)" : $0 }
        }
        let text = (["v4"] + lines(ipv4) + ["v6"] + lines(ipv6)).joined(separator: "\n")
        return "\(Self.hash(text))-\(text.utf8.count)"
    }

    func baseFilterRules() -> [String] {
        // Broadcast and multicast between sandboxes would reach every snapshot: none crosses.
        let broadcasts = [IPv4.broadcast(of: subnet), "255.255.255.255/32", "224.0.0.0/4"].compactMap { $0 }
        return broadcasts.map { "-A \(forwardChain) -i \(bridge) -o \(bridge) -d \($0) -j DROP" } + [
            "-A \(inputChain) -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A \(inputChain) -p tcp -j REJECT --reject-with tcp-reset",
            "-A \(inputChain) -j REJECT --reject-with icmp-port-unreachable",
            "-A \(forwardChain) -i \(bridge) -o \(bridge) -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A \(forwardChain) -i \(bridge) -o \(bridge) -j \(isolationChain)",
            "-A \(forwardChain) -i \(bridge) -o \(bridge) -j ACCEPT",
            "-A \(forwardChain) -i \(bridge) ! -o \(bridge) -j ACCEPT",
            "-A \(forwardChain) -o \(bridge) -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ]
    }

    func baseIPv6Rules() -> [String] {
        [
            "-A \(inputChain) -j DROP",
            "-A \(forwardChain) -i \(bridge) -j DROP",
            "-A \(forwardChain) -o \(bridge) -j DROP",
        ]
    }

    /// Bridged IPv4 and IPv6 must pass iptables and ip6tables, or sandboxes on one bridge
    /// would reach each other unfiltered.
    func enableBridgeFiltering() throws {
        let paths = ["/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"]
        if !FileManager.default.fileExists(atPath: paths[0]) {
            _ = try? Subprocess.run("modprobe", ["br_netfilter"], environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])
        }
        for path in paths {
            guard let value = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw KilnError(
                    .toolMissing, "the kernel does not filter bridged traffic (no \(path))",
                    action: "setting up kiln's network firewall",
                    hint: "load the br_netfilter module (modprobe br_netfilter): without it sandboxes of different snapshots could reach each other")
            }
            if value.trimmingCharacters(in: .whitespacesAndNewlines) != "1" {
                guard (try? "1\n".write(toFile: path, atomically: false, encoding: .utf8)) != nil else {
                    throw KilnError(.systemCall, "could not set \(path) to 1", action: "setting up kiln's network firewall", hint: "run kiln as root")
                }
            }
        }
    }

    /// Removes every chain and jump of this network (its sandboxes' rules included).
    public func removeAll() async throws {
        Self.ensured.remove(key)
        unlink(fingerprintPath)
        try await locked {
            let filter = try await save(table: "filter")
            let nat = try await save(table: "nat")
            var lines = ["*filter"]
            if filter.contains("-A INPUT -i \(bridge) -j \(inputChain)\n") { lines.append("-D INPUT -i \(bridge) -j \(inputChain)") }
            if filter.contains("-A FORWARD -j \(forwardChain)\n") { lines.append("-D FORWARD -j \(forwardChain)") }
            let chains = Self.chains(in: filter).filter {
                $0 == inputChain || $0 == forwardChain || $0 == isolationChain || $0.hasPrefix(tagChainPrefix)
            }
            lines += chains.map { "-F \($0)" } + chains.map { "-X \($0)" }
            lines += ["COMMIT", "*nat"]
            if nat.contains("-A POSTROUTING -j \(natChain)\n") { lines.append("-D POSTROUTING -j \(natChain)") }
            if Self.chains(in: nat).contains(natChain) { lines += ["-F \(natChain)", "-X \(natChain)"] }
            lines.append("COMMIT")
            try await restore(lines)
            let filter6 = try await save(table: "filter", ipv6: true)
            var lines6 = ["*filter"]
            if filter6.contains("-A INPUT -i \(bridge) -j \(inputChain)\n") { lines6.append("-D INPUT -i \(bridge) -j \(inputChain)") }
            if filter6.contains("-A FORWARD -j \(forwardChain)\n") { lines6.append("-D FORWARD -j \(forwardChain)") }
            let chains6 = Self.chains(in: filter6).filter { $0 == inputChain || $0 == forwardChain }
            lines6 += chains6.map { "-F \($0)" } + chains6.map { "-X \($0)" } + ["COMMIT"]
            try await restore(lines6, ipv6: true)
        }
    }

    // MARK: per-sandbox rules

    /// The two rules that let `address` (no prefix) of sandbox `id` be reached only by
    /// sandboxes of the same `tag`, as iptables-restore lines.
    func sandboxRules(id: String, address: String, tag: String) -> [String] {
        let comment = "-m comment --comment \"\(Self.comment(for: id))\""
        return [
            "-A \(isolationChain) -d \(address)/32 \(comment) -j \(tagChain(tag))",
            // Inserted first: the chain's last rule stays its DROP.
            "-I \(tagChain(tag)) 1 -s \(address)/32 \(comment) -j RETURN",
        ]
    }

    /// Adds sandbox `id`'s isolation rules (creating its tag's chain on first use), in one
    /// `iptables-restore` when `chainsSeen` (the chains of a recent read of the rules, from
    /// ``ensureBase()``) is right about the tag's chain, in two when not.
    ///
    /// Either batch fails as a whole if it does not fit (`-N` of a chain that exists, a rule for
    /// one that does not), so trying one and then the other needs no read of the rules; the lock
    /// keeps every other kiln out between the two.
    public func add(id: String, address: String, tag: String, chainsSeen: Set<String>? = nil) async throws {
        let chain = tagChain(tag)
        let rules = sandboxRules(id: id, address: address, tag: tag)
        let joining = ["*filter"] + rules + ["COMMIT"]
        // Made, closed with its DROP and given the sandbox's rules in one batch.
        let creating = ["*filter", "-N \(chain)", "-A \(chain) -j DROP"] + rules + ["COMMIT"]
        // A snapshot's first sandbox (every one-shot `kiln run`'s) finds no chain for its tag.
        let chainIsNew = chainsSeen.map { !$0.contains(chain) } ?? false
        try await locked {
            do {
                try await restore(chainIsNew ? creating : joining)
            } catch let first {
                do {
                    try await restore(chainIsNew ? joining : creating)
                } catch let second {
                    // Both failed: the error that counts is the one of the batch that fit the chain.
                    let exists = Self.chains(in: try await save(table: "filter")).contains(chain)
                    throw exists == chainIsNew ? second : first
                }
            }
        }
    }

    /// Removes sandbox `id`'s rules (whichever are there) and its tag's chain once empty.
    public func remove(id: String) async throws {
        try await removeRules(of: [id])
    }

    /// Removes the rules of every id in `ids` and the tag chains left empty, in one
    /// `iptables-restore`; returns the rules removed.
    @discardableResult
    public func removeRules(of ids: Set<String>) async throws -> [String] {
        guard !ids.isEmpty else { return [] }
        return try await locked {
            let filter = try await save(table: "filter")
            let present = Self.rules(in: filter, for: ids)
            let remaining = Set(filter.split(separator: "\n").map(String.init)).subtracting(present)
            // A tag chain whose last sandbox goes holds only its DROP afterwards.
            let empty = Self.chains(in: filter).filter { chain in
                chain.hasPrefix(tagChainPrefix) && remaining.filter { $0.hasPrefix("-A \(chain) ") } == ["-A \(chain) -j DROP"]
                    && !remaining.contains { $0.hasSuffix("-j \(chain)") }
            }
            guard !present.isEmpty || !empty.isEmpty else { return [] }
            try await restore(
                ["*filter"] + present.map { "-D " + $0.dropFirst(3) } + empty.map { "-F \($0)" } + empty.map { "-X \($0)" } + ["COMMIT"])
            return present
        }
    }

    // MARK: reading the rules

    /// Every per-sandbox rule of this network as `-A ...` lines, with the id it belongs to.
    public func sandboxRules() async throws -> [(id: String, rule: String)] {
        let filter = try await save(table: "filter")
        return filter.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("-A \(isolationChain) ") || line.hasPrefix("-A \(tagChainPrefix)"),
                let id = Self.commentID(String(line))
            else { return nil }
            return (id, String(line))
        }
    }

    /// Every rule of this network, network-wide and per sandbox (for leak checks).
    public func allRules() async throws -> [String] {
        let filter = try await save(table: "filter")
        let nat = try await save(table: "nat")
        let filter6 = try await save(table: "filter", ipv6: true)
        let names = [inputChain, forwardChain, isolationChain, natChain]
        return (filter + nat + filter6).split(separator: "\n").map(String.init).filter { line in
            guard line.hasPrefix("-A ") else { return false }
            let chain = line.dropFirst(3).prefix { $0 != " " }
            return names.contains(String(chain)) || chain.hasPrefix(tagChainPrefix) || line.hasSuffix("-j \(inputChain)")
                || line.hasSuffix("-j \(forwardChain)") || line.hasSuffix("-j \(natChain)")
        }
    }

    static func commentID(_ line: String) -> String? {
        guard let range = line.range(of: "--comment \"kiln:") ?? line.range(of: "--comment kiln:") else { return nil }
        let rest = line[range.upperBound...]
        return String(rest.prefix { $0 != "\"" && $0 != " " })
    }

    static func rules(in save: String, for ids: Set<String>) -> [String] {
        save.split(separator: "\n").compactMap { line in
            guard let id = commentID(String(line)), ids.contains(id) else { return nil }
            return String(line)
        }
    }

    static func chains(in save: String) -> [String] {
        save.split(separator: "\n").compactMap { line in
            guard line.hasPrefix(":") else { return nil }
            return String(line.dropFirst().prefix { $0 != " " })
        }
    }

    // MARK: running iptables

    /// What `iptables-save` prints for `table` (nil: every table, in one call).
    func save(table: String?, ipv6: Bool = false) async throws -> String {
        let tool = ipv6 ? "ip6tables-save" : "iptables-save"
        let output = try await Subprocess.run(Self.tool(tool), table.map { ["-t", $0] } ?? [], environment: Self.environment)
        guard output.status.isSuccess else {
            throw KilnError(
                .runtimeFailed, "\(tool)\(table.map { " -t \($0)" } ?? "") \(output.status)", action: "reading kiln's network rules",
                details: [output.stderr])
        }
        return output.stdout
    }

    func restore(_ lines: [String], ipv6: Bool = false) async throws {
        let tool = ipv6 ? "ip6tables-restore" : "iptables-restore"
        let output = try await Subprocess.run(
            Self.tool(tool), ["-w", "5", "--noflush"], environment: Self.environment, input: lines.joined(separator: "\n") + "\n")
        guard output.status.isSuccess else {
            throw KilnError(
                .runtimeFailed, "\(tool) \(output.status)", action: "changing kiln's network rules (bridge \(bridge))",
                details: output.stderr.split(separator: "\n").map(String.init) + lines)
        }
    }

    static let environment = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    static func tool(_ name: String) throws -> String {
        for directory in ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"]
        where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        throw KilnError(.toolMissing, "\(name) is not installed", hint: "apt-get install iptables")
    }

    /// Runs `body` holding an exclusive `flock` on ``lockPath`` (taken on a dedicated thread).
    func locked<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        let path = lockPath
        let fd = try await onDedicatedThread { () throws -> Int32 in
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw KilnError(.systemCall, "could not open the lock file \(path): \(String(cString: strerror(errno)))") }
            while flock(fd, LOCK_EX) != 0 {
                if errno != EINTR {
                    close(fd)
                    throw KilnError(.systemCall, "flock of \(path) failed: \(String(cString: strerror(errno)))")
                }
            }
            return fd
        }
        defer { close(fd) }
        return try await body()
    }
}

/// A set of strings behind a lock, shared by all copies of a value type.
final class LockedSet: @unchecked Sendable {
    private let lock = NSLock()
    private var members: Set<String> = []

    func contains(_ member: String) -> Bool { lock.withLock { members.contains(member) } }
    func insert(_ member: String) { _ = lock.withLock { members.insert(member) } }
    func remove(_ member: String) { _ = lock.withLock { members.remove(member) } }
}
