import Foundation
import KilnNetwork
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Integration {
    /// Sandboxes on kiln's network and a real PostgreSQL 15 on the same bridge.
    @Suite("network: a PostgreSQL host on the kiln network", .serialized, .enabled(if: PostgresTestHost.isInstalled, "needs Debian's postgresql-15"))
    struct NetworkPostgresTests {
        /// A sandbox-like namespace attached through CNI logs in with a password, and the server
        /// sees the connection come from the sandbox's own address.
        @Test func aSandboxConnectsAndPgStatActivityShowsItsAddress() async throws {
            try await withNetwork { bed in
                let database = try await PostgresTestHost.start(on: bed.network, subnet: bed.configuration.subnet)
                do {
                    let sandbox = try await bed.sandbox("orders-1", tag: "orders")
                    // A session that stays a while, so the host can look at it.
                    let (command, environment) = database.clientCommand("SELECT pg_sleep(3)")
                    let session = Task { try await inNamespace(sandbox.namespacePath, command, environment: environment) }
                    var clients = ""
                    let deadline = ContinuousClock.now + .seconds(10)
                    while ContinuousClock.now < deadline {
                        clients = try await database.superuserChecked(
                            "SELECT client_addr FROM pg_stat_activity WHERE usename = '\(PostgresTestHost.user)' AND datname = '\(PostgresTestHost.database)'"
                        )
                        if !clients.isEmpty { break }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    #expect(clients == sandbox.ip, "pg_stat_activity should show the sandbox's address")
                    let finished = try await session.value
                    #expect(finished.status.isSuccess, "\(finished.stderr)")

                    // The session's own view agrees, and a wrong password is refused by the server.
                    let (whoami, env) = database.clientCommand("SELECT host(inet_client_addr()) || ' ' || current_user")
                    let own = try await inNamespace(sandbox.namespacePath, whoami, environment: env)
                    #expect(own.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(sandbox.ip) \(PostgresTestHost.user)", "\(own.stderr)")
                    let (wrong, wrongEnv) = database.clientCommand("SELECT 1", password: "not-the-password")
                    let refused = try await inNamespace(sandbox.namespacePath, wrong, environment: wrongEnv)
                    #expect(!refused.status.isSuccess)
                    #expect(refused.stderr.contains("password authentication failed"), "\(refused.stderr)")
                    try await bed.remove(sandbox)
                } catch {
                    try? await database.stop()
                    throw error
                }
                try await database.stop()
                #expect(try await bed.network.usage().isEmpty)
                #expect(!FileManager.default.fileExists(atPath: database.directory))
                #expect(!FileManager.default.fileExists(atPath: database.namespacePath))
            }
        }

        /// Two snapshots share the database, but not each other; the host's services on the
        /// bridge address stay refused.
        @Test func anotherSnapshotReachesTheDatabaseButNotTheFirstSnapshotNorTheHost() async throws {
            try await withNetwork { bed in
                let database = try await PostgresTestHost.start(on: bed.network, subnet: bed.configuration.subnet)
                let hostPort = Int.random(in: 20000...40000)
                var servers: [ProbeServer] = []
                do {
                    let first = try await bed.sandbox("orders-1", tag: "orders")
                    let other = try await bed.sandbox("billing-1", tag: "billing")
                    servers.append(try await ProbeServer.start(in: first.namespacePath, port: 8080))
                    servers.append(try await ProbeServer.start(in: nil, port: hostPort))
                    for sandbox in [first, other] {
                        let (command, environment) = database.clientCommand("SELECT count(*) FROM pg_stat_activity")
                        let output = try await inNamespace(sandbox.namespacePath, command, environment: environment)
                        #expect(output.status.isSuccess, "\(sandbox.id) reaches the database: \(output.stderr)")
                    }
                    #expect(try await probe(from: other.namespacePath, first.ip, 8080) == "timeout", "billing cannot reach orders")
                    #expect(
                        try await probe(from: database.namespacePath, first.ip, 8080) == "timeout",
                        "a shared host answers sandboxes, it does not call them")
                    let gateway = try #require(other.gateway)
                    #expect(try await probe(from: other.namespacePath, gateway, hostPort) == "refused")
                    #expect(try await probe(from: other.namespacePath, gateway, 5432) == "refused", "a host PostgreSQL would be refused too")
                    for server in servers { server.stop() }
                    servers = []
                    try await bed.remove(first)
                    try await bed.remove(other)
                } catch {
                    for server in servers { server.stop() }
                    try? await database.stop()
                    throw error
                }
                try await database.stop()
                #expect(try await bed.network.usage().isEmpty)
            }
        }
    }
}
