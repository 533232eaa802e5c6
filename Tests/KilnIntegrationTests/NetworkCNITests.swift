import Foundation
import KilnNetwork
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Integration {
    /// kiln's network with Debian's CNI plugins (/usr/lib/cni), real namespaces and iptables.
    @Suite("network: CNI plugins, pool, isolation, garbage collection", .serialized)
    struct NetworkCNITests {
        @Test func attachGivesTheNamespaceAnAddressARouteAndDNSAndDetachTakesThemAway() async throws {
            try await withNetwork { bed in
                let attachment = try await bed.sandbox("web-1", tag: "web")
                #expect(attachment.network == "kiln")
                #expect(attachment.interface == "eth0")
                let prefix = String(bed.configuration.subnet.dropLast(4))  // "10.213.X."
                #expect(attachment.address.hasPrefix(prefix) && attachment.address.hasSuffix("/24"))
                #expect(attachment.gateway == prefix + "1")
                #expect(attachment.resolvConf == "nameserver 10.213.0.53\nsearch kiln.test\n")
                #expect(attachment.hostInterface?.hasPrefix("veth") == true)
                #expect(FileManager.default.fileExists(atPath: "\(bed.state)/cni/kiln.conflist"))

                let addresses = try await inNamespace(attachment.namespacePath, ["/usr/sbin/ip", "-4", "-o", "addr", "show", "eth0"])
                #expect(addresses.stdout.contains("inet \(attachment.address)"))
                let routes = try await inNamespace(attachment.namespacePath, ["/usr/sbin/ip", "-4", "route"])
                #expect(routes.stdout.contains("default via \(prefix)1 dev eth0"))
                // The host end is on the bridge, the bridge has the gateway address.
                #expect(try await CNINetwork.interfaces(onBridge: bed.configuration.bridge) == [attachment.hostInterface!])
                let bridge = try await Subprocess.run("/usr/sbin/ip", ["-4", "-o", "addr", "show", bed.configuration.bridge])
                #expect(bridge.stdout.contains("inet \(prefix)1/24"))

                try await bed.network.check(attachment)
                let usage = try await bed.network.usage()
                #expect(usage.veths.count == 1 && usage.addresses.count == 1 && usage.rules.count == 2 && usage.cachedIDs == ["web-1"], "\(usage)")

                try await bed.network.detach(attachment)
                #expect(try await bed.network.usage().isEmpty)
                // CHECK now fails, with the plugin's own message.
                let error = await #expect(throws: KilnError.self) { try await bed.network.check(attachment) }
                #expect(error?.action.contains("CNI CHECK of 'web-1'") == true)
                NetworkNamespace.remove(at: attachment.namespacePath)
            }
        }

        /// The figures of docs/network.md: attach and detach one namespace at a time, with kiln's
        /// one masquerade rule (the default) and with the bridge plugin's per-sandbox `ipMasq`.
        @Test func addAndDelTimesPerNamespace() async throws {
            try await withNetwork { bed in
                let rounds = 12
                var attach: [Duration] = [], detach: [Duration] = []
                let clock = ContinuousClock()
                var attachments: [NetworkAttachment] = []
                for index in 0..<rounds {
                    let path = try bed.makeNamespace("m-\(index)")
                    let start = clock.now
                    attachments.append(try await bed.network.attach(namespacePath: path, id: "m-\(index)", tag: "bench"))
                    attach.append(start.duration(to: clock.now))
                }
                for attachment in attachments {
                    let start = clock.now
                    try await bed.network.detach(attachment)
                    detach.append(start.duration(to: clock.now))
                    NetworkNamespace.remove(at: attachment.namespacePath)
                }
                // The plugins alone (kiln's conflist, no kiln rules), and with the bridge plugin's
                // per-sandbox masquerade (ipMasq: true) instead of kiln's one rule.
                var variants: [(String, [Duration], [Duration])] = []
                for ipMasq in [false, true] {
                    var json = try #require(JSONSerialization.jsonObject(with: bed.network.list.json) as? [String: Any])
                    var plugins = try #require(json["plugins"] as? [[String: Any]])
                    plugins[0]["ipMasq"] = ipMasq
                    json["plugins"] = plugins
                    json["name"] = "kiln-bench-\(ipMasq)"
                    let plain = CNINetwork(
                        list: try CNIConfigurationList(json: JSONSerialization.data(withJSONObject: json)), directory: "\(bed.state)/cni")
                    var adds: [Duration] = [], dels: [Duration] = []
                    for index in 0..<rounds {
                        let path = try bed.makeNamespace("p-\(ipMasq)-\(index)")
                        var start = clock.now
                        let attachment = try await plain.attach(namespacePath: path, id: "p-\(index)", tag: "bench")
                        adds.append(start.duration(to: clock.now))
                        start = clock.now
                        try await plain.detach(attachment)
                        dels.append(start.duration(to: clock.now))
                        NetworkNamespace.remove(at: path)
                    }
                    try? FileManager.default.removeItem(atPath: "\(bed.state)/cni/ipam/kiln-bench-\(ipMasq)")
                    variants.append(
                        (ipMasq ? "bridge plugin with ipMasq (a NAT chain per sandbox)" : "bridge plugin alone (kiln's conflist)", adds, dels))
                }
                print(
                    "network figures (\(rounds) namespaces each, load average \((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.prefix(14) ?? "?")):"
                )
                print(
                    "  kiln attach/detach (plugins + isolation rules, one MASQUERADE rule): attach \(formatted(summary(attach))); detach \(formatted(summary(detach)))"
                )
                for (label, adds, dels) in variants {
                    print("  \(label): ADD \(formatted(summary(adds))); DEL \(formatted(summary(dels)))")
                }
                #expect(summary(attach).median < 500 && summary(detach).median < 500)
                #expect(try await bed.network.usage().isEmpty)
                let nat = try await Subprocess.run("/usr/sbin/iptables-save", ["-t", "nat"]).stdout
                #expect(!nat.contains("kiln-bench"), "the plugin removed its per-sandbox masquerade chains")
            }
        }

        @Test func thePoolHandsOutAttachedNamespacesAtOnceAndDrainsToNothing() async throws {
            try await withNetwork { bed in
                let pool = PreparedNamespacePool(network: bed.network, tag: "hello", capacity: 3, namespaceDirectory: bed.namespaces)
                await pool.start()
                let deadline = ContinuousClock.now + .seconds(20)
                while await pool.readyCount < 3, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
                #expect(await pool.readyCount == 3)

                var takes: [Duration] = []
                var taken: [NetworkAttachment] = []
                for _ in 0..<3 {
                    let start = ContinuousClock.now
                    taken.append(try await pool.take())
                    takes.append(start.duration(to: .now))
                }
                print("pool take() of a ready namespace: \(formatted(summary(takes)))")
                #expect(summary(takes).max < 5, "a ready namespace is handed out without any plugin call")
                for attachment in taken {
                    #expect(NetworkNamespace.isPinned(attachment.namespacePath))
                    let addresses = try await inNamespace(attachment.namespacePath, ["/usr/sbin/ip", "-4", "-o", "addr", "show", "eth0"])
                    #expect(addresses.stdout.contains("inet \(attachment.address)"))
                    try await bed.network.check(attachment)
                }
                #expect(Set(taken.map(\.address)).count == 3)
                for attachment in taken { await pool.release(attachment) }
                await pool.drain()
                let statistics = await pool.statistics
                #expect(statistics.hits == 3 && statistics.failures == 0, "\(statistics)")
                #expect(statistics.prepared == statistics.released)
                #expect(try await bed.network.usage().isEmpty)
                #expect(((try? FileManager.default.contentsOfDirectory(atPath: bed.namespaces)) ?? []).isEmpty, "the pool's namespace pins are gone")
            }
        }

        /// Sandboxes of one snapshot reach each other and the outside (masqueraded); not the
        /// host's services (refused), not the sandboxes of another snapshot.
        @Test func sandboxesReachTheirPeersAndEgressButNotTheHostOrOtherSnapshots() async throws {
            try await withNetwork { bed in
                let a1 = try await bed.sandbox("a-1", tag: "snap-a")
                let a2 = try await bed.sandbox("a-2", tag: "snap-a")
                let b1 = try await bed.sandbox("b-1", tag: "snap-b")
                let gateway = try #require(a1.gateway)
                let port = 8080
                let hostPort = Int.random(in: 20000...40000)
                var servers = [
                    try await ProbeServer.start(in: a2.namespacePath, port: port), try await ProbeServer.start(in: a1.namespacePath, port: port),
                ]
                servers.append(try await ProbeServer.start(in: nil, port: hostPort))
                // An "upstream" host beyond the host (a namespace of ours behind a routed veth).
                let upstream = try await Upstream.make()
                defer {
                    for server in servers { server.stop() }
                    upstream.remove()
                }
                servers.append(try await ProbeServer.start(in: upstream.namespacePath, port: port))

                #expect(try await probe(from: a1.namespacePath, a2.ip, port) == "ok peer=\(a1.ip)", "same snapshot: reachable")
                #expect(try await probe(from: b1.namespacePath, a2.ip, port) == "timeout", "other snapshot: dropped")
                #expect(try await probe(from: b1.namespacePath, a1.ip, port) == "timeout", "other snapshot: dropped")
                #expect(try await probe(from: nil, "127.0.0.1", hostPort) == "ok peer=127.0.0.1", "the host's service runs")
                #expect(try await probe(from: a1.namespacePath, gateway, hostPort) == "refused", "the host's services are refused")
                #expect(try await probe(from: b1.namespacePath, gateway, hostPort) == "refused")
                // The sandbox's 127.0.0.1 is its own loopback, never the host's.
                #expect(try await probe(from: a1.namespacePath, "127.0.0.1", hostPort) == "refused")
                // Broadcast and multicast do not cross between sandboxes either (a one-way leak
                // otherwise); the sandbox's own unicast to a same-snapshot peer still does.
                let listeners = [b1, a2].map { sandbox in
                    Task { try await inNamespace(sandbox.namespacePath, ["/usr/bin/python3", netProbe, "udp-listen", "5353", "2"]).stdout }
                }
                try await Task.sleep(for: .milliseconds(400))
                let broadcast = String(bed.configuration.subnet.dropLast(4)) + "255"
                for target in [broadcast, "255.255.255.255", "224.0.0.251", a2.ip] {
                    let sent = try await inNamespace(a1.namespacePath, ["/usr/bin/python3", netProbe, "udp-send", target, "5353", "to-\(target)"])
                    #expect(sent.stdout == "sent\n", "\(sent.stderr)")
                }
                #expect(try await listeners[0].value == "nothing\n", "snapshot b hears no broadcast from snapshot a")
                #expect(try await listeners[1].value == "got to-\(a2.ip) from \(a1.ip)\n", "only the unicast reaches the peer")

                // IPv6: every sandbox has a link-local address on eth0 (and the host one on the
                // bridge); bridged IPv6 is dropped, or it would pass the IPv4 rules by.
                let a2LinkLocal = try #require(try await linkLocalAddress(in: a2.namespacePath, interface: "eth0"))
                #expect(try await probe(from: b1.namespacePath, "\(a2LinkLocal)%eth0", port) == "timeout", "other snapshot over IPv6: dropped")
                if let hostLinkLocal = try await linkLocalAddress(in: nil, interface: bed.configuration.bridge) {
                    #expect(try await probe(from: a1.namespacePath, "\(hostLinkLocal)%eth0", hostPort) == "timeout", "the host over IPv6: dropped")
                }
                // Egress goes out masqueraded: the upstream sees the host's address, not the sandbox's.
                #expect(try await probe(from: b1.namespacePath, upstream.address, port) == "ok peer=\(upstream.hostAddress)")

                // Sandboxes come and go: the rules of the ones left stay right.
                try await bed.remove(a1)
                let b2 = try await bed.sandbox("b-2", tag: "snap-b")
                #expect(try await probe(from: b1.namespacePath, a2.ip, port) == "timeout")
                #expect(try await probe(from: a2.namespacePath, b2.ip, 9) == "timeout", "a-2 cannot reach snapshot b's new sandbox")
                for attachment in [a2, b1, b2] { try await bed.remove(attachment) }
                #expect(try await bed.network.usage().isEmpty)
                let filter = try await Subprocess.run("/usr/sbin/iptables-save", ["-t", "filter"]).stdout
                #expect(!filter.contains(bed.network.firewall!.tagChainPrefix), "the snapshots' chains go with their last sandbox")
            }
        }

        /// A kiln killed with sandboxes attached: `garbageCollect(liveIDs:)` finds their addresses,
        /// rules and veths (even with no cached result) and removes them, leaving the live one.
        @Test func garbageCollectionRemovesWhatBelongsToNoLiveSandbox() async throws {
            try await withNetwork { bed in
                let live = try await bed.sandbox("live-1", tag: "s")
                let dead = try await bed.sandbox("dead-1", tag: "s")
                let orphan = try await bed.sandbox("dead-2", tag: "t")
                // dead-2's kiln died between ADD and caching the result: only the address file,
                // the rules and the veth tell of it.
                try FileManager.default.removeItem(atPath: "\(bed.state)/cni/results/kiln-dead-2.json")

                let before = try await bed.network.usage()
                #expect(before.veths.count == 3 && before.addresses.count == 3 && before.rules.count == 6)
                let leftovers = try await bed.network.leftovers(liveIDs: [live.id])
                #expect(leftovers.contains("cached CNI result of 'dead-1'"))
                #expect(leftovers.contains("address \(dead.ip) held for 'dead-1'"))
                #expect(leftovers.contains("address \(orphan.ip) held for 'dead-2'"))
                #expect(leftovers.contains("veth \(orphan.hostInterface!) on the bridge"))
                #expect(leftovers.filter { $0.hasPrefix("iptables rule") }.count == 4)

                let removed = try await bed.network.garbageCollect(liveIDs: [live.id])
                #expect(removed.contains("released 'dead-1' (CNI DEL)"))
                #expect(removed.contains("released 'dead-2' (CNI DEL)"))
                #expect(removed.contains("deleted veth \(orphan.hostInterface!)"))
                #expect(try await bed.network.leftovers(liveIDs: [live.id]) == [])
                let after = try await bed.network.usage()
                #expect(
                    after.veths == [live.hostInterface!] && after.addresses == [live.ip: live.id] && after.rules.count == 2
                        && after.cachedIDs == [live.id], "\(after)")
                try await bed.network.check(live)
                try await bed.remove(live)
                NetworkNamespace.remove(at: dead.namespacePath)
                NetworkNamespace.remove(at: orphan.namespacePath)
            }
        }

        @Test func aUsersNetworkIsSelectedByNameAndAMissingPluginIsNamed() async throws {
            let state = "/tmp/kiln-nettest-\(getpid())-user"
            defer { try? FileManager.default.removeItem(atPath: state) }
            try FileManager.default.createDirectory(atPath: "\(state)/cni", withIntermediateDirectories: true)
            let ipam = #"{"type":"host-local","dataDir":"\#(state)/cni/ipam","ranges":[[{"subnet":"10.213.251.0/29"}]]}"#
            try #"{"cniVersion":"1.0.0","name":"lab","plugins":[{"type":"ptp","ipam":\#(ipam)}]}"#
                .write(toFile: "\(state)/cni/lab.conflist", atomically: true, encoding: .utf8)
            try #"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"ptp","ipam":\#(ipam)},{"type":"no-such-plugin"}]}"#
                .write(toFile: "\(state)/cni/broken.conflist", atomically: true, encoding: .utf8)
            try NetworkNamespace.create(at: "\(state)/ns")
            defer { NetworkNamespace.remove(at: "\(state)/ns") }

            // A point-to-point network of the user's: kiln runs its plugins, installs no firewall.
            let lab = try CNINetwork.named("lab", stateDirectory: state)
            #expect(lab.firewall == nil)
            let attachment = try await lab.attach(namespacePath: "\(state)/ns", id: "u1", tag: "x")
            #expect(attachment.network == "lab")
            #expect(attachment.address.hasPrefix("10.213.251.") && attachment.address.hasSuffix("/29"))
            let addresses = try await inNamespace("\(state)/ns", ["/usr/sbin/ip", "-4", "-o", "addr", "show", "eth0"])
            #expect(addresses.stdout.contains("inet \(attachment.address)"))
            try await lab.check(attachment)
            #expect(try await lab.usage().addresses == [attachment.ip: "u1"])
            try await lab.detach(attachment)
            #expect(try await lab.usage().isEmpty)

            let broken = try CNINetwork.named("broken", stateDirectory: state)
            let error = await #expect(throws: KilnError.self) { _ = try await broken.attach(namespacePath: "\(state)/ns", id: "u2", tag: "x") }
            #expect(error?.code == .toolMissing)
            #expect(error?.message.contains("'no-such-plugin'") == true)
            #expect(error?.action == "attaching 'u2' to the network 'broken'")
            // The ptp plugin's ADD was undone: no address is held, no interface is left.
            #expect(try await broken.usage().isEmpty)
            let links = try await inNamespace("\(state)/ns", ["/usr/sbin/ip", "-o", "link"])
            #expect(!links.stdout.contains("eth0"))
        }
    }
}

/// A namespace of the test's own behind a routed veth pair with TEST-NET-2 addresses
/// (198.51.100.0/30): the stand-in for "the outside" that egress reaches.
struct Upstream {
    let name: String
    let hostInterface: String
    var namespacePath: String { "/var/run/netns/\(name)" }
    let hostAddress = "198.51.100.1"
    let address = "198.51.100.2"

    static func make() async throws -> Upstream {
        let suffix = String(UInt32.random(in: 0...0xffffff), radix: 16)
        let upstream = Upstream(name: "kiln-up-\(suffix)", hostInterface: "kup\(suffix)")
        let ip = "/usr/sbin/ip"
        for command in [
            ["netns", "add", upstream.name],
            ["link", "add", upstream.hostInterface, "type", "veth", "peer", "name", "up0", "netns", upstream.name],
            ["addr", "add", "\(upstream.hostAddress)/30", "dev", upstream.hostInterface],
            ["link", "set", upstream.hostInterface, "up"],
            ["-n", upstream.name, "link", "set", "lo", "up"],
            ["-n", upstream.name, "addr", "add", "\(upstream.address)/30", "dev", "up0"],
            ["-n", upstream.name, "link", "set", "up0", "up"],
            ["-n", upstream.name, "route", "add", "default", "via", upstream.hostAddress],
        ] {
            let output = try await Subprocess.run(ip, command)
            guard output.status.isSuccess else {
                upstream.remove()
                throw KilnError(.runtimeFailed, "ip \(command.joined(separator: " ")): \(output.stderr)")
            }
        }
        return upstream
    }

    func remove() {
        _ = try? Subprocess.run("/usr/sbin/ip", ["link", "del", hostInterface])
        _ = try? Subprocess.run("/usr/sbin/ip", ["netns", "del", name])
    }
}
