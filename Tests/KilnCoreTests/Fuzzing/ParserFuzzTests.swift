import Foundation
import Testing

@testable import KilnBench
@testable import KilnEngine
@testable import KilnGateway
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// Issue 7, "Bad input": every parser of what files, users and the admin API give kiln answers a
/// bad input with a ``KilnError`` of the right kind that names the problem, and anything it
/// accepts is something the rest of kiln can use (no trap later, no path that escapes).
///
/// Each test checks its corpus seeds as they are, then ~20,000 mutated and generated inputs (see
/// ``Fuzzer`` for running longer and replaying a failure).
@Suite("fuzzing the parsers")
struct ParserFuzzTests {
    // MARK: Snapshot manifests

    @Test func manifestSeedsAreWhatTheTypesWrite() throws {
        try Self.checkGeneratedSeed("manifest/generated.json", Self.sampleManifest().encoded())
        try Self.checkGeneratedSeed("instance/generated.json", SnapshotManifest.encoder.encode(Self.sampleRecord()))
        #expect(
            try SnapshotManifest.decode(Data(contentsOf: FuzzCorpus.directory.appendingPathComponent("manifest/generated.json")), source: "seed")
                == Self.sampleManifest())
    }

    @Test func everyCorpusLineIsAJSONString() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: FuzzCorpus.directory.path).filter { $0.hasSuffix(".jsonl") }
        #expect(files.count >= 8)
        for file in files {
            let text = try String(contentsOf: FuzzCorpus.directory.appendingPathComponent(file), encoding: .utf8)
            let inputs = text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty && !$0.hasPrefix("#") }
            #expect(FuzzCorpus.lines(String(file.dropLast(6))).count == inputs.count, "\(file) has a line that is not a JSON string")
        }
    }

    /// Each `regression-*` seed is an input a parser once accepted and must refuse now.
    @Test func regressionSeedsAreRefused() throws {
        let manifests = FuzzCorpus.namedFiles("manifest").filter { $0.name.hasPrefix("regression-") }
        let records = FuzzCorpus.namedFiles("instance").filter { $0.name.hasPrefix("regression-") }
        let updates = FuzzCorpus.namedFiles("scale").filter { $0.name.hasPrefix("regression-") }
        #expect(manifests.count >= 8 && records.count >= 3 && updates.count >= 2)
        for (name, bytes) in manifests {
            let error = #expect(throws: KilnError.self, "\(name)") { try SnapshotManifest.decode(Data(bytes), source: name) }
            #expect(error?.code == .snapshotCorrupt && error?.message.contains(name) == true, "\(name): \(String(describing: error))")
        }
        for (name, bytes) in records {
            #expect(throws: KilnError.self, "\(name)") { try InstanceRecord.decode(Data(bytes), source: name) }
        }
        for (name, bytes) in updates {
            let update = try JSONDecoder().decode(ScalingPolicyUpdate.self, from: Data(bytes))
            #expect(throws: KilnError.self, "\(name)") { try update.applied(to: ScalingPolicy()).validate() }
        }
    }

    @Test func manifests() async throws {
        let seeds = FuzzCorpus.files("manifest")
        try #require(seeds.count >= 3, "no manifest seeds under \(FuzzCorpus.directory.path)")
        let inputs = JSONFuzzInputs(seeds: seeds, dictionary: Self.manifestTokens, generate: Self.generatedManifest)
        await Fuzzer("manifest", iterations: 8_000).run(
            seeds: seeds, generate: inputs.next, describe: { String(decoding: $0, as: UTF8.self) }, check: { try Self.checkManifest(Data($0)) })
    }

    /// A manifest decodes to one kiln could have written, or is refused as `snapshot-corrupt`
    /// with a message that names the file and the problem.
    static func checkManifest(_ data: Data) throws {
        let source = "/store/snapshots/fuzz/manifest.json"
        let manifest: SnapshotManifest
        do {
            manifest = try SnapshotManifest.decode(data, source: source)
        } catch let error as KilnError {
            try invariant(error.code == .snapshotCorrupt, "refused as \(error.code), not snapshot-corrupt: \(error.message)")
            try invariant(error.message.hasPrefix("the manifest \(source) is corrupt: "), "the message does not name the file: \(error.message)")
            try invariant(
                error.message.count > "the manifest \(source) is corrupt: ".count + 5, "the message does not name the problem: \(error.message)")
            try invariant(error.hint?.contains("kiln bake") == true, "no hint to re-bake: \(error)")
            return
        } catch {
            throw InvariantViolation(description: "threw \(type(of: error)), not a KilnError: \(error)")
        }
        try invariant((try? SnapshotStore.validate(name: manifest.name)) != nil, "accepted the snapshot name '\(manifest.name)'")
        try invariant((1...65535).contains(manifest.sandbox.port), "accepted port \(manifest.sandbox.port)")
        try invariant(!manifest.sandbox.command.isEmpty, "accepted an empty command")
        try invariant(isRequestLinePath(manifest.readiness.path), "accepted readiness path '\(manifest.readiness.path)'")
        // Baker turns it into milliseconds with Int(seconds * 1000), which traps past Int.max.
        try invariant(
            manifest.readiness.timeoutSeconds > 0 && manifest.readiness.timeoutSeconds < 1e12,
            "accepted readiness timeout \(manifest.readiness.timeoutSeconds)")
        for step in manifest.warmup {
            try invariant(step.count > 0 && isRequestLinePath(step.path), "accepted warmup step \(step.count):\(step.path)")
        }
        try invariant(manifest.sandbox.memoryLimitBytes > 0, "accepted memory limit \(manifest.sandbox.memoryLimitBytes)")
        try invariant(manifest.sandbox.workingDirectory.hasPrefix("/"), "accepted working directory '\(manifest.sandbox.workingDirectory)'")
        try invariant(
            manifest.compression == nil || manifest.compression == .zstd, "accepted compression '\(String(describing: manifest.compression))'")
        try invariant(!manifest.files.isEmpty, "accepted a manifest without files")
        var total: Int64 = 0
        for file in manifest.files {
            try invariant(!file.path.utf8.contains(0), "accepted a NUL in file path '\(file.path)'")
            // Joined to the image directory, a listed path must name a file inside it.
            let joined = URL(fileURLWithPath: "/images").appendingPathComponent(file.path).standardizedFileURL.path
            try invariant(
                !file.path.hasPrefix("/") && joined.hasPrefix("/images/") && joined.count > "/images/".count,
                "accepted file path '\(file.path)' (-> \(joined))")
            // FileDigest writes lowercase ASCII hex; anything else can never verify.
            try invariant(
                file.sha256.utf8.count == 64 && file.sha256.allSatisfy { "0123456789abcdef".contains($0) }, "accepted sha256 '\(file.sha256)'")
            try invariant(file.size >= 0, "accepted size \(file.size)")
            total = total.addingReportingOverflow(file.size).partialValue
        }
        try invariant(Set(manifest.files.map(\.path)).count == manifest.files.count, "accepted a file listed twice")
        try invariant(manifest.sizeBytes == total, "accepted size \(manifest.sizeBytes) for files of \(total) bytes")
        // What it accepts, it writes back and reads again unchanged.
        let again = try SnapshotManifest.decode(manifest.encoded(), source: "re-encoded")
        try invariant(again == manifest, "re-encoding changed it")
    }

    /// A manifest built field by field, each field usually sound and sometimes an edge value,
    /// so inputs get past JSON syntax and reach the checks behind it.
    static func generatedManifest(_ random: inout FuzzRandom) -> JSONValue {
        func or(_ sound: JSONValue, _ random: inout FuzzRandom) -> JSONValue {
            guard random.oneIn(12) else { return sound }
            return random.oneIn(2) ? .number(random.pick(EdgeValues.numbers)) : .string(random.pick(EdgeValues.strings))
        }
        func string(_ sound: [String], _ random: inout FuzzRandom) -> JSONValue { or(.string(random.pick(sound)), &random) }
        let hex = Array("0123456789abcdef")
        let files: [JSONValue] = (0..<1 + random.below(5)).map { index in
            let sha = String((0..<64).map { _ in hex[random.below(16)] })
            return .object([
                (
                    "path",
                    string(["core-\(index).img", "pages-\(index).img", "pages-\(index).img.zst", "sub/dir-\(index).img", "inventory.img"], &random)
                ),
                ("sha256", or(.string(random.oneIn(20) ? sha.uppercased() : sha), &random)),
                ("size", or(.number(String(random.below(1 << 20))), &random)),
            ])
        }
        let root: JSONValue =
            random.oneIn(3)
            ? .object([("directory", .object([("_0", string(["/srv/rootfs", "rootfs", "/srv/../etc"], &random))]))])
            : .object([("host", .object([]))])
        return .object([
            ("compacted", or(.bool(random.oneIn(2)), &random)),
            ("compression", random.oneIn(3) ? string(["zstd", "gzip"], &random) : .null),
            ("createdAt", string(["2026-11-25T10:55:45Z", "2026-11-25T10:55:45.123Z", "yesterday"], &random)),
            ("files", .array(files)),
            ("format", or(.number("1"), &random)),
            (
                "host",
                .object([
                    ("criuVersion", string(["4.2.1"], &random)), ("kernel", string(["6.18.44"], &random)),
                    ("runtime", string(["runc 1.1.5"], &random)),
                ])
            ),
            ("name", string(["hello", "svc-2_b", "9lives", "Hello", "../x", ""], &random)),
            (
                "readiness",
                .object([
                    ("path", string(["/health", "/", "health", "/a b"], &random)),
                    ("timeoutSeconds", or(.number(random.pick(["60", "0.5", "1e300"])), &random)),
                ])
            ),
            (
                "sandbox",
                .object([
                    ("appDirectory", random.oneIn(4) ? .null : string(["/work/main", "work/main", "/work/../etc"], &random)),
                    ("command", .array((0..<random.below(3)).map { _ in string(["java", "-jar", "app.jar", "bin/hello"], &random) })),
                    (
                        "environment",
                        .object(random.oneIn(2) ? [] : [(random.pick(["JAVA_TOOL_OPTIONS", "", "A=B"]), string(["-Xmx256m", ""], &random))])
                    ),
                    ("memoryLimitBytes", or(.number(random.pick(["1073741824", "536870912", "0", "-1"])), &random)),
                    ("pidsLimit", or(.number("1024"), &random)),
                    ("port", or(.number(random.pick(["8080", "1", "65535", "0", "65536"])), &random)),
                    ("rootFilesystem", root),
                    ("tmpfsSizeBytes", or(.number("67108864"), &random)),
                    ("workingDirectory", string(["/work/main", "/", "relative"], &random)),
                ])
            ),
            ("shareMemory", or(.bool(true), &random)),
            (
                "sizeBytes",
                or(
                    .number(
                        String(
                            files.reduce(0) { sum, file in
                                guard case .object(let members) = file, case .number(let size)? = members.first(where: { $0.key == "size" })?.value
                                else { return sum }
                                return sum &+ (Int(size) ?? 0)
                            })), &random)
            ),
            (
                "timings",
                .object(
                    ["checkpointMs", "coldStartMs", "compactMs", "warmupMs"].map { name -> (key: String, value: JSONValue) in
                        (name, or(.number("403.5"), &random))
                    })
            ),
            (
                "warmup",
                .array(
                    (0..<random.below(3)).map { _ in
                        .object([
                            ("count", or(.number(random.pick(["200", "1", "0", "1000001"])), &random)),
                            ("path", string(["/greet", "greet"], &random)),
                        ])
                    })
            ),
        ])
    }

    static let manifestTokens = [
        "\"..\"", "\"/\"", "\"\"", "null", "-1", "1e309", "\"zstd\"", "\"format\"", "\"files\"", "\"path\"", "\"sha256\"", "../", "%2e", "\\u0000",
        "\\ud800", "{\"host\":{}}", "{\"directory\":{\"_0\":\"/\"}}",
    ]

    // MARK: Instance records

    @Test func instanceRecords() async throws {
        let seeds = FuzzCorpus.files("instance")
        try #require(seeds.count >= 2, "no instance seeds under \(FuzzCorpus.directory.path)")
        let inputs = JSONFuzzInputs(seeds: seeds, dictionary: ["\"..\"", "0", "-1", "\"/\"", "\"\"", "2147483648", "\"../..\""])
        await Fuzzer("instance-record", iterations: 8_000).run(seeds: seeds, generate: inputs.next, describe: { String(decoding: $0, as: UTF8.self) })
        { bytes in
            let source = "/run/kiln/instances/x/instance.json"
            let record: InstanceRecord
            do {
                record = try InstanceRecord.decode(Data(bytes), source: source)
            } catch let error as KilnError {
                try invariant(error.code == .instanceNotFound, "refused as \(error.code): \(error.message)")
                try invariant(
                    error.message.hasPrefix("the instance record \(source) is unusable: "), "the message does not name the record: \(error.message)")
                return
            }
            // kiln removes instanceDirectory(id), the netns and cgroup paths, and reaps shimPid.
            try invariant(!record.id.isEmpty && !record.id.contains("/") && record.id != "." && record.id != "..", "accepted id '\(record.id)'")
            try invariant(record.pid > 0 && record.shimPid > 0, "accepted pids \(record.pid), \(record.shimPid)")
            try invariant((1...65535).contains(record.port), "accepted port \(record.port)")
            for path in [record.networkNamespacePath, record.cgroupPath, record.logPath] {
                try invariant(!path.split(separator: "/").contains("..") && !path.utf8.contains(0), "accepted path '\(path)'")
            }
            let again = try InstanceRecord.decode(SnapshotManifest.encoder.encode(record), source: "re-encoded")
            try invariant(again == record, "re-encoding changed it")
        }
    }

    // MARK: Gateway configuration

    /// `PUT /functions/NAME/scale` bodies, decoded as the admin API does. An accepted policy is
    /// used by FunctionPool at once: its durations and its room arithmetic must not trap.
    @Test func scalingUpdates() async throws {
        let seeds = FuzzCorpus.files("scale")
        try #require(seeds.count >= 3)
        let inputs = JSONFuzzInputs(
            seeds: seeds, dictionary: ["\"min\"", "\"max\"", "\"concurrency\"", "\"keepAliveSeconds\"", "1e21", "-1", "9223372036854775807"]
        ) { random in
            .object(
                [("min", "max"), ("max", "max"), ("concurrency", "concurrency"), ("keepAliveSeconds", "seconds")].compactMap {
                    key, kind -> (key: String, value: JSONValue)? in
                    guard random.oneIn(2) else { return nil }
                    return (key, .number(kind == "seconds" ? random.pick(EdgeValues.numbers) : String(random.pick(EdgeValues.integers))))
                })
        }
        await Fuzzer("scale-update", iterations: 20_000).run(seeds: seeds, generate: inputs.next, describe: { String(decoding: $0, as: UTF8.self) }) {
            bytes in
            guard let update = try? JSONDecoder().decode(ScalingPolicyUpdate.self, from: Data(bytes)) else { return }  // 400 from the admin API
            try Self.checkPolicy(update.applied(to: ScalingPolicy()))
        }
    }

    /// A policy is refused with `invalid-argument` and a hint, or is usable.
    static func checkPolicy(_ policy: ScalingPolicy) throws {
        do {
            try policy.validate()
        } catch let error as KilnError {
            try invariant(error.code == .invalidArgument && error.hint != nil && !error.message.isEmpty, "refused with \(error)")
            return
        }
        try invariant(
            policy.minInstances >= 0 && policy.minInstances <= policy.maxInstances, "accepted min \(policy.minInstances), max \(policy.maxInstances)")
        try invariant(
            policy.concurrency >= 1 && policy.queueLimit >= 0, "accepted concurrency \(policy.concurrency), queue limit \(policy.queueLimit)")
        // Duration.seconds(_:) traps from ~1.7e20 s; FunctionPool also adds these to instants.
        for (name, seconds) in [("keep-alive", policy.keepAliveSeconds), ("queue timeout", policy.queueTimeoutSeconds)] {
            try invariant(seconds >= 0 && seconds < 1e15, "accepted \(name) \(seconds) s")
        }
        _ = ContinuousClock.now + policy.keepAlive + policy.queueTimeout
        // FunctionPool sums the room of up to maxInstances instances of `concurrency` each.
        let (room, overflow) = policy.maxInstances.multipliedReportingOverflow(by: policy.concurrency)
        try invariant(
            !overflow && room < Int.max / 4,
            "accepted max \(policy.maxInstances) x concurrency \(policy.concurrency): the pool's arithmetic overflows")
    }

    struct ServeOptions: CustomStringConvertible {
        var listen: String
        var admin: String
        var warm: [String]
        var policy: ScalingPolicy
        var requestTimeout: Double

        var description: String {
            "--listen \(listen) --admin \(admin) \(warm.map { "--warm \($0)" }.joined(separator: " ")) --request-timeout \(requestTimeout) policy: \(policy)"
        }
    }

    /// `kiln serve`'s options, as `ServeCommand` hands them to `GatewayConfiguration.parsing`.
    @Test func serveOptions() async throws {
        let listen = StringFuzzInputs(
            seeds: FuzzCorpus.lines("listen"), dictionary: [":", "[", "]", "::1", "127.", "localhost", "0", "-1", "65536", ".example.com", " "])
        let warm = StringFuzzInputs(seeds: FuzzCorpus.lines("warm"), dictionary: ["=", "hello", "-1", "0", "257", "Hello", "../x"])
        let seconds = FuzzCorpus.lines("seconds").compactMap(Double.init) + EdgeValues.doubles
        try #require(!listen.seeds.isEmpty && !warm.seeds.isEmpty && !seconds.isEmpty)
        func number(_ sound: Int, _ random: inout FuzzRandom) -> Int { random.oneIn(6) ? random.pick(EdgeValues.integers) : sound }
        func time(_ sound: Double, _ random: inout FuzzRandom) -> Double { random.oneIn(6) ? random.pick(seconds) : sound }
        await Fuzzer("serve-options", iterations: 20_000).run(
            generate: { random in
                ServeOptions(
                    listen: random.oneIn(3) ? "127.0.0.1:8080" : listen.next(&random),
                    admin: random.oneIn(3) ? "127.0.0.1:8081" : listen.next(&random),
                    warm: (0..<random.below(3)).map { _ in warm.next(&random) },
                    policy: ScalingPolicy(
                        minInstances: number(0, &random), maxInstances: number(4, &random), concurrency: number(8, &random),
                        keepAliveSeconds: time(60, &random), queueLimit: number(256, &random), queueTimeoutSeconds: time(30, &random)),
                    requestTimeout: time(60, &random))
            }, describe: \.description
        ) { options in
            let configuration: GatewayConfiguration
            do {
                configuration = try GatewayConfiguration.parsing(
                    listen: options.listen, admin: options.admin, defaultPolicy: options.policy, warm: options.warm,
                    requestTimeoutSeconds: options.requestTimeout)
            } catch let error as KilnError {
                try invariant(error.code == .invalidArgument && error.hint != nil && !error.message.isEmpty, "refused with \(error)")
                return
            }
            try invariant(
                Self.isLoopbackLiteral(configuration.admin.host), "accepted admin host '\(configuration.admin.host)', which need not be loopback")
            try invariant(
                configuration.requestTimeout > .zero && configuration.requestTimeout < .seconds(1e15),
                "accepted request timeout \(configuration.requestTimeout)")
            try Self.checkPolicy(configuration.defaultPolicy)
            for (name, policy) in configuration.policies {
                try invariant(
                    (try? SnapshotStore.validate(name: name)) != nil && policy.minInstances >= 1, "accepted --warm \(name)=\(policy.minInstances)")
                try Self.checkPolicy(policy)
            }
        }
    }

    /// What `--listen` and `--admin` accept reads back the same from its description, and only
    /// `localhost` or a loopback address literal counts as loopback.
    @Test func listenAddresses() async throws {
        let inputs = StringFuzzInputs(
            seeds: FuzzCorpus.lines("listen"), dictionary: [":", "[", "]", "::1", "127.", "localhost", "0", "65536", ".example.com", " ", "%", "/"])
        try #require(!inputs.seeds.isEmpty)
        await Fuzzer("listen-address", iterations: 20_000).run(seeds: inputs.seeds, generate: inputs.next, describe: { $0 }) { text in
            let address: ListenAddress
            do {
                address = try ListenAddress(parsing: text)
            } catch let error as KilnError {
                try invariant(error.code == .invalidArgument && error.message.contains("'\(text)'"), "refused without naming the input: \(error)")
                return
            }
            try invariant((0...65535).contains(address.port) && !address.host.isEmpty, "accepted \(address.host) port \(address.port)")
            try invariant(!address.host.utf8.contains { $0 <= 0x20 || $0 == 0x7F }, "accepted host '\(address.host)'")
            try invariant((try? ListenAddress(parsing: address.description)) == address, "'\(address)' does not read back as itself")
            try invariant(!address.isLoopback || Self.isLoopbackLiteral(address.host), "'\(address.host)' counts as loopback")
        }
    }

    /// The oracle for loopback, by another road than ListenAddress: `localhost`, or a numeric
    /// host (getaddrinfo without DNS) whose address is in 127.0.0.0/8 or is ::1.
    static func isLoopbackLiteral(_ host: String) -> Bool {
        if host == "localhost" { return true }
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let info = result else { return false }
        defer { freeaddrinfo(result) }
        guard let address = info.pointee.ai_addr else { return false }
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) >> 24 == 127 }
        case AF_INET6:
            return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) == [UInt8](repeating: 0, count: 15) + [1] }
            }
        default: return false
        }
    }

    // MARK: kiln bake options

    @Test func warmupSteps() async throws {
        let inputs = StringFuzzInputs(
            seeds: FuzzCorpus.lines("warmup"), dictionary: [":", "/", "0", "-1", "1000001", "9223372036854775808", " ", "\r\n", "?", "%20"])
        try #require(!inputs.seeds.isEmpty)
        await Fuzzer("warmup-step", iterations: 20_000).run(seeds: inputs.seeds, generate: inputs.next, describe: { $0 }) { text in
            let step: WarmupStep
            do {
                step = try WarmupStep(parsing: text)
            } catch let error as KilnError {
                try invariant(
                    error.code == .invalidArgument && error.message.hasPrefix("warmup '\(text)' "), "refused without naming the input: \(error)")
                try invariant(error.hint?.contains("COUNT:PATH") == true, "refused without the syntax: \(error)")
                return
            }
            try invariant((1...1_000_000).contains(step.count), "accepted count \(step.count)")
            try invariant(Self.isRequestLinePath(step.path), "accepted path '\(step.path)', which cannot go on a request line")
            try invariant((try? WarmupStep(parsing: step.description)) == step, "'\(step)' does not read back as itself")
        }
    }

    @Test func environmentEntries() async throws {
        let inputs = StringFuzzInputs(seeds: FuzzCorpus.lines("env"), dictionary: ["=", "==", "\u{0}", "A", " ", "PATH", "é"])
        try #require(!inputs.seeds.isEmpty)
        await Fuzzer("env", iterations: 20_000).run(
            generate: { random in (0...random.below(3)).map { _ in inputs.next(&random) } }, describe: { $0.description }
        ) { entries in
            let environment: [String: String]
            do {
                environment = try SandboxSpec.environment(parsing: entries)
            } catch let error as KilnError {
                let named = entries.first { error.message == "--env '\($0)' is not KEY=VALUE" }
                try invariant(error.code == .invalidArgument && named != nil, "refused without naming the entry: \(error)")
                try invariant(
                    named.map { $0.hasPrefix("=") || !$0.contains("=") || $0.utf8.contains(0) } == true, "refused the sound entry \(named!)")
                return
            }
            var expected: [String: String] = [:]
            for entry in entries {
                let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                try invariant(parts.count == 2 && !parts[0].isEmpty && !entry.utf8.contains(0), "accepted '\(entry)'")
                expected[String(parts[0])] = String(parts[1])
            }
            try invariant(environment == expected, "parsed \(environment), expected \(expected)")
        }
    }
}
