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
            ]
        ),
        // Per-container supervisor: holds the container's stdio pipes, logs them, reaps it.
        .executableTarget(name: "kiln-shim"),
        // Linux calls Swift's Glibc module does not expose cleanly (setns, prctl, SIOCSIFFLAGS).
        .target(name: "CKilnShims"),
        .testTarget(
            name: "KilnCoreTests",
            dependencies: ["KilnCore"]
        ),
        .testTarget(
            name: "KilnIntegrationTests",
            dependencies: ["KilnCore"]
        ),
    ]
)
