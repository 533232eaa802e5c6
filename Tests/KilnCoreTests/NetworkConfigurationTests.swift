import Foundation
import KilnSystem
import Testing

@testable import KilnNetwork

/// kiln's network configuration and the CNI protocol, with stand-in plugins (shell scripts): no
/// root, no real network.
@Suite("network: configuration and CNI protocol")
struct NetworkConfigurationTests {
    @Test func defaultNetworkIsABridgeWithHostLocalAddressesUnderKilnsState() throws {
        let configuration = try NetworkConfiguration.kilnDefault(environment: [:], hostResolvConf: "/nonexistent")
        #expect(configuration.subnet == "10.213.0.0/16")
        #expect(configuration.bridge == "kiln0")
        #expect(try configuration.gatewayAddress() == "10.213.0.1")
        let list = try configuration.conflist(ipamDirectory: "/state/cni/ipam")
        #expect(list.name == "kiln")
        #expect(list.pluginTypes == ["bridge"])
        #expect(list.bridge == "kiln0")
        #expect(list.ipamDirectory == "/state/cni/ipam")
        // Made without reading its JSON back: what a reader of the written file gets is the same.
        #expect(try sameList(CNIConfigurationList(json: list.json), list))
        let plugin = try #require(JSONSerialization.jsonObject(with: list.pluginConfiguration(0, previousResult: nil)) as? [String: Any])
        #expect(plugin["name"] as? String == "kiln")
        #expect(plugin["cniVersion"] as? String == "1.0.0")
        #expect(plugin["isGateway"] as? Bool == true)
        // kiln masquerades the whole subnet with one rule instead of a chain per sandbox.
        #expect(plugin["ipMasq"] as? Bool == false)
        let ipam = try #require(plugin["ipam"] as? [String: Any])
        #expect(ipam["type"] as? String == "host-local")
        let ranges = try #require(ipam["ranges"] as? [[[String: String]]])
        #expect(ranges == [[["subnet": "10.213.0.0/16", "gateway": "10.213.0.1"]]])
        #expect(plugin["dns"] == nil && plugin["mtu"] == nil)

        // With every optional field: the same as read back, and each where a plugin looks.
        let full = NetworkConfiguration(
            name: "lab", bridge: "lab0", subnet: "10.9.0.0/24", gateway: "10.9.0.254",
            dns: DNSConfiguration(nameservers: ["10.9.0.53"], search: ["lab.test"], options: ["ndots:1"]), mtu: 1400)
        let fullList = try full.conflist(ipamDirectory: "/state/cni/ipam")
        #expect(try sameList(CNIConfigurationList(json: fullList.json), fullList))
        let fullPlugin = try #require(JSONSerialization.jsonObject(with: fullList.pluginConfiguration(0, previousResult: nil)) as? [String: Any])
        #expect(fullPlugin["mtu"] as? Int == 1400)
        #expect(fullPlugin["bridge"] as? String == "lab0")
        let dns = try #require(fullPlugin["dns"] as? [String: [String]])
        #expect(dns == ["nameservers": ["10.9.0.53"], "search": ["lab.test"], "options": ["ndots:1"]])
        let fullRanges = (fullPlugin["ipam"] as? [String: Any])?["ranges"] as? [[[String: String]]]
        #expect(fullRanges == [[["subnet": "10.9.0.0/24", "gateway": "10.9.0.254"]]])
    }

    /// The same list: name, version, plugin types and the same JSON document (keys in any order).
    func sameList(_ read: CNIConfigurationList, _ made: CNIConfigurationList) throws -> Bool {
        let documents = try [read.json, made.json].map { try JSONSerialization.jsonObject(with: $0) as? NSDictionary }
        return read.name == made.name && read.cniVersion == made.cniVersion && read.pluginTypes == made.pluginTypes
            && documents[0] != nil && documents[0] == documents[1]
    }

    @Test func environmentOverridesSubnetBridgeAndDNS() throws {
        let configuration = try NetworkConfiguration.kilnDefault(environment: [
            "KILN_SUBNET": "10.214.7.0/24", "KILN_BRIDGE": "kt0", "KILN_DNS": "10.214.7.53, 10.214.7.54",
        ])
        #expect(configuration.subnet == "10.214.7.0/24")
        #expect(configuration.bridge == "kt0")
        #expect(try configuration.gatewayAddress() == "10.214.7.1")
        #expect(configuration.dns.resolvConf == "nameserver 10.214.7.53\nnameserver 10.214.7.54\n")
    }

    @Test func badSubnetsAndNamesAreRefused() {
        for subnet in ["10.213.0.0", "10.213.0.0/33", "10.213.0.1/16", "300.1.0.0/16", "fd00::/64", "10.213.0.0/31"] {
            #expect(throws: KilnError.self, "\(subnet)") { try NetworkConfiguration(subnet: subnet).validate() }
        }
        #expect(throws: KilnError.self) { try NetworkConfiguration(bridge: "a-bridge-name-too-long").validate() }
        #expect(throws: KilnError.self) { try NetworkConfiguration(name: "../etc").validate() }
        #expect(throws: KilnError.self) { try CNINetwork.validateID("a/b") }
        for bad in ["", "-leading-dash", ".hidden", "tab\there", "naïve", "a b"] {
            #expect(throws: KilnError.self, "\(bad)") { try NetworkConfiguration(name: bad).validate() }
            #expect(throws: KilnError.self, "\(bad)") { try CNINetwork.validateID(bad) }
        }
        for bad in ["", "br.0", "br0123456789abcd", "brü"] {
            #expect(throws: KilnError.self, "\(bad)") { try NetworkConfiguration(bridge: bad).validate() }
            #expect(throws: KilnError.self, "\(bad)") { try NetworkConfiguration(interface: bad).validate() }
        }
        // The longest names Linux takes, and every character each field allows.
        #expect(throws: Never.self) {
            try NetworkConfiguration(name: "Kiln_net.2-b", bridge: "br0123456789abc", interface: "Eth_0-x").validate()
        }
        #expect(throws: Never.self) { try CNINetwork.validateID("9Hello_copy.1-ab") }
    }

    @Test func hostLoopbackNameServersAreLeftOut() {
        let dns = DNSConfiguration.fromHost(
            resolvConf:
                "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nsearch example.test corp.test\noptions edns0 ndots:2\n"
        )
        #expect(dns.nameservers == ["10.255.255.53"])
        #expect(dns.resolvConf == "nameserver 10.255.255.53\nsearch example.test corp.test\noptions edns0 ndots:2\n")
        #expect(DNSConfiguration.fromHost(resolvConf: "nameserver 127.0.0.1\n").resolvConf == "")
    }

    @Test func aUsersNetworkIsFoundByName() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try #"{"cniVersion":"0.4.0","name":"other","plugins":[{"type":"bridge","bridge":"br9"},{"type":"portmap"}]}"#
            .write(toFile: "\(directory)/10-other.conflist", atomically: true, encoding: .utf8)
        try #"{"cniVersion":"1.0.0","name":"single","type":"ptp","ipam":{"type":"host-local","dataDir":"/x"}}"#
            .write(toFile: "\(directory)/20-single.conf", atomically: true, encoding: .utf8)
        try "not json".write(toFile: "\(directory)/30-broken.conflist", atomically: true, encoding: .utf8)
        let (other, path) = try CNIConfigurationList.find("other", in: ["/nonexistent", directory])
        #expect(path == "\(directory)/10-other.conflist")
        #expect(other.pluginTypes == ["bridge", "portmap"])
        #expect(other.cniVersion == "0.4.0")
        #expect(other.bridge == "br9")
        let single = try CNIConfigurationList.find("single", in: [directory]).list
        #expect(single.pluginTypes == ["ptp"])
        #expect(single.ipamDirectory == "/x")
        let error = #expect(throws: KilnError.self) { try CNIConfigurationList.find("missing", in: [directory]) }
        #expect(error?.message.contains("no CNI network named 'missing'") == true)
    }

    @Test func pluginsGetTheCNIEnvironmentAndTheirConfigurationOnStdin() async throws {
        let plugins = try FakePlugins()
        defer { plugins.remove() }
        try plugins.add(
            "recorder",
            script: """
                env | grep -E '^CNI_' | sort > "$LOG.env"
                cat > "$LOG.stdin"
                echo '{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}]}'
                """)
        let call = CNIPluginCall(
            .add, containerID: "hello-1a2b", namespacePath: "/run/netns/x", interface: "eth0", pluginDirectories: ["/nonexistent", plugins.directory])
        let output = try await call.run(type: "recorder", configuration: Data(#"{"type":"recorder","name":"n"}"#.utf8))
        #expect(try JSONDecoder().decode(CNIResult.self, from: output).ips?.first?.address == "10.1.2.3/24")
        let environment = try String(contentsOfFile: "\(plugins.log).env", encoding: .utf8)
        #expect(
            environment
                == "CNI_COMMAND=ADD\nCNI_CONTAINERID=hello-1a2b\nCNI_IFNAME=eth0\nCNI_NETNS=/run/netns/x\nCNI_PATH=/nonexistent:\(plugins.directory)\n"
        )
        #expect(try String(contentsOfFile: "\(plugins.log).stdin", encoding: .utf8) == #"{"type":"recorder","name":"n"}"#)
    }

    @Test func aPluginsErrorObjectBecomesAKilnErrorWithItsMessageDetailsAndAFix() async throws {
        let plugins = try FakePlugins()
        defer { plugins.remove() }
        try plugins.add(
            "failing",
            script: """
                cat > /dev/null
                echo '{"cniVersion":"1.0.0","code":999,"msg":"failed to allocate for range 0: no IP addresses available in range set: 10.9.0.2-10.9.0.6","details":"range set exhausted"}'
                exit 1
                """)
        try plugins.add("garbage", script: "echo 'panic: runtime error' >&2; exit 2")
        let call = CNIPluginCall(.add, containerID: "c1", namespacePath: "/run/netns/x", interface: "eth0", pluginDirectories: [plugins.directory])
        let error = await #expect(throws: KilnError.self) { _ = try await call.run(type: "failing", configuration: Data("{}".utf8)) }
        #expect(error?.code == .runtimeFailed)
        #expect(error?.message == "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.2-10.9.0.6")
        #expect(error?.details == ["CNI error code 999: plugin-specific error", "range set exhausted"])
        #expect(error?.hint?.contains("kiln gc") == true)
        #expect(error?.action == "CNI ADD of 'c1' (plugin failing)")

        let crash = await #expect(throws: KilnError.self) { _ = try await call.run(type: "garbage", configuration: Data("{}".utf8)) }
        #expect(crash?.message == "the plugin exited with status 2 without a CNI error object")
        #expect(crash?.details == ["panic: runtime error"])

        try plugins.add("hung", script: "sleep 60")
        var impatient = call
        impatient.timeoutSeconds = 1
        let start = ContinuousClock.now
        let hung = await #expect(throws: KilnError.self) { _ = try await impatient.run(type: "hung", configuration: Data("{}".utf8)) }
        #expect(hung?.message == "the plugin did not finish within 1 s and was stopped")
        #expect(start.duration(to: .now) < .seconds(10))

        let missing = await #expect(throws: KilnError.self) { _ = try await call.run(type: "bridge", configuration: Data("{}".utf8)) }
        #expect(missing?.code == .toolMissing)
        #expect(missing?.hint?.contains("containernetworking-plugins") == true)
    }

    /// A user's two-plugin network: ADD in order with each previous result, DEL in reverse with
    /// the ADD's result, the result cached for garbage collection and forgotten on detach.
    @Test func chainedPluginsRunInOrderAndGarbageCollectionDeletesTheForgotten() async throws {
        let plugins = try FakePlugins()
        defer { plugins.remove() }
        for name in ["first", "second"] {
            try plugins.add(
                name,
                script: """
                    input=$(cat)
                    prev=$(printf '%s' "$input" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("prevResult",{}).get("ips",[{}])[0].get("address","none"))')
                    echo "\(name) $CNI_COMMAND $CNI_CONTAINERID prev=$prev netns=$CNI_NETNS" >> "$LOG"
                    if [ "$CNI_COMMAND" = ADD ]; then
                      if [ \(name) = first ]; then echo '{"cniVersion":"1.0.0","interfaces":[{"name":"br9"},{"name":"vethA"},{"name":"eth0","sandbox":"'$CNI_NETNS'"}],"ips":[{"interface":2,"address":"10.9.0.5/24","gateway":"10.9.0.1"}],"dns":{"nameservers":["10.9.0.53"]}}'
                      else printf '%s' "$input" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))'; fi
                    fi
                    """)
        }
        let state = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        try FileManager.default.createDirectory(atPath: "\(state)/cni", withIntermediateDirectories: true)
        try #"{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"first","bridge":"br9"},{"type":"second"}]}"#
            .write(toFile: "\(state)/cni/mine.conflist", atomically: true, encoding: .utf8)
        var network = try CNINetwork.named("mine", stateDirectory: state, searchDirectories: [])
        network.pluginDirectories = [plugins.directory]

        let attachment = try await network.attach(namespacePath: "/run/netns/a", id: "a", tag: "t")
        #expect(attachment.address == "10.9.0.5/24")
        #expect(attachment.gateway == "10.9.0.1")
        #expect(attachment.hostInterface == "vethA")
        #expect(attachment.resolvConf == "nameserver 10.9.0.53\n")
        _ = try await network.attach(namespacePath: "/run/netns/b", id: "b", tag: "t")
        #expect(Set(network.cachedAttachments().map(\.id)) == ["a", "b"])
        try await network.check(attachment)
        try await network.detach(attachment)
        #expect(network.cachedAttachments().map(\.id) == ["b"])
        // "b"'s kiln was killed: garbage collection finds it from the cached result and DELs it.
        #expect(try await network.leftovers(liveIDs: []) == ["cached CNI result of 'b'"])
        #expect(try await network.leftovers(liveIDs: ["b"]) == [])
        try await network.garbageCollect(liveIDs: [])
        #expect(network.cachedAttachments().isEmpty)

        let log = try String(contentsOfFile: plugins.log, encoding: .utf8).split(separator: "\n")
        // DEL of a namespace that is not pinned passes an empty CNI_NETNS, as the spec allows.
        #expect(
            log == [
                "first ADD a prev=none netns=/run/netns/a", "second ADD a prev=10.9.0.5/24 netns=/run/netns/a",
                "first ADD b prev=none netns=/run/netns/b", "second ADD b prev=10.9.0.5/24 netns=/run/netns/b",
                "first CHECK a prev=10.9.0.5/24 netns=/run/netns/a", "second CHECK a prev=10.9.0.5/24 netns=/run/netns/a",
                "second DEL a prev=10.9.0.5/24 netns=", "first DEL a prev=10.9.0.5/24 netns=",
                "second DEL b prev=10.9.0.5/24 netns=", "first DEL b prev=10.9.0.5/24 netns=",
            ])
    }

    /// On a user's network, garbage collection undoes only what kiln cached: an address another
    /// user of the same network holds in its IPAM directory is not kiln's to release.
    @Test func garbageCollectionOfAUsersNetworkTakesOnlyKilnsOwnAttachments() async throws {
        let plugins = try FakePlugins()
        defer { plugins.remove() }
        try plugins.add(
            "plug",
            script: """
                cat > /dev/null; echo "$CNI_COMMAND $CNI_CONTAINERID" >> "$LOG"
                [ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.5/24"}]}'
                exit 0
                """)
        let state = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        let ipam = "\(state)/shared-ipam"
        try FileManager.default.createDirectory(atPath: "\(ipam)/shared", withIntermediateDirectories: true)
        try "podman-1234\r\neth0".write(toFile: "\(ipam)/shared/10.9.0.77", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(state)/cni", withIntermediateDirectories: true)
        try #"{"cniVersion":"1.0.0","name":"shared","plugins":[{"type":"plug","bridge":"br9","ipam":{"type":"host-local","dataDir":"\#(ipam)"}}]}"#
            .write(toFile: "\(state)/cni/shared.conflist", atomically: true, encoding: .utf8)
        var network = try CNINetwork.named("shared", stateDirectory: state, searchDirectories: [])
        network.pluginDirectories = [plugins.directory]
        #expect(network.ipamAddresses() == ["10.9.0.77": "podman-1234"])

        _ = try await network.attach(namespacePath: "/run/netns/k", id: "kiln-1", tag: "t")
        _ = try await network.attach(namespacePath: "/run/netns/l", id: "kiln-2", tag: "t")
        #expect(CNINetwork.networksWithCachedAttachments(stateDirectory: state) == ["shared"])
        let removed = try await network.garbageCollect(liveIDs: ["kiln-2"])
        #expect(removed == ["released 'kiln-1' (CNI DEL)"])
        #expect(try String(contentsOfFile: plugins.log, encoding: .utf8) == "ADD kiln-1\nADD kiln-2\nDEL kiln-1\n")
        #expect(network.ipamAddresses() == ["10.9.0.77": "podman-1234"], "the other user's address stays")
        #expect(network.cachedAttachments().map(\.id) == ["kiln-2"])
        try await network.garbageCollect(liveIDs: [])
        #expect(CNINetwork.networksWithCachedAttachments(stateDirectory: state).isEmpty)
    }

    @Test func aFailedAddIsUndoneByTheDelOfThePluginsThatRan() async throws {
        let plugins = try FakePlugins()
        defer { plugins.remove() }
        try plugins.add(
            "good",
            script: """
                cat > /dev/null; echo "good $CNI_COMMAND" >> "$LOG"
                [ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.5/24"}]}'
                exit 0
                """)
        try plugins.add(
            "bad",
            script: """
                cat > /dev/null; echo "bad $CNI_COMMAND" >> "$LOG"
                echo '{"cniVersion":"1.0.0","code":7,"msg":"invalid configuration"}'; exit 1
                """)
        let list = try CNIConfigurationList(json: Data(#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"good"},{"type":"bad"}]}"#.utf8))
        let state = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        let network = CNINetwork(list: list, directory: state, pluginDirectories: [plugins.directory])
        let error = await #expect(throws: KilnError.self) { _ = try await network.attach(namespacePath: "/run/netns/x", id: "x", tag: "t") }
        #expect(error?.message == "invalid configuration")
        #expect(error?.details.first == "CNI error code 7: invalid network configuration")
        #expect(error?.action == "CNI ADD of 'x' (plugin bad)")
        #expect(try String(contentsOfFile: plugins.log, encoding: .utf8) == "good ADD\nbad ADD\ngood DEL\n")
        #expect(network.cachedAttachments().isEmpty)
    }

    /// The digest that lets a new kiln process skip rewriting the base rules: it covers the base
    /// chains and the jumps to them, ignores per-sandbox rules and counters, and changes with any
    /// base line (a flushed chain, a deleted jump).
    @Test func theBaseRulesDigestSeesEveryBaseLineAndNoSandbox() {
        let firewall = NetworkFirewall(bridge: "kiln0", subnet: "10.213.0.0/16", masquerade: true, lockPath: "/tmp/x/firewall.lock")
        #expect(firewall.fingerprintPath == "/tmp/x/firewall-kiln0.base")
        let base = """
            *filter
            :INPUT ACCEPT [10:20]
            :KILN-IN-kiln0 - [0:0]
            :KILN-ISO-kiln0 - [0:0]
            -A INPUT -i kiln0 -j KILN-IN-kiln0
            -A FORWARD -j KILN-FWD-kiln0
            -A KILN-IN-kiln0 -j REJECT --reject-with icmp-port-unreachable
            -A KILN-FWD-kiln0 -i kiln0 ! -o kiln0 -j ACCEPT
            COMMIT
            *nat
            -A POSTROUTING -j KILN-NAT-kiln0
            -A KILN-NAT-kiln0 -s 10.213.0.0/16 ! -d 10.213.0.0/16 -j MASQUERADE
            COMMIT
            """
        let v6 = "*filter\n-A INPUT -i kiln0 -j KILN-IN-kiln0\n-A KILN-IN-kiln0 -j DROP\nCOMMIT\n"
        let digest = firewall.baseFingerprint(ipv4: base, ipv6: v6)
        let withSandbox = base.replacingOccurrences(
            of: ":INPUT ACCEPT [10:20]", with: ":INPUT ACCEPT [99:999]\n-A KILN-ISO-kiln0 -d 10.213.0.7/32 -m comment --comment \"kiln:a\" -j X")
        #expect(firewall.baseFingerprint(ipv4: withSandbox, ipv6: v6) == digest, "sandboxes and counters are not part of it")
        let baseLines = [
            "-A FORWARD -j KILN-FWD-kiln0\n", "-A KILN-IN-kiln0 -j REJECT --reject-with icmp-port-unreachable\n", ":KILN-ISO-kiln0 - [0:0]\n",
        ]
        for line in baseLines {
            #expect(firewall.baseFingerprint(ipv4: base.replacingOccurrences(of: line, with: ""), ipv6: v6) != digest, "without \(line)")
        }
        #expect(firewall.baseFingerprint(ipv4: base, ipv6: "*filter\nCOMMIT\n") != digest, "IPv6 rules count too")
    }

    @Test func firewallRulesAreNamedPerBridgeTagAndSandbox() {
        let firewall = NetworkFirewall(bridge: "kiln0", subnet: "10.213.0.0/16", masquerade: true, lockPath: "/tmp/x")
        #expect(NetworkFirewall.hash("kiln0") == NetworkFirewall.hash("kiln0"))
        #expect(NetworkFirewall.hash("a") != NetworkFirewall.hash("b"))
        // FNV-1a's published values: chains named by an older kiln keep their names.
        #expect(NetworkFirewall.hash("") == "811c9dc5")
        #expect(NetworkFirewall.hash("a") == "e40c292c")
        #expect(NetworkFirewall.hash("kiln0") == "54054f79")
        #expect(firewall.tagChain("hello").hasPrefix(firewall.tagChainPrefix))
        #expect(firewall.tagChain("hello").count <= 28)
        #expect(firewall.tagChain("hello") != firewall.tagChain("other"))
        #expect(
            NetworkFirewall(bridge: "kiln1", subnet: "10.214.0.0/16", masquerade: true, lockPath: "/tmp/x").tagChain("hello")
                != firewall.tagChain("hello"))
        #expect("KILN-ISO-a-bridge-15char".count <= 28)
        #expect(IPv4.broadcast(of: "10.213.0.0/16") == "10.213.255.255/32")
        #expect(IPv4.broadcast(of: "10.213.7.0/24") == "10.213.7.255/32")
        #expect(
            firewall.baseFilterRules().prefix(3) == [
                "-A KILN-FWD-kiln0 -i kiln0 -o kiln0 -d 10.213.255.255/32 -j DROP",
                "-A KILN-FWD-kiln0 -i kiln0 -o kiln0 -d 255.255.255.255/32 -j DROP",
                "-A KILN-FWD-kiln0 -i kiln0 -o kiln0 -d 224.0.0.0/4 -j DROP",
            ])
        let rules = firewall.sandboxRules(id: "hello-1", address: "10.213.0.7", tag: "hello")
        #expect(
            rules == [
                "-A KILN-ISO-kiln0 -d 10.213.0.7/32 -m comment --comment \"kiln:hello-1\" -j \(firewall.tagChain("hello"))",
                "-I \(firewall.tagChain("hello")) 1 -s 10.213.0.7/32 -m comment --comment \"kiln:hello-1\" -j RETURN",
            ])
        // What iptables-save prints back is parsed for the owner.
        #expect(NetworkFirewall.commentID("-A KILN-ISO-kiln0 -d 10.213.0.7/32 -m comment --comment \"kiln:hello-1\" -j X") == "hello-1")
        #expect(NetworkFirewall.commentID("-A KILN-ISO-kiln0 -d 10.213.0.7/32 -m comment --comment kiln:b.2 -j X") == "b.2")
        #expect(NetworkFirewall.commentID("-A FORWARD -j ACCEPT") == nil)
        let save =
            ":KILN-ISO-kiln0 - [0:0]\n:\(firewall.tagChain("hello")) - [0:0]\n-A KILN-ISO-kiln0 -d 10.213.0.7/32 -m comment --comment \"kiln:hello-1\" -j Y\n-A KILN-ISO-kiln0 -d 10.213.0.8/32 -m comment --comment \"kiln:hello-2\" -j Y\n"
        #expect(
            NetworkFirewall.rules(in: save, for: ["hello-2"]) == ["-A KILN-ISO-kiln0 -d 10.213.0.8/32 -m comment --comment \"kiln:hello-2\" -j Y"])
        #expect(NetworkFirewall.chains(in: save) == ["KILN-ISO-kiln0", firewall.tagChain("hello")])
    }
}

/// Stand-in CNI plugins: shell scripts in a temporary directory, logging to one file.
struct FakePlugins {
    let directory: String
    var log: String { "\(directory)/log" }

    init() throws {
        directory = try temporaryDirectory()
    }

    func add(_ name: String, script: String) throws {
        let path = "\(directory)/\(name)"
        try "#!/bin/bash\n[ -n \"$FAKE_PLUGIN_SETTLE\" ] && exit 0\nLOG=\(log)\n\(script)\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
        // Exec'd once before use (ETXTBSY, which the CNI runner reports as "exited with status
        // 126": see waitUntilExecutable); the settling run exits at once.
        waitUntilExecutable(path, environment: ["FAKE_PLUGIN_SETTLE": "1"])
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

func temporaryDirectory() throws -> String {
    let path = "\(NSTemporaryDirectory())/kiln-net-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
