import Foundation
import Testing

@testable import KilnEngine
@testable import KilnOCI
@testable import KilnSnapshot
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite("the host check")
struct HostCheckTests {
    /// A bake host: x86_64 with AVX2 and AVX-512, kernel 6.18.3, CRIU 4.2.1, JDK 17.
    let baked = HostFacts(
        kernel: "6.18.3", criuVersion: "4.2.1", runtime: "runc 1.1.5+ds1", architecture: "x86_64", cpuVendor: "GenuineIntel",
        cpuModel: "Intel(R) Xeon(R) Platinum 8375C", cpuFlags: ["avx", "avx2", "avx512f", "bmi2", "sse4_2"],
        kernelFeatures: ["clone3_set_tid", "mnt_id", "ns_pid", "timerfd"], glibc: "2.36",
        jdk: JDKBuild(home: "/usr/lib/jvm/java-17-openjdk-amd64", version: "17.0.15+6-Debian-1deb12u1"), pageSize: 4096, cgroupVersion: 1)

    @Test func anIdenticalHostHasNoDifferences() {
        #expect(HostCheck.compare(recorded: baked, current: baked).isEmpty)
    }

    @Test func aMissingCPUFeatureIsRefusedNamingIt() throws {
        var here = baked
        here.cpuFlags = ["avx", "avx2", "bmi2", "sse4_2"]
        here.cpuModel = "Intel(R) Xeon(R) E5-2680 v4"
        let differences = HostCheck.compare(recorded: baked, current: here)
        let flags = try #require(differences.first)
        #expect(flags.fact == .cpuFlags && flags.severity == .refuse)
        #expect(flags.current.contains("avx512f"))
        #expect(flags.why.contains("SIGILL"))
        // The model alone is only a note, listed after the refusal.
        #expect(differences.dropFirst().map(\.fact) == [.cpuModel])
        #expect(differences.last?.severity == .note)

        let error = try #require(HostCheck.refusal(snapshot: "hello", differences: differences))
        #expect(error.code == .hostMismatch)
        #expect(error.message.contains("cpu-flags"))
        #expect(error.details.first?.hasPrefix("FACT") == true)
        #expect(error.details.contains { $0.contains("cpu-flags") && $0.contains("refuse") && $0.contains("avx512f") })
        #expect(error.details.contains { $0.contains("fix:") })
        #expect(error.hint?.contains("--ignore-host-check cpu-flags") == true)
    }

    @Test func anOlderCRIUIsRefusedANewerOneIsANote() throws {
        var older = baked
        older.criuVersion = "4.1.1"
        let refused = HostCheck.compare(recorded: baked, current: older)
        #expect(refused.map(\.fact) == [.criu])
        #expect(refused.first?.severity == .refuse)
        #expect(refused.first?.fix.contains("4.2.1") == true)
        #expect(HostCheck.refusal(snapshot: "hello", differences: refused) != nil)

        var newer = baked
        newer.criuVersion = "4.3.0"
        let noted = HostCheck.compare(recorded: baked, current: newer)
        #expect(noted.map(\.severity) == [.note])
        #expect(HostCheck.refusal(snapshot: "hello", differences: noted) == nil)
    }

    @Test func aKernelPatchLevelDifferenceIsANote() {
        var here = baked
        here.kernel = "6.18.7"
        let differences = HostCheck.compare(recorded: baked, current: here)
        #expect(differences.count == 1)
        #expect(differences.first?.fact == .kernel)
        #expect(differences.first?.severity == .note)
        #expect(differences.first?.why.contains("same kernel series") == true)
        #expect(HostCheck.refusal(snapshot: "hello", differences: differences) == nil)
    }

    @Test func aMissingKernelFeatureAnotherJDKOrLibcIsRefused() {
        var here = baked
        here.kernel = "6.12.1"
        here.kernelFeatures = ["mnt_id", "ns_pid", "timerfd"]
        here.glibc = "2.41"
        here.jdk = JDKBuild(home: "/usr/lib/jvm/java-17-openjdk-amd64", version: "17.0.16+8-Debian-1deb12u1")
        let differences = HostCheck.compare(recorded: baked, current: here)
        #expect(Set(differences.filter { $0.severity == .refuse }.map(\.fact)) == [.kernelFeatures, .glibc, .jdk])
        #expect(differences.filter { $0.severity == .note }.map(\.fact) == [.kernel])
        #expect(differences.first { $0.fact == .kernelFeatures }?.recorded.contains("clone3_set_tid") == true)
    }

    @Test func extraCPUFeaturesAndAnotherRuntimeAreNotes() {
        var here = baked
        here.cpuFlags = baked.cpuFlags! + ["avx512bw", "sha_ni"]
        here.runtime = "runc 1.2.0"
        let differences = HostCheck.compare(recorded: baked, current: here)
        #expect(Set(differences.map(\.fact)) == [.cpuFlags, .runtime])
        #expect(differences.allSatisfy { $0.severity == .note })
    }

    @Test func factsAnOldSnapshotDidNotRecordAreNotCompared() {
        let old = HostFacts(kernel: "6.18.3", criuVersion: "4.2.1", runtime: "runc 1.1.5+ds1")
        var here = baked
        here.cpuFlags = []
        here.pageSize = 65536
        #expect(HostCheck.compare(recorded: old, current: here).isEmpty)
        // And such a manifest still decodes.
        let json = #"{"kernel":"6.18.3","criuVersion":"4.2.1","runtime":"runc"}"#
        #expect((try? JSONDecoder().decode(HostFacts.self, from: Data(json.utf8)))?.cpuFlags == nil)
    }

    @Test func ignoringAFactTurnsItsRefusalIntoANote() throws {
        var here = baked
        here.cpuFlags = ["avx", "bmi2", "sse4_2"]
        here.criuVersion = "4.1.0"
        let differences = HostCheck.compare(recorded: baked, current: here)
        let waived = HostCheck.applying(ignored: try HostFact.parse(["cpu-flags"]), to: differences)
        #expect(waived.first { $0.fact == .cpuFlags }?.ignored == true)
        let error = try #require(HostCheck.refusal(snapshot: "s", differences: waived))
        #expect(error.message.contains("criu") && !error.message.contains("cpu-flags"))
        #expect(error.details.contains { $0.contains("ignored") })
        let all = HostCheck.applying(ignored: try HostFact.parse(["cpu-flags,criu"]), to: differences)
        #expect(HostCheck.refusal(snapshot: "s", differences: all) == nil)
        #expect(throws: KilnError.self) { try HostFact.parse(["cpu"]) }
    }

    @Test func aFixedSourceIsWhatTheTestsChange() throws {
        var source = FixedHostFactsSource(baked)
        let sandbox = SandboxSpec(command: ["x"], workingDirectory: "/", appDirectory: nil, port: 8080)
        #expect(try source.facts(for: sandbox) == baked)
        source.facts.cpuFlags?.removeAll { $0 == "avx2" }
        let differences = HostCheck.compare(recorded: baked, current: try source.facts(for: sandbox))
        #expect(differences.first?.current == "lacks avx2")
    }

    @Test func cpuinfoIsParsedForVendorModelAndFlags() {
        let text = """
            processor\t: 0
            vendor_id\t: AuthenticAMD
            model name\t: AMD EPYC 7R13 Processor
            flags\t\t: fpu sse2 avx avx2 bmi2 sha_ni

            processor\t: 1
            vendor_id\t: Other
            """
        let info = ProcHostFactsSource.cpuInfo(text)
        #expect(info.vendor == "AuthenticAMD")
        #expect(info.model == "AMD EPYC 7R13 Processor")
        #expect(info.flags == ["fpu", "sse2", "avx", "avx2", "bmi2", "sha_ni"])
    }

    /// This machine's real facts: what a bake here records.
    @Test func thisHostsFactsAreRead() throws {
        let source = ProcHostFactsSource(criu: CRIU(path: "/nonexistent/criu", version: SemanticVersion(4, 2, 1)), runtime: "runc test")
        let facts = try source.facts(for: SandboxSpec(command: ["java"], workingDirectory: "/", appDirectory: nil, port: 8080))
        #expect(facts.architecture == ProcHostFactsSource.uname().machine)
        #expect(facts.pageSize == Int(sysconf(Int32(_SC_PAGESIZE))))
        #expect(facts.glibc?.hasPrefix("2.") == true)
        #expect(facts.cgroupVersion == 1 || facts.cgroupVersion == 2)
        #expect(facts.kernelFeatures == [], "no CRIU at that path confirms nothing")
        if FileManager.default.fileExists(atPath: "/proc/cpuinfo") { #expect(facts.cpuFlags?.isEmpty == false) }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/java") { #expect(facts.jdk?.home.hasPrefix("/usr/lib/jvm/") == true) }
    }

    @Test func anOverrideFileReplacesMeasuredFacts() throws {
        let path = "/tmp/kiln-unit-hostfacts-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(#"{"criuVersion":"4.0.0","removeCPUFlags":["sse2"]}"#.utf8).write(to: URL(fileURLWithPath: path))
        let source = ProcHostFactsSource(
            criu: CRIU(path: "/nonexistent/criu", version: SemanticVersion(4, 2, 1)), runtime: "runc", overridePath: path)
        let facts = try source.facts(for: SandboxSpec(command: ["x"], workingDirectory: "/", appDirectory: nil, port: 8080))
        #expect(facts.criuVersion == "4.0.0")
        #expect(facts.cpuFlags?.contains("sse2") == false)
    }
}

@Suite("snapshot signatures and registry references")
struct SnapshotSigningTests {
    func scratch() throws -> String {
        let directory = "/tmp/kiln-unit-signing-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func aSignatureVerifiesOnlyWithItsKeyAndDigest() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = try SnapshotSigningKey.generate(at: "\(directory)/sign.key")
        var info = stat()
        stat("\(directory)/sign.key", &info)
        #expect(info.st_mode & 0o777 == 0o600)
        let publicKey = try SnapshotVerifyingKey(contentsOf: "\(directory)/sign.key.pub")
        #expect(publicKey.id == key.id && key.id.count == 16)
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let signature = try key.sign(manifestDigest: digest)
        #expect(publicKey.isValid(signature, manifestDigest: digest))
        #expect(!publicKey.isValid(signature, manifestDigest: "sha256:" + String(repeating: "cd", count: 32)))
        #expect(SnapshotSignature.refusal(of: [signature], manifestDigest: digest, trusted: [publicKey], reference: "r") == nil)

        let other = try SnapshotSigningKey.generate(at: "\(directory)/other.key")
        let wrong = try #require(
            SnapshotSignature.refusal(of: [try other.sign(manifestDigest: digest)], manifestDigest: digest, trusted: [publicKey], reference: "r"))
        #expect(wrong.code == .signatureInvalid)
        #expect(wrong.message.contains(other.id) && wrong.message.contains(publicKey.id))
        let unsigned = try #require(SnapshotSignature.refusal(of: [], manifestDigest: digest, trusted: [publicKey], reference: "r"))
        #expect(unsigned.message.contains("not signed") && unsigned.message.contains(publicKey.id))
        // A forged signature claiming the trusted key's id.
        var forged = try other.sign(manifestDigest: digest)
        forged.keyID = publicKey.id
        #expect(
            SnapshotSignature.refusal(of: [forged], manifestDigest: digest, trusted: [publicKey], reference: "r")?.message.contains(
                "invalid signature") == true)

        #expect(throws: KilnError.self) { try SnapshotSigningKey.generate(at: "\(directory)/sign.key") }
        chmod("\(directory)/sign.key", 0o644)
        #expect(throws: KilnError.self) { try SnapshotSigningKey(contentsOf: "\(directory)/sign.key") }
    }

    @Test func registryReferencesParseAndOnlyLoopbackMayBeInsecure() throws {
        let reference = try RegistryReference(parsing: "127.0.0.1:5000/kiln/hello")
        #expect(reference.registry == "127.0.0.1:5000" && reference.repository == "kiln/hello" && reference.tag == "latest")
        #expect(reference.isLoopback)
        #expect(reference.signatureTag(for: "sha256:abc").tag == "sha256-abc.sig")
        let remote = try RegistryReference(parsing: "registry.example.com/team/svc:v2")
        #expect(remote.tag == "v2" && !remote.isLoopback)
        #expect(try RegistryReference(parsing: "localhost:5000/a:b").isLoopback)
        #expect(throws: KilnError.self) { try RemoteAccessCheck.insecure(remote) }
        #expect(throws: Never.self) { try RemoteAccessCheck.insecure(reference) }
        for bad in ["hello", "hello:v1", "127.0.0.1:5000/", "127.0.0.1:5000/Kiln", "127.0.0.1:5000/a:b c", "10.0.0.1:5000/a:.x"] {
            #expect(throws: KilnError.self, "\(bad)") { try RegistryReference(parsing: bad) }
        }
    }
}

enum RemoteAccessCheck {
    static func insecure(_ reference: RegistryReference) throws {
        try RegistryAccess(insecure: true).validate(for: reference)
    }
}
