import Foundation
import KilnEngine
import KilnNetwork
import KilnSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The Spring Boot 3 sample (`examples/boot-petclinic`, `java -jar app.jar`, HikariCP) against a
/// real PostgreSQL 15 on kiln's network, through the real `kiln` binary: the acceptance of issues
/// 15 and 16 with a database.
///
/// The binary's network is the test's own (`KILN_BRIDGE`, `KILN_SUBNET` in its environment, a /24
/// of 10.213.0.0/16 and a bridge `kb<random>`), name servers on the sandbox's own loopback
/// (`KILN_DNS=127.0.0.1`: nothing is sent beyond the host); the database host joins the same
/// network from the test process (same state directory, same configuration).
struct BootPostgresBed {
    let host: TestHost
    let environment: [String: String]
    let network: CNINetwork
    let configuration: NetworkConfiguration
    let database: PostgresTestHost

    static let sample = "\(packageRoot)/examples/boot-petclinic"
    static let isBuilt = FileManager.default.fileExists(atPath: "\(sample)/build/app.jar")

    /// The JDBC settings of the sample, pointed at the database host.
    var databaseEnvironment: [String] {
        [
            "SPRING_DATASOURCE_URL=jdbc:postgresql://\(database.address):5432/\(PostgresTestHost.database)",
            "SPRING_DATASOURCE_USERNAME=\(PostgresTestHost.user)", "SPRING_DATASOURCE_PASSWORD=\(PostgresTestHost.password)",
            "PETCLINIC_SEED_OWNERS=40",
        ]
    }

    /// `kiln bake NAME` of the sample on the network, with `extra` options before the command.
    func bakeArguments(_ name: String, _ extra: [String] = [], environment more: [String] = []) -> [String] {
        ["bake", name, "--port", "8080", "--ready", "/health", "--ready-timeout", "240", "--app", packageRoot, "--network", "kiln"]
            + ["--warmup", "20:/owners/1", "--warmup", "10:/vets"]
            + (databaseEnvironment + more).flatMap { ["--env", $0] } + extra + ["--", "\(Self.sample)/bin/boot-petclinic"]
    }

    /// The sample's connections as PostgreSQL sees them: one line per backend, its client address.
    func clientAddresses() async throws -> [String] {
        let text = try await database.superuserChecked(
            "SELECT host(client_addr) FROM pg_stat_activity WHERE usename = '\(PostgresTestHost.user)' AND datname = '\(PostgresTestHost.database)'"
        )
        return text.split(separator: "\n").map(String.init)
    }
}

/// Runs `body` with a test host, its own kiln network and a PostgreSQL host on it; afterwards
/// stops the database, checks that kiln left nothing (containers, cgroups, mounts, namespaces,
/// veths, addresses, firewall rules), removes the network and checks its bridge and rules are gone.
func withBootPostgres(_ body: (BootPostgresBed) async throws -> Void) async throws {
    try await withTestHost { host in
        let random = UInt32.random(in: 0...UInt32.max)
        var environment = host.environment
        environment["KILN_BRIDGE"] = "kb\(String(random & 0xffffff, radix: 16))"
        environment["KILN_SUBNET"] = "10.213.\(100 + Int(random % 150)).0/24"
        environment["KILN_DNS"] = "127.0.0.1"
        let configuration = try NetworkConfiguration.kilnDefault(environment: environment)
        let network = try CNINetwork.kiln(stateDirectory: host.paths.state, configuration: configuration)
        var failure: (any Error)?
        do {
            let database = try await PostgresTestHost.start(on: network, subnet: configuration.subnet)
            do {
                try await body(
                    BootPostgresBed(host: host, environment: environment, network: network, configuration: configuration, database: database))
            } catch {
                failure = error
            }
            _ = try? runKiln(["stop", "--all"], environment: environment)
            try await database.stop()
            if failure == nil {
                try await expectNoLeftovers(host, network: network)
                #expect(try await network.usage().isEmpty, "the network still holds something")
            }
        } catch {
            failure = failure ?? error
        }
        do { try await network.tearDown() } catch { Issue.record("tearing the network down: \(error)") }
        #expect(((try? await network.firewall?.allRules()) ?? []) == [], "the network's iptables rules outlive it")
        let link = try await Subprocess.run("/usr/sbin/ip", ["link", "show", configuration.bridge])
        #expect(!link.status.isSuccess, "the bridge \(configuration.bridge) outlives the network")
        if let failure { throw failure }
    }
}

/// An HTTP exchange with curl from the host (the host reaches instances at their addresses).
private func curl(_ url: String, method: String = "GET", json: String? = nil) async throws -> (status: Int, body: String) {
    var arguments = ["-s", "-m", "15", "-X", method, "-w", "\n%{http_code}", url]
    if let json { arguments += ["-H", "Content-Type: application/json", "--data", json] }
    let output = try await Subprocess.run("/usr/bin/curl", arguments, environment: nil, input: nil)
    let lines = output.stdout.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
}

private func bootJSON(_ text: String) -> [String: Any]? {
    try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
}

extension Integration {
    @Suite(
        "Spring Boot 3 sample with a real PostgreSQL on the kiln network, through the kiln binary", .serialized,
        .enabled(if: PostgresTestHost.isInstalled, "needs Debian's postgresql-15 (make setup)"),
        .enabled(if: BootPostgresBed.isBuilt, "needs examples/boot-petclinic/build/app.jar (make samples)"))
    struct BootPostgresTests {
        /// The bake, run while the test watches pg_stat_activity: what it saw before the
        /// checkpoint and right after the preflight passed.
        struct WatchedBake {
            var status: TerminationStatus
            var stdout: String
            var stderr: String
            /// Most of the bake sandbox's connections seen at once before `beforeCheckpoint` was reported.
            var mostConnectionsBefore = 0
            /// The app's connections when `preflight: ok` was printed (nil: never printed).
            var connectionsAtPreflight: Int?
        }

        static func bakeWatchingConnections(_ bed: BootPostgresBed, _ arguments: [String]) async throws -> WatchedBake {
            let scratch = "\(bed.host.scratch)/bake-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            let out = open("\(scratch)/stdout", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            let err = open("\(scratch)/stderr", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            let pid = try Subprocess.spawn(kilnBinary, arguments, environment: bed.environment, stdout: .descriptor(out), stderr: .descriptor(err))
            close(out)
            close(err)
            var watched = WatchedBake(status: .exited(-1), stdout: "", stderr: "")
            var status: Int32 = 0
            while waitpid(pid, &status, WNOHANG) == 0 {
                let progress = (try? String(contentsOfFile: "\(scratch)/stderr", encoding: .utf8)) ?? ""
                let connections = (try? await bed.clientAddresses().count) ?? 0
                if !progress.contains("beforeCheckpoint of") {
                    watched.mostConnectionsBefore = max(watched.mostConnectionsBefore, connections)
                } else if watched.connectionsAtPreflight == nil, progress.contains("preflight: ok") {
                    watched.connectionsAtPreflight = connections
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            watched.status = TerminationStatus(waitStatus: status)
            watched.stdout = (try? String(contentsOfFile: "\(scratch)/stdout", encoding: .utf8)) ?? ""
            watched.stderr = (try? String(contentsOfFile: "\(scratch)/stderr", encoding: .utf8)) ?? ""
            return watched
        }

        /// Issue 15 item 7, issue 16's first acceptance line: baked with the agent, the pool is
        /// closed before the dump; 3 copies each read and write through connections of their own,
        /// from their own addresses.
        @Test func withTheAgentThreeCopiesReadAndWriteThroughTheirOwnConnections() async throws {
            try await withBootPostgres { bed in
                let bake = try await Self.bakeWatchingConnections(bed, bed.bakeArguments("boot", ["--json"]))
                #expect(bake.status == .exited(0), "kiln bake: \(bake.stderr)\n\(bake.stdout)")
                guard bake.status == .exited(0) else { return }
                print("bake progress:\n\(bake.stderr)")
                #expect(bake.stderr.contains("beforeCheckpoint of 2 CRaC resources"), "Spring's lifecycle and the pool's resource: \(bake.stderr)")
                #expect(bake.stderr.contains("preflight: ok"), "the dump held no established connection: \(bake.stderr)")
                #expect(bake.mostConnectionsBefore >= 1, "the pool was open during the cold start and warm-up")
                #expect(bake.connectionsAtPreflight == 0, "PostgreSQL saw \(bake.connectionsAtPreflight ?? -1) connections of the app at the dump")
                let manifest = bootJSON(bake.stdout)
                #expect(manifest?["network"] as? String == "kiln", "\(bake.stdout.prefix(400))")
                #expect((manifest?["sandbox"] as? [String: Any])?["agent"] != nil, "baked with the agent")

                let run = try runKiln(["run", "boot", "--count", "3", "--json"], environment: bed.environment)
                #expect(run.status == .exited(0), "kiln run: \(run.stderr)\n\(run.stdout)")
                let ps = try runKiln(["ps", "--json"], environment: bed.environment)
                let instances = (bootJSON(ps.stdout)?["instances"] as? [[String: Any]]) ?? []
                let copies = instances.compactMap { row -> (id: String, address: String)? in
                    guard let id = row["id"] as? String, let address = row["address"] as? String else { return nil }
                    return (id, address)
                }
                #expect(copies.count == 3, "kiln ps: \(ps.stdout)")
                #expect(Set(copies.map(\.address)).count == 3, "each copy has an address of its own: \(copies)")

                for (index, copy) in copies.enumerated() {
                    let base = "http://\(copy.address):8080"
                    let lastName = ["Alpha", "Bravo", "Charlie"][index % 3]
                    let read = try await curl("\(base)/owners/1")
                    #expect(read.status == 200, "\(copy.id) reads owner 1: \(read.body.prefix(300))")
                    let created = try await curl(
                        "\(base)/owners", method: "POST",
                        json: #"{"firstName":"Copy","lastName":"\#(lastName)","address":"1 Oven St","city":"Madison","telephone":"6085551023"}"#)
                    #expect(created.status == 201, "\(copy.id) writes an owner: \(created.status) \(created.body.prefix(300))")
                    let back = try await curl("\(base)/owners?lastName=\(lastName)")
                    let total = bootJSON(back.body)?["total"] as? Int
                    #expect(back.status == 200 && total == 1, "\(copy.id) reads it back: \(back.body.prefix(300))")
                    let row = try await bed.database.superuserChecked(
                        "SELECT count(*) FROM owners WHERE first_name = 'Copy' AND last_name = '\(lastName)'", database: PostgresTestHost.database)
                    #expect(row == "1", "the row of \(copy.id) is in PostgreSQL")
                    let identity = try await curl("\(base)/id")
                    #expect(bootJSON(identity.body)?["hostname"] as? String == copy.id, "\(identity.body.prefix(300))")
                }
                let addresses = Set(try await bed.clientAddresses())
                print("pg_stat_activity client addresses: \(addresses.sorted()); copies: \(copies.map { "\($0.id)=\($0.address)" })")
                #expect(addresses == Set(copies.map(\.address)), "pg_stat_activity shows each copy's own address, and only those")

                let stop = try runKiln(["stop", "--all"], environment: bed.environment)
                #expect(stop.status == .exited(0), "\(stop.stderr)")
                // The copies' connections end with them.
                let deadline = ContinuousClock.now + .seconds(10)
                var left = try await bed.clientAddresses()
                while !left.isEmpty, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                    left = try await bed.clientAddresses()
                }
                #expect(left.isEmpty, "connections outlive the copies: \(left)")
            }
        }

        /// Without the agent nothing closes the pool: the preflight refuses the dump, naming the
        /// connection to PostgreSQL and the fix; nothing is left behind.
        @Test func withoutTheAgentThePreflightRefusesNamingThePostgresConnection() async throws {
            try await withBootPostgres { bed in
                let bake = try runKiln(bed.bakeArguments("noagent", ["--no-agent", "--json"]), environment: bed.environment)
                #expect(bake.status != .exited(0), "the bake should be refused: \(bake.stdout)")
                let error = bootJSON(bake.stdout)?["error"] as? [String: Any]
                #expect(error?["code"] as? String == "checkpoint-blocked", "\(bake.stdout)\n\(bake.stderr)")
                let details = (error?["details"] as? [String] ?? []).joined(separator: "\n")
                let message = error?["message"] as? String ?? ""
                #expect(message.contains("tcp-connection"), "\(message)")
                #expect(details.contains("tcp-connection: pid "), "\(details)")
                #expect(details.contains("-> \(bed.database.address):5432 (ESTABLISHED)"), "names PostgreSQL's address:port: \(details)")
                #expect(details.contains("fix: close the connection (pool, database, broker) in a CRaC beforeCheckpoint"), "\(details)")
                #expect(!details.contains("opened by"), "no stacks without the agent")
                print("refusal: \(message)\n\(details.split(separator: "\n").prefix(6).joined(separator: "\n"))")

                let list = try runKiln(["ls", "--json"], environment: bed.environment)
                #expect(!list.stdout.contains("noagent"), "no snapshot: \(list.stdout)")
                #expect(!bed.host.kiln.store.exists("noagent"))
                #expect(try await bed.clientAddresses().isEmpty, "the bake's connections went with its sandbox")
                // The only address left on the network is the database host's.
                let usage = try await bed.network.usage()
                #expect(Array(usage.addresses.values) == [bed.database.name], "\(usage)")
                #expect(usage.veths.count == 1, "\(usage)")
                #expect(usage.rules.isEmpty, "\(usage)")
            }
        }

        /// `kiln bake --preflight` with the agent, the sample's pool left open at the checkpoint
        /// (PETCLINIC_CLOSE_POOL_AT_CHECKPOINT=false): the PostgreSQL connection is listed with the
        /// Java stack that opened it, in text and in JSON.
        @Test func preflightWithTheAgentShowsTheStackThatOpenedTheConnection() async throws {
            try await withBootPostgres { bed in
                let keepOpen = ["PETCLINIC_CLOSE_POOL_AT_CHECKPOINT=false"]
                let text = try runKiln(bed.bakeArguments("pf", ["--preflight"], environment: keepOpen), environment: bed.environment)
                #expect(text.status == .exited(0), "\(text.stderr)")
                print("kiln bake --preflight:\n\(text.stdout)")
                let peer = "\(bed.database.address):5432"
                #expect(text.stdout.contains("tcp-connection: pid "), "\(text.stdout)")
                #expect(text.stdout.contains("-> \(peer) (ESTABLISHED)"), "\(text.stdout)")
                #expect(text.stdout.contains("opened by (Java stack of its first I/O"), "\(text.stdout)")
                #expect(text.stdout.contains("        at org.postgresql."), "pgjdbc's frames: \(text.stdout)")
                #expect(text.stdout.contains("        at com.zaxxer.hikari."), "HikariCP's frames: \(text.stdout)")
                #expect(text.stdout.contains("A bake would refuse the dump"), "\(text.stdout)")

                let json = try runKiln(bed.bakeArguments("pf", ["--preflight", "--json"], environment: keepOpen), environment: bed.environment)
                #expect(json.status == .exited(0), "\(json.stderr)")
                let report = bootJSON(json.stdout)
                #expect(report?["blocked"] as? Bool == true, "\(json.stdout.prefix(500))")
                let toDatabase = (report?["findings"] as? [[String: Any]] ?? []).filter {
                    $0["kind"] as? String == "tcp-connection" && $0["peer"] as? String == peer
                }
                #expect(!toDatabase.isEmpty, "\(json.stdout.prefix(1500))")
                for finding in toDatabase {
                    let frames = (finding["openedBy"] as? [String: Any])?["frames"] as? [String] ?? []
                    #expect(frames.first?.hasPrefix("org.postgresql.") == true, "the innermost frame outside the JDK is pgjdbc's: \(frames)")
                    #expect(frames.contains { $0.hasPrefix("com.zaxxer.hikari.") }, "\(frames)")
                }
                #expect(!bed.host.kiln.store.exists("pf"))
                #expect(try await bed.clientAddresses().isEmpty, "the preflight's sandbox and its connections are gone")
            }
        }
    }
}
