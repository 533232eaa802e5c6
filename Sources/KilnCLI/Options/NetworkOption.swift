import ArgumentParser

/// `--network kiln|none|<name>` of `kiln bake`: the network the service is baked on, recorded in
/// its snapshot; its copies are restored on it too, each at its own address.
struct BakeNetworkOption: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Network of the sandbox: kiln (kiln's bridge kiln0, 10.213.0.0/16, isolated per snapshot), none (loopback only), or the name of a CNI network in /etc/cni/net.d. Recorded in the snapshot: its copies get an address of their own on it.",
            valueName: "NETWORK"))
    var network: String = "kiln"
}

/// `--network kiln|none|<name>` of `kiln run` and `kiln serve`: overrides the snapshot's network.
struct RestoreNetworkOption: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Network of the copies: kiln, none (loopback only) or a CNI network's name (default: the network the snapshot was baked on, kiln unless baked with --network none).",
            valueName: "NETWORK"))
    var network: String?
}
