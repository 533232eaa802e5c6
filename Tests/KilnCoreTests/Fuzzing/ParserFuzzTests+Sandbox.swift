import Foundation
import Testing

@testable import KilnEngine
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

/// The sandbox's own parsers: memory limits and readiness checks.
extension ParserFuzzTests {
    /// `--memory`: an independent reading (Double arithmetic, which cannot wrap) must agree on
    /// every input, accepted or not.
    @Test func memoryLimits() async throws {
        let inputs = StringFuzzInputs(
            seeds: FuzzCorpus.lines("memory"),
            dictionary: ["k", "m", "g", "t", "MiB", "GB", "0", "9", "-", ".", " ", "17592186044416", "9223372036854775807"])
        try #require(!inputs.seeds.isEmpty)
        await Fuzzer("memory", iterations: 20_000).run(seeds: inputs.seeds, generate: inputs.next, describe: { $0 }) { text in
            let expected = Self.expectedMemoryBytes(text)
            do {
                let bytes = try SandboxSpec.memoryLimit(parsing: text)
                try invariant(
                    expected.map { Double(bytes) == $0 } == true,
                    "read '\(text)' as \(bytes) bytes, expected \(expected.map { "\($0)" } ?? "an error")")
            } catch let error as KilnError {
                try invariant(error.code == .invalidArgument && error.message.contains("'\(text)'"), "refused without naming the input: \(error)")
                try invariant(expected == nil, "refused '\(text)', which is \(expected!) bytes")
            }
        }
    }

    /// Digits and an optional unit (spaces around allowed), 6 MiB to 1 TiB; nil otherwise.
    static func expectedMemoryBytes(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = trimmed.prefix { ("0"..."9").contains($0) }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        let scales: [String: Double] = [
            "k": 1024, "kb": 1024, "kib": 1024, "": 1_048_576, "m": 1_048_576, "mb": 1_048_576, "mib": 1_048_576,
            "g": 1_073_741_824, "gb": 1_073_741_824, "gib": 1_073_741_824,
        ]
        let scale = scales[unit]
        guard !digits.isEmpty, digits.unicodeScalars.allSatisfy(\.isASCII), let scale, let value = Double(digits) else { return nil }
        let bytes = value * scale
        return bytes >= 6 * 1_048_576 && bytes <= 1_099_511_627_776 ? bytes : nil
    }

    @Test func readinessChecks() async throws {
        let paths = StringFuzzInputs(
            seeds: FuzzCorpus.lines("warmup").map { "/" + $0.drop { $0 != "/" }.dropFirst() }, dictionary: ["/", " ", "\r\n", "\u{0}", "?", "health"])
        let seconds = FuzzCorpus.lines("seconds").compactMap(Double.init) + EdgeValues.doubles
        await Fuzzer("readiness", iterations: 20_000).run(
            generate: { random in
                ReadinessCheck(path: paths.next(&random), timeoutSeconds: random.oneIn(2) ? 60 : random.pick(seconds))
            }, describe: { "\($0)" }
        ) { check in
            do {
                try check.validate()
            } catch let error as KilnError {
                try invariant(error.code == .invalidArgument && error.hint?.contains("--ready") == true, "refused with \(error)")
                return
            }
            try invariant(Self.isRequestLinePath(check.path), "accepted path '\(check.path)'")
            try invariant(check.timeoutSeconds > 0 && check.timeoutSeconds < 1e12, "accepted timeout \(check.timeoutSeconds)")
            _ = Duration.milliseconds(Int(check.timeoutSeconds * 1000))  // what Baker does with it
        }
    }

    // MARK: Helpers

    /// A path that can go on `GET <path> HTTP/1.1` as it is.
    static func isRequestLinePath(_ path: String) -> Bool {
        path.first == "/" && !path.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F }
    }

    static func checkGeneratedSeed(_ name: String, _ written: Data) throws {
        let url = FuzzCorpus.directory.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["KILN_FUZZ_WRITE_CORPUS"] == "1" { try written.write(to: url) }
        let committed = try Data(contentsOf: url)
        #expect(committed == written, "\(name) is not what the type writes now; KILN_FUZZ_WRITE_CORPUS=1 rewrites it")
    }

    static func sampleManifest() -> SnapshotManifest {
        let digest = { (seed: Character) in String(repeating: String(seed), count: 64) }
        return SnapshotManifest(
            name: "hello", createdAt: Date(timeIntervalSince1970: 1_795_000_000),
            sandbox: SandboxSpec(
                command: ["examples/hello-spring/bin/hello-spring"], environment: ["JAVA_TOOL_OPTIONS": "-XX:+UseSerialGC"],
                workingDirectory: "/srv/app", appDirectory: "/srv/app", port: 8080),
            readiness: ReadinessCheck(path: "/health"), warmup: [WarmupStep(count: 200, path: "/greet"), WarmupStep(count: 100, path: "/owners/1")],
            host: HostFacts(kernel: "6.18.44", criuVersion: "4.2.1", runtime: "runc 1.1.5+ds1"),
            timings: BakeTimings(coldStartMs: 6116, warmupMs: 5567, compactMs: 6960, checkpointMs: 490), compacted: true,
            files: [
                SnapshotFile(path: "core-1.img", size: 2186, sha256: digest("a")), SnapshotFile(path: "inventory.img", size: 42, sha256: digest("0")),
                SnapshotFile(path: "pages-1.img", size: 120_000_000, sha256: digest("f")),
                SnapshotFile(path: "pstree.img", size: 37, sha256: digest("9")),
            ])
    }

    static func sampleRecord() -> InstanceRecord {
        InstanceRecord(
            id: "hello-06ed7c", snapshot: "hello", pid: 24042, shimPid: 24040, port: 8080, createdAt: Date(timeIntervalSince1970: 1_795_000_000),
            networkNamespacePath: "/run/kiln/netns/hello-06ed7c", cgroupPath: "/kiln/hello-06ed7c",
            logPath: "/run/kiln/instances/hello-06ed7c/console.log",
            restoreMs: 386, firstResponseMs: 408, sharesMemory: true)
    }
}
