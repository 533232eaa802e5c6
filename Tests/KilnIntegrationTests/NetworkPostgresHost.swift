import Foundation
import KilnNetwork
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL 15 server (Debian's) on a kiln network, for tests of what instances reach.
///
/// It gets a namespace of its own (`ip netns add kiln-pg-<random>`), joined to the network's
/// bridge by a CNI ADD with the network's own configuration and the shared tag (every sandbox may
/// reach it), a fresh cluster in a temporary directory owned by `postgres`, listening on its
/// namespace's address only, with SCRAM password authentication for the network's subnet. A
/// user and a database are created. ``stop()`` stops the server (fast shutdown), removes the data,
/// detaches the namespace and deletes it.
struct PostgresTestHost {
    static let binaries = "/usr/lib/postgresql/15/bin"
    static let user = "kiln"
    static let password = "kiln-\(UInt32.random(in: 0...UInt32.max))"
    static let database = "kilndb"

    let name: String
    let attachment: NetworkAttachment
    let network: CNINetwork
    let directory: String
    let pid: pid_t

    var namespacePath: String { "/var/run/netns/\(name)" }
    var address: String { attachment.ip }
    var dataDirectory: String { "\(directory)/data" }
    /// The server's Unix socket directory: the host (superuser, trust) talks to it there.
    var socketDirectory: String { directory }

    static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: "\(binaries)/postgres") }

    static func start(on network: CNINetwork, subnet: String) async throws -> PostgresTestHost {
        let suffix = String(UInt32.random(in: 0...0xffffff), radix: 16)
        let name = "kiln-pg-\(suffix)"
        let directory = "/tmp/kiln-pg-\(getpid())-\(suffix)"
        // Undone in reverse order if the start fails half-way.
        var cleanups: [@Sendable () async -> Void] = []
        do {
            try await run("/usr/sbin/ip", ["netns", "add", name])
            cleanups.append { _ = try? await Subprocess.run("/usr/sbin/ip", ["netns", "del", name], environment: nil, input: nil) }
            try await run("/usr/sbin/ip", ["-n", name, "link", "set", "lo", "up"])
            let attachment = try await network.attach(namespacePath: "/var/run/netns/\(name)", id: name, tag: NetworkAttachment.sharedTag)
            cleanups.append { try? await network.detach(attachment) }

            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            cleanups.append { try? FileManager.default.removeItem(atPath: directory) }
            try await run("/bin/chown", ["postgres:postgres", directory])
            try await run("/bin/chmod", ["0700", directory])
            try await asPostgres([
                "\(binaries)/initdb", "-D", "\(directory)/data", "-U", "postgres", "--auth-local=trust", "--auth-host=reject", "-E", "UTF8",
                "--no-sync",
            ])
            // Password (SCRAM) logins from the network's subnet, nothing else over TCP.
            try "local all all trust\nhost all all \(subnet) scram-sha-256\n".write(
                toFile: "\(directory)/data/pg_hba.conf", atomically: false, encoding: .utf8)

            let log = open("\(directory)/server.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            defer { close(log) }
            let pid = try Subprocess.spawn(
                "/usr/bin/nsenter",
                [
                    "--net=/var/run/netns/\(name)", "--", "/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                    "\(binaries)/postgres", "-D", "\(directory)/data", "-c", "listen_addresses=\(attachment.ip)", "-c", "port=5432",
                    "-c", "unix_socket_directories=\(directory)", "-c", "password_encryption=scram-sha-256", "-c", "fsync=off",
                ],
                stdout: .descriptor(log), stderr: .descriptor(log))
            let host = PostgresTestHost(name: name, attachment: attachment, network: network, directory: directory, pid: pid)
            cleanups.append { host.stopServer() }
            let deadline = ContinuousClock.now + .seconds(30)
            while try await !host.superuser("SELECT 1").status.isSuccess {
                guard ContinuousClock.now < deadline else {
                    let tail = (try? String(contentsOfFile: "\(directory)/server.log", encoding: .utf8)) ?? ""
                    throw KilnError(.serviceNeverReady, "PostgreSQL did not start", details: tail.split(separator: "\n").suffix(10).map(String.init))
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await host.superuserChecked("CREATE ROLE \(user) LOGIN PASSWORD '\(password)'")
            try await host.superuserChecked("CREATE DATABASE \(database) OWNER \(user)")
            return host
        } catch {
            for cleanup in cleanups.reversed() { await cleanup() }
            throw error
        }
    }

    /// SQL as the superuser over the Unix socket (from the host), in `database`.
    func superuser(_ sql: String, database: String = "postgres") async throws -> CommandOutput {
        try await Subprocess.run(
            "/usr/sbin/runuser",
            [
                "-u", "postgres", "--", "\(Self.binaries)/psql", "-h", socketDirectory, "-p", "5432", "-U", "postgres", "-d", database, "-XAtq",
                "-c", sql,
            ],
            environment: ["PATH": "/usr/bin:/bin"], input: nil)
    }

    @discardableResult
    func superuserChecked(_ sql: String, database: String = "postgres") async throws -> String {
        let output = try await superuser(sql, database: database)
        guard output.status.isSuccess else { throw KilnError(.requestFailed, "psql: \(sql): \(output.stderr)") }
        return output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The psql command line that runs `sql` as the test user over TCP (run it in a namespace).
    func clientCommand(_ sql: String, password: String = PostgresTestHost.password) -> (command: [String], environment: [String: String]) {
        (
            ["\(Self.binaries)/psql", "host=\(address) port=5432 dbname=\(Self.database) user=\(Self.user) connect_timeout=3", "-XAtq", "-c", sql],
            ["PGPASSWORD": password, "PATH": "/usr/bin:/bin"]
        )
    }

    func stopServer() {
        // SIGINT: fast shutdown (clients are disconnected, no waiting).
        kill(pid, SIGINT)
        _ = Subprocess.wait(pid)
    }

    /// Stops the server and removes everything the host made.
    func stop() async throws {
        stopServer()
        try? FileManager.default.removeItem(atPath: directory)
        try await network.detach(attachment)
        try await Self.run("/usr/sbin/ip", ["netns", "del", name])
    }

    private static func run(_ executable: String, _ arguments: [String]) async throws {
        let output = try await Subprocess.run(executable, arguments, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], input: nil)
        guard output.status.isSuccess else {
            throw KilnError(.runtimeFailed, "\(executable) \(arguments.joined(separator: " ")) \(output.status): \(output.stderr)")
        }
    }

    private static func asPostgres(_ command: [String]) async throws {
        try await run("/usr/sbin/runuser", ["-u", "postgres", "--"] + command)
    }
}
