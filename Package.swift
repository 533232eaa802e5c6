// swift-tools-version: 6.0
import PackageDescription

/// SwiftNIO's core, its sockets and its HTTP/1 codec: four targets import the three together.
let nioHTTP1: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOHTTP1", package: "swift-nio"),
]

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kiln", targets: ["kiln"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),  // LogHandler.log(event:) (a test handler)
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // kiln serve (Sources/KilnGateway): HTTP listeners, lifecycle, metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.0"),
    ],
    targets: [
        // The layers, lowest first. Each may import only the layers above it in this list, and
        // lists every module it imports: SwiftPM builds all modules into one search path, so the
        // compiler alone would accept an import another target happens to bring in;
        // scripts/check-imports.py (`make lint`) refuses it. See docs/architecture.md for what
        // each owns.

        // Linux calls Swift's Glibc module does not expose cleanly (setns, prctl, SIOCSIFFLAGS).
        .target(name: "CKilnShims"),
        // The host: errors, subprocesses, /proc, cgroups, mounts, namespaces, privileges, memory.
        .target(
            name: "KilnSystem",
            dependencies: ["CKilnShims"]
        ),
        // OCI: sandbox spec, typed runtime config and seccomp, bundles, the runtime client
        // behind ContainerRuntime (runc), CRIU, container image configs, references and digests.
        .target(
            name: "KilnOCI",
            dependencies: [
                "CKilnShims", "KilnSystem",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Snapshots at rest: manifest, store, digests, cipher, keys, the decrypted-image cache.
        .target(
            name: "KilnSnapshot",
            dependencies: [
                "CKilnShims", "KilnSystem", "KilnOCI",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Networks for sandboxes: CNI plugins (ADD/DEL/CHECK), kiln's network and its iptables
        // firewall, the pool of prepared namespaces, network garbage collection.
        .target(
            name: "KilnNetwork",
            dependencies: ["KilnSystem"]
        ),
        // The engine: one sandbox lifecycle, bake, restore, instances, gc, image import, export.
        // No HTTP server, no metrics library, no benchmark code.
        .target(
            name: "KilnEngine",
            dependencies: [
                "CKilnShims", "KilnSystem", "KilnOCI", "KilnSnapshot", "KilnNetwork",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ] + nioHTTP1
        ),
        // kiln serve: routing, scaling from zero, the function pools, metrics, the admin API.
        // The only target that imports Hummingbird and Prometheus.
        .target(
            name: "KilnGateway",
            dependencies: [
                "KilnSystem", "KilnOCI", "KilnSnapshot", "KilnNetwork", "KilnEngine",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ] + nioHTTP1
        ),
        // Every benchmark, the load generator and the soak: never part of the product's engine.
        .target(
            name: "KilnBench",
            dependencies: [
                "CKilnShims", "KilnSystem", "KilnOCI", "KilnSnapshot", "KilnNetwork", "KilnEngine", "KilnGateway",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ] + nioHTTP1
        ),
        // The commands, one per file, grouped by noun; output and the JSON error document.
        .target(
            name: "KilnCLI",
            dependencies: [
                "KilnSystem", "KilnOCI", "KilnSnapshot", "KilnEngine", "KilnGateway", "KilnBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The executable: main only.
        .executableTarget(name: "kiln", dependencies: ["KilnCLI"]),
        // Per-container supervisor: holds the container's stdio pipes, logs them, reaps it. Plain
        // C, linked static and without Swift's start-up files: SwiftPM would otherwise link in
        // Swift's runtime (and libstdc++), which cost the shim 1.3 ms of every restore's start.
        .executableTarget(name: "kiln-shim", linkerSettings: [.unsafeFlags(["-nostartfiles", "-static-executable"])]),
        .testTarget(
            name: "KilnCoreTests",
            dependencies: [
                "KilnSystem", "KilnOCI", "KilnSnapshot", "KilnNetwork", "KilnEngine", "KilnGateway", "KilnBench",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ] + nioHTTP1,
            // The fuzz tests' seed corpus and the captured CRIU files, read through #filePath (not resources).
            exclude: ["FuzzCorpus", "Fixtures"]
        ),
        // The command line: parsing, defaults, exit codes and error documents in-process, and the
        // built `kiln` binary (with CRIU and runc hidden for the commands that must not need them).
        .testTarget(
            name: "KilnCLITests",
            dependencies: [
                "KilnCLI", "KilnSystem", "KilnSnapshot", "KilnEngine", "KilnGateway", "KilnBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "KilnIntegrationTests",
            dependencies: [
                "KilnSystem", "KilnOCI", "KilnSnapshot", "KilnNetwork", "KilnEngine", "KilnGateway", "KilnBench",
                .product(name: "Logging", package: "swift-log"),
            ],
            // The script that builds the --image tests' OCI image, run through #filePath.
            exclude: ["Fixtures"]
        ),
    ]
)
