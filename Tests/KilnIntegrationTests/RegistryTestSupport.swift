import Foundation
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A private CNCF distribution registry (Debian's `docker-registry`) on 127.0.0.1, as users run
/// one: TLS with a self-signed certificate made here with openssl, htpasswd (bcrypt) basic auth,
/// storage in a directory of its own. Stopped and removed by ``stop()``.
struct TestRegistry {
    let directory: String
    /// The address it listens on: 127.0.0.1, or a bridge address test hosts in network
    /// namespaces reach.
    let host: String
    let port: Int
    let pid: pid_t
    let user = "kiln"
    let password: String

    /// Where skopeo (`--cert-dir`) finds the CA: the self-signed certificate as ca.crt.
    var certificateDirectory: String { "\(directory)/certs.d" }
    var storage: String { "\(directory)/storage" }
    var address: String { "\(host):\(port)" }
    var credentials: String { "\(user):\(password)" }
    /// `--creds` and `--cert-dir` for kiln push and pull.
    var accessArguments: [String] { ["--creds", credentials, "--cert-dir", certificateDirectory] }

    static var isInstalled: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/docker-registry") && FileManager.default.isExecutableFile(atPath: "/usr/bin/htpasswd")
    }

    static func start(in directory: String, host: String = "127.0.0.1") async throws -> TestRegistry {
        let password = "pw-\(UInt64.random(in: 0...UInt64.max))"
        for directory in [directory, "\(directory)/certs.d", "\(directory)/storage"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let certificate = try await Subprocess.run(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-keyout", "\(directory)/key.pem", "-out", "\(directory)/cert.pem", "-subj", "/CN=\(host)", "-addext",
                "subjectAltName=IP:127.0.0.1" + (host == "127.0.0.1" ? "" : ",IP:\(host)"),
            ])
        try #require(certificate.status == .exited(0), "openssl: \(certificate.stderr)")
        try FileManager.default.copyItem(atPath: "\(directory)/cert.pem", toPath: "\(directory)/certs.d/ca.crt")
        let htpasswd = try await Subprocess.run("/usr/bin/htpasswd", ["-Bbc", "\(directory)/htpasswd", "kiln", password])
        try #require(htpasswd.status == .exited(0), "htpasswd: \(htpasswd.stderr)")

        for _ in 0..<5 {
            let port = Int.random(in: 20_000...40_000)
            let config = """
                version: 0.1
                log:
                  level: warn
                  accesslog:
                    disabled: true
                storage:
                  filesystem:
                    rootdirectory: \(directory)/storage
                  delete:
                    enabled: true
                http:
                  addr: \(host):\(port)
                  secret: test-secret-\(UInt64.random(in: 0...UInt64.max))
                  tls:
                    certificate: \(directory)/cert.pem
                    key: \(directory)/key.pem
                auth:
                  htpasswd:
                    realm: kiln-test
                    path: \(directory)/htpasswd
                """
            try Data(config.utf8).write(to: URL(fileURLWithPath: "\(directory)/config.yml"))
            let log = open("\(directory)/registry.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            defer { close(log) }
            let pid = try Subprocess.spawn(
                "/usr/bin/docker-registry", ["serve", "\(directory)/config.yml"], stdout: .descriptor(log), stderr: .descriptor(log))
            let registry = TestRegistry(directory: directory, host: host, port: port, pid: pid, password: password)
            // Up once /v2/ asks for credentials over TLS.
            for _ in 0..<100 {
                let probe = try await Subprocess.run(
                    "/usr/bin/curl",
                    ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", "\(directory)/cert.pem", "https://\(host):\(port)/v2/"])
                if probe.stdout == "401" { return registry }
                if waitpid(pid, nil, WNOHANG) == pid { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            registry.stop(removing: false)
        }
        let log = (try? String(contentsOfFile: "\(directory)/registry.log", encoding: .utf8)) ?? ""
        throw KilnError(.runtimeFailed, "the test registry did not start", details: log.split(separator: "\n").suffix(5).map(String.init))
    }

    /// The file in the registry's storage that holds the blob `digest` (`sha256:<hex>`).
    func blobPath(_ digest: String) -> String {
        let hex = digest.replacingOccurrences(of: "sha256:", with: "")
        return "\(storage)/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
    }

    /// Stops the registry and removes its directory.
    func stop(removing: Bool = true) {
        kill(pid, SIGTERM)
        for _ in 0..<100 where waitpid(pid, nil, WNOHANG) != pid { usleep(20_000) }
        if kill(pid, 0) == 0 {
            kill(pid, SIGKILL)
            waitpid(pid, nil, 0)
        }
        if removing { try? FileManager.default.removeItem(atPath: directory) }
    }
}
