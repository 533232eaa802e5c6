// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kiln", targets: ["kiln"]),
        .library(name: "KilnCore", targets: ["KilnCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // kiln serve (Sources/KilnCore/Gateway): HTTP listeners, lifecycle, metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.0"),
    ],
    targets: [
        // Thin command-line front end: parses arguments, calls KilnCore, prints results.
        .executableTarget(
            name: "kiln",
            dependencies: [
                "KilnCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Everything kiln does, one folder per concern (Snapshot, Sandbox, CRIU, Instance, Bake, ...).
        .target(
            name: "KilnCore",
            dependencies: [
                "CKilnShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ]
        ),
        // Per-container supervisor: holds the container's stdio pipes, logs them, reaps it.
        .executableTarget(name: "kiln-shim"),
        // Linux calls Swift's Glibc module does not expose cleanly (setns, prctl, SIOCSIFFLAGS).
        .target(name: "CKilnShims"),
        .testTarget(
            name: "KilnCoreTests",
            dependencies: ["KilnCore"],
            // The fuzz tests' seed corpus, read through #filePath (not a resource).
            exclude: ["FuzzCorpus"]
        ),
        .testTarget(
            name: "KilnIntegrationTests",
            dependencies: ["KilnCore"],
            // The script that builds the --image tests' OCI image, run through #filePath.
            exclude: ["Fixtures"]
        ),
    ]
)
