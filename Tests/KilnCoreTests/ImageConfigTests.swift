import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite("images: references, OCI layouts and configs for kiln bake --image")
struct ImageConfigTests {
    @Test func referencesParse() throws {
        #expect(try ImageReference(parsing: "oci:/images/hello:1") == .ociLayout(path: "/images/hello", tag: "1"))
        #expect(try ImageReference(parsing: "oci:/images/hello") == .ociLayout(path: "/images/hello", tag: nil))
        #expect(try ImageReference(parsing: "oci:hello:v2", relativeTo: "/work") == .ociLayout(path: "/work/hello", tag: "v2"))
        // A colon inside the path is not a tag.
        #expect(try ImageReference(parsing: "oci:/a:b/layout") == .ociLayout(path: "/a:b/layout", tag: nil))
        #expect(try ImageReference(parsing: "podman:localhost/hello:1") == .podman("localhost/hello:1"))
        #expect(try ImageReference(parsing: "docker:hello") == .docker("hello"))
        #expect(
            try ImageReference(parsing: "podman:[vfs@/tmp/s/root+/tmp/s/run]localhost/hello:1")
                == .podman("[vfs@/tmp/s/root+/tmp/s/run]localhost/hello:1"))
    }

    @Test func aBarePathIsALayoutOnlyWhenItHoldsOne() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-layout-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: KilnError.self) { try ImageReference(parsing: directory) }
        try #"{"imageLayoutVersion":"1.0.0"}"#.write(toFile: "\(directory)/oci-layout", atomically: true, encoding: .utf8)
        #expect(try ImageReference(parsing: directory) == .ociLayout(path: directory, tag: nil))
    }

    @Test(arguments: ["", "oci:", "oci:/x:", "podman:", "docker:-rf", "docker:a b", "registry.example/hello:1", "podman:a\u{0}b"])
    func badReferencesAreRefusedWithTheSyntax(text: String) {
        let error = #expect(throws: KilnError.self) { try ImageReference(parsing: text, relativeTo: "/nonexistent") }
        #expect(error?.code == .invalidArgument)
        #expect(error?.hint?.contains("oci:DIR[:TAG]") == true)
    }

    @Test func skopeoGetsATagWhereItNeedsOne() {
        #expect(ImageReference.docker("hello").skopeoSource == "docker-daemon:hello:latest")
        #expect(ImageReference.docker("registry:5000/hello").skopeoSource == "docker-daemon:registry:5000/hello:latest")
        #expect(ImageReference.docker("hello@sha256:abc").skopeoSource == "docker-daemon:hello@sha256:abc")
        #expect(ImageReference.podman("[vfs@/r+/s]localhost/hello").skopeoSource == "containers-storage:[vfs@/r+/s]localhost/hello:latest")
        #expect(ImageReference.ociLayout(path: "/l", tag: "1").skopeoSource == "oci:/l:1")
    }

    static let config = Data(
        """
        {"architecture":"amd64","os":"linux","config":{"Entrypoint":["/opt/jre/bin/java","-cp","/app"],"Cmd":["Main"],
         "Env":["PATH=/opt/jre/bin:/usr/bin","GREETING=hi","JAVA_TOOL_OPTIONS=-Xss1m"],"WorkingDir":"/app","User":"1000:1000",
         "ExposedPorts":{"8080/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[]}}
        """.utf8)

    @Test func configDecodes() throws {
        let config = try ImageConfig(json: Self.config)
        #expect(config.entrypoint == ["/opt/jre/bin/java", "-cp", "/app"])
        #expect(config.cmd == ["Main"])
        #expect(config.workingDir == "/app")
        #expect(config.tcpPorts == [8080])
        #expect(try config.sandboxUser(reference: "x") == SandboxUser(uid: 1000, gid: 1000))
        // Docker writes null for an absent entrypoint, and may leave out `config` altogether.
        let bare = try ImageConfig(json: Data(#"{"architecture":"arm64","os":"linux","config":{"Entrypoint":null,"Cmd":null}}"#.utf8))
        #expect(bare.entrypoint.isEmpty && bare.cmd.isEmpty && bare.architecture == "arm64")
        #expect(try ImageConfig(json: Data(#"{"architecture":"amd64"}"#.utf8)).env.isEmpty)
        #expect(throws: KilnError.self) { try ImageConfig(json: Data("[]".utf8)) }
    }

    func base(command: [String] = [], environment: [String: String] = [:], port: Int = 0) -> SandboxSpec {
        SandboxSpec(command: command, environment: environment, workingDirectory: "/", appDirectory: nil, port: port)
    }

    @Test func theImageFillsInTheSandbox() throws {
        let config = try ImageConfig(json: Self.config)
        let spec = try config.sandbox(
            applyingTo: base(environment: ["GREETING": "hello", "EXTRA": "1"]), rootfs: "/store/rootfs/x", reference: "oci:/l")
        #expect(spec.command == ["/opt/jre/bin/java", "-cp", "/app", "Main"])
        #expect(spec.rootFilesystem == .directory("/store/rootfs/x"))
        #expect(spec.workingDirectory == "/app")
        #expect(spec.port == 8080)
        #expect(spec.user == SandboxUser(uid: 1000, gid: 1000))
        // --env wins over the image's Env; kiln's own variables win over both.
        #expect(spec.environment == ["PATH": "/opt/jre/bin:/usr/bin", "GREETING": "hello", "EXTRA": "1", "JAVA_TOOL_OPTIONS": "-Xss1m"])
        let process = spec.processEnvironment
        #expect(process["PATH"] == "/opt/jre/bin:/usr/bin")
        #expect(process["PORT"] == "8080")
        #expect(process["JAVA_TOOL_OPTIONS"]?.hasPrefix("-Xss1m -XX:-UsePerfData") == true)
    }

    @Test func argumentsReplaceCmdAndAGivenPortWins() throws {
        let config = try ImageConfig(json: Self.config)
        let spec = try config.sandbox(applyingTo: base(command: ["Other", "--flag"], port: 9090), rootfs: "/r", reference: "oci:/l")
        #expect(spec.command == ["/opt/jre/bin/java", "-cp", "/app", "Other", "--flag"])
        #expect(spec.port == 9090)
        // No entrypoint: the arguments are the whole command, as with docker run.
        let cmdOnly = ImageConfig(cmd: ["/bin/server"], exposedPorts: ["80/tcp"])
        #expect(try cmdOnly.sandbox(applyingTo: base(command: ["/bin/other"]), rootfs: "/r", reference: "x").command == ["/bin/other"])
        #expect(try cmdOnly.sandbox(applyingTo: base(), rootfs: "/r", reference: "x").workingDirectory == "/")
    }

    @Test func whatKilnCannotHonourIsRefusedClearly() throws {
        let nothing = ImageConfig(exposedPorts: ["8080/tcp"])
        let noCommand = #expect(throws: KilnError.self) { try nothing.sandbox(applyingTo: base(), rootfs: "/r", reference: "oci:/l") }
        #expect(noCommand?.message.contains("no Entrypoint or Cmd") == true)
        #expect(noCommand?.hint?.contains("after '--'") == true)

        let named = ImageConfig(cmd: ["/s"], user: "app", exposedPorts: ["8080/tcp"])
        let user = #expect(throws: KilnError.self) { try named.sandbox(applyingTo: base(), rootfs: "/r", reference: "oci:/l") }
        #expect(user?.code == .imageUnsupported)
        #expect(user?.hint?.contains("numeric USER") == true)
        #expect(
            try ImageConfig(cmd: ["/s"], user: "0", exposedPorts: ["1/tcp"]).sandbox(applyingTo: base(), rootfs: "/r", reference: "x").user == nil)

        for ports in [[String](), ["8080/tcp", "8443/tcp"], ["53/udp"]] {
            let config = ImageConfig(cmd: ["/s"], exposedPorts: ports)
            let error = #expect(throws: KilnError.self) { try config.sandbox(applyingTo: base(), rootfs: "/r", reference: "x") }
            #expect(error?.hint?.contains("--port") == true)
        }

        let arm = ImageConfig(architecture: "arm64", cmd: ["/s"])
        let platform = #expect(throws: KilnError.self) { try arm.checkPlatform(reference: "oci:/l", hostArchitecture: "amd64") }
        #expect(platform?.code == .imageUnsupported)
        #expect(platform?.message.contains("linux/arm64") == true)
        try ImageConfig(architecture: "amd64").checkPlatform(reference: "x", hostArchitecture: "amd64")
    }

    @Test func aLayoutIsReadAndItsBlobsChecked() throws {
        let layout = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-oci-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: layout) }
        try FileManager.default.createDirectory(atPath: "\(layout)/blobs/sha256", withIntermediateDirectories: true)
        func put(_ data: Data) throws -> String {
            let digest = "sha256:" + FileDigest.sha256(data)
            try data.write(to: URL(fileURLWithPath: "\(layout)/blobs/sha256/\(digest.dropFirst(7))"))
            return digest
        }
        let configDigest = try put(Self.config)
        let manifest = Data(
            #"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(configDigest)","size":1},"layers":[]}"#
                .utf8)
        let manifestDigest = try put(manifest)
        try #"{"schemaVersion":2,"manifests":[{"digest":"\#(manifestDigest)","size":1,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}"#
            .write(toFile: "\(layout)/index.json", atomically: true, encoding: .utf8)

        let image = try OCILayout(path: layout).image(tag: "1")
        #expect(image.manifestDigest == manifestDigest)
        #expect(image.configDigest == configDigest)
        #expect(image.config.cmd == ["Main"])
        #expect(try OCILayout(path: layout).image(tag: nil) == image)
        let missing = #expect(throws: KilnError.self) { try OCILayout(path: layout).image(tag: "2") }
        #expect(missing?.code == .imageNotFound)

        // A blob altered after the fact no longer matches its digest.
        try Data("{}".utf8).write(to: URL(fileURLWithPath: "\(layout)/blobs/sha256/\(configDigest.dropFirst(7))"))
        #expect(throws: KilnError.self) { try OCILayout(path: layout).image(tag: "1") }
        #expect(!OCILayout.isDigest("sha256:../../etc/passwd"))
    }

    @Test func aManifestWithAnImageNeedsValidDigestsAndItsOwnRoot() throws {
        let image = SnapshotImage(
            reference: "oci:/l", manifestDigest: "sha256:" + String(repeating: "a", count: 64),
            configDigest: "sha256:" + String(repeating: "b", count: 64), architecture: "amd64", copyMs: 1, unpackMs: 2)
        let file = SnapshotFile(path: "pages-1.img", size: 1, sha256: String(repeating: "c", count: 64))
        let host = HostFacts(kernel: "6.18", criuVersion: "4.2.1", runtime: "runc")
        var spec = base(command: ["/s"], port: 8080)
        spec.rootFilesystem = .directory("/store/rootfs/x-bake")
        let manifest = SnapshotManifest(
            name: "img", createdAt: Date(timeIntervalSince1970: 0), sandbox: spec, readiness: ReadinessCheck(path: "/health"), warmup: [],
            host: host, timings: BakeTimings(), compacted: true, image: image, files: [file])
        let decoded = try SnapshotManifest.decode(try manifest.encoded(), source: "test")
        #expect(decoded.image == image)
        #expect(SnapshotStore(root: "/store").imageRoot(of: decoded) == "/store/rootfs/x-bake")
        #expect(SnapshotStore(root: "/other").imageRoot(of: decoded) == nil)

        var hostRoot = manifest
        hostRoot.sandbox.rootFilesystem = .host
        #expect(throws: KilnError.self) { try SnapshotManifest.decode(try hostRoot.encoded(), source: "test") }
        var badDigest = manifest
        badDigest.image?.manifestDigest = "sha256:xyz"
        #expect(throws: KilnError.self) { try SnapshotManifest.decode(try badDigest.encoded(), source: "test") }
    }
}
