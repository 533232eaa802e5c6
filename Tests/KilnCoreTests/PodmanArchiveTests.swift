import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

@Suite struct PodmanArchiveTests {
    /// The base image is a valid tar that `podman load` reads as a docker-archive, and its id
    /// (what config.dump names) is the SHA-256 of the config it carries, the same on every run.
    @Test func baseImageIsATarWhoseIdIsItsConfigDigest() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-base-\(UInt32.random(in: 0...UInt32.max)).tar").path
        defer { unlink(path) }
        try Data(PodmanArchive.BaseImage.archive()).write(to: URL(fileURLWithPath: path))
        let listing = try Subprocess.run("tar", ["-tf", path], stdin: .null)
        #expect(listing.status.isSuccess, "\(listing.stderr)")
        let id = PodmanArchive.BaseImage.id
        #expect(
            listing.stdout.split(separator: "\n").map(String.init) == [
                "\(id).json", "\(PodmanArchive.BaseImage.layerDigest)/layer.tar", "manifest.json",
            ])
        let config = try Subprocess.run("tar", ["-xOf", path, "\(id).json"], stdin: .null)
        #expect(Array(config.stdout.utf8) == PodmanArchive.BaseImage.config)
        #expect(id.count == 64 && id.allSatisfy(\.isHexDigit))
        #expect(PodmanArchive.BaseImage.archive() == PodmanArchive.BaseImage.archive())
    }

    /// A Podman container's mounts become kiln binds: host directories as they are, the files
    /// Podman generated per container as fresh ones per copy; an unknown source is refused.
    @Test func podmanSpecBecomesASandbox() throws {
        let spec = try JSONDecoder().decode(
            PodmanArchive.RuntimeSpec.self,
            from: Data(
                #"""
                {"process": {"args": ["/app/bin/server", "--x"], "env": ["PATH=/usr/bin", "PORT=9000", "EMPTY="], "cwd": "/app"},
                 "mounts": [
                   {"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["ro", "rprivate", "rbind"]},
                   {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/containers/storage/overlay-containers/abc/userdata/hosts", "options": ["bind"]},
                   {"destination": "/dev/shm", "type": "bind", "source": "/var/lib/containers/storage/overlay-containers/abc/userdata/shm", "options": ["bind"]}
                 ],
                 "linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}], "resources": {"memory": {"limit": 536870912}}}}
                """#.utf8))
        let sandbox = try Kiln.sandbox(from: spec, port: 9000, rootfs: nil, archive: "a.tar")
        #expect(sandbox.command == ["/app/bin/server", "--x"])
        #expect(sandbox.environment["EMPTY"] == "" && sandbox.environment["PORT"] == "9000")
        #expect(sandbox.workingDirectory == "/app")
        #expect(sandbox.memoryLimitBytes == 512 << 20)
        #expect(sandbox.rootMode == PodmanArchive.rootMode)
        #expect(
            sandbox.binds == [
                .init(destination: "/usr", source: "/usr", readOnly: true, isDirectory: true),
                .init(destination: "/etc/hosts", source: nil, readOnly: false, isDirectory: false),
                .init(destination: "/dev/shm", source: nil, readOnly: false, isDirectory: true),
            ])
        #expect(sandbox.problem == nil)

        let missing = try JSONDecoder().decode(
            PodmanArchive.RuntimeSpec.self,
            from: Data(
                #"""
                {"process": {"args": ["/x"]}, "mounts": [{"destination": "/data", "type": "bind", "source": "/nonexistent-kiln-test-dir"}]}
                """#.utf8))
        #expect(throws: KilnError.self) { try Kiln.sandbox(from: missing, port: 1, rootfs: nil, archive: "a.tar") }
    }

    /// Manifests written before export existed have neither a root mode nor cgroups in their
    /// images: they still restore (as 0755 roots), and export refuses them, saying to re-bake.
    @Test func oldManifestsDecodeAndAreNotExportable() throws {
        var manifest = SnapshotManifest(
            name: "old", createdAt: Date(timeIntervalSince1970: 0),
            sandbox: SandboxSpec(command: ["/x"], workingDirectory: "/", appDirectory: nil, port: 8080),
            readiness: ReadinessCheck(path: "/health"), warmup: [], host: HostFacts(kernel: "k", criuVersion: "4.2.1", runtime: "runc"),
            timings: BakeTimings(), compacted: false, files: [SnapshotFile(path: "pages-1.img", size: 1, sha256: String(repeating: "a", count: 64))])
        var json = try JSONSerialization.jsonObject(with: manifest.encoded()) as! [String: Any]
        var sandbox = json["sandbox"] as! [String: Any]
        sandbox.removeValue(forKey: "rootMode")
        json["sandbox"] = sandbox
        json.removeValue(forKey: "cgroupsInImages")
        let decoded = try SnapshotManifest.decode(try JSONSerialization.data(withJSONObject: json), source: "test")
        #expect(decoded.sandbox.rootMode == nil)
        #expect(decoded.cgroupsInImages == nil)
        #expect(throws: KilnError.self) { try Kiln.checkExportable(decoded) }

        manifest.cgroupsInImages = true
        try Kiln.checkExportable(manifest)
        manifest.sandbox.rootFilesystem = .directory("/srv/root")
        #expect(throws: KilnError.self) { try Kiln.checkExportable(manifest) }
    }

    /// An archive is someone else's input: host directories only read-only, no host directory
    /// as the root from kiln's own archive.
    @Test func archivesGetNoWritableHostDirectories() throws {
        var sandbox = SandboxSpec(
            command: ["/bin/sh"], workingDirectory: "/", appDirectory: nil, port: 8080,
            binds: [.init(destination: "/data", source: "/usr/share", readOnly: true, isDirectory: true)])
        try Kiln.checkHostExposure(sandbox, source: "podman", archive: "a.tar")
        sandbox.binds!.append(.init(destination: "/host", source: "/", readOnly: false, isDirectory: true))
        let writable = #expect(throws: KilnError.self) { try Kiln.checkHostExposure(sandbox, source: "podman", archive: "a.tar") }
        #expect(writable?.message.contains("binds the host's / writable at /host") == true)
        #expect(writable?.hint?.contains("-v /:/host:ro") == true)
        // Podman's generated files (no host source) stay writable per copy.
        sandbox.binds = [.init(destination: "/etc/hosts", source: nil, readOnly: false, isDirectory: false)]
        try Kiln.checkHostExposure(sandbox, source: "podman", archive: "a.tar")
        sandbox.rootFilesystem = .directory("/")
        #expect(throws: KilnError.self) { try Kiln.checkHostExposure(sandbox, source: "kiln", archive: "a.tar") }
    }
}
