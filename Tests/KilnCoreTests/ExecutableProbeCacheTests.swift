import Foundation
import Testing

@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite("executable probe cache")
struct ExecutableProbeCacheTests {
    /// A script that counts its runs in a file next to it and answers with its arguments.
    struct CountingTool {
        let directory: String
        var path: String { "\(directory)/tool" }
        var runs: Int { (try? String(contentsOfFile: "\(directory)/runs", encoding: .utf8))?.count ?? 0 }

        init(exitStatus: Int = 0) throws {
            directory = NSTemporaryDirectory() + "kiln-probe-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try "#!/bin/sh\nprintf x >> '\(directory)/runs'\necho \"answer $*\"\necho note >&2\nexit \(exitStatus)\n"
                .write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o755)
            // Exec'd once before the test (ETXTBSY: see waitUntilExecutable); that run is forgotten.
            waitUntilExecutable(path, ["settle"])
            unlink("\(directory)/runs")
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }
    }

    @Test func anAnswerIsKeptWhileTheBinaryIsTheSameFile() throws {
        let tool = try CountingTool()
        defer { tool.remove() }
        let cache = ExecutableProbeCache(file: "\(tool.directory)/probes.json")
        let first = try cache.output(of: tool.path, ["--version"])
        let second = try cache.output(of: tool.path, ["--version"])
        #expect(first.stdout == "answer --version\n" && first.stderr == "note\n")
        #expect(second.stdout == first.stdout && second.stderr == first.stderr && second.status.isSuccess)
        #expect(tool.runs == 1, "the second question is answered from the cache")
        _ = try cache.output(of: tool.path, ["--help"])
        #expect(tool.runs == 2, "other arguments are another question")

        // Any change to the file (here only its change time, as chmod does) asks again.
        chmod(tool.path, 0o700)
        #expect(try cache.output(of: tool.path, ["--version"]).stdout == "answer --version\n")
        #expect(tool.runs == 3)
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(tool.directory)/probes.json")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test func theFileIsReadOnceAndKeepsOnlyTheAnswersOfBinariesInUse() throws {
        let tool = try CountingTool()
        defer { tool.remove() }
        let gone = try CountingTool()
        defer { gone.remove() }
        let file = "\(tool.directory)/probes.json"
        _ = try ExecutableProbeCache(file: file).output(of: gone.path, ["--version"])

        let cache = ExecutableProbeCache(file: file)
        #expect(try cache.output(of: gone.path, ["--version"]).stdout == "answer --version\n")
        unlink(file)
        let copy = cache
        #expect(try copy.output(of: gone.path, ["--version"]).stdout == "answer --version\n")
        #expect(gone.runs == 1, "the file is read once; copies of the cache share what was read")

        gone.remove()
        _ = try cache.output(of: tool.path, ["--version"])
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
        #expect(written.map { Array($0.keys) } == ["\(tool.path)\u{1F}--version"], "the answer of a binary that is gone is dropped")
    }

    @Test func failuresAndUnreadableCachesCostAProbeNotAnError() throws {
        let failing = try CountingTool(exitStatus: 3)
        defer { failing.remove() }
        let cache = ExecutableProbeCache(file: "\(failing.directory)/probes.json")
        #expect(try cache.output(of: failing.path, ["--version"]).status == .exited(3))
        #expect(try cache.output(of: failing.path, ["--version"]).status == .exited(3))
        #expect(failing.runs == 2, "a failed answer is never kept")

        let tool = try CountingTool()
        defer { tool.remove() }
        try "not json".write(toFile: "\(tool.directory)/probes.json", atomically: true, encoding: .utf8)
        let garbled = ExecutableProbeCache(file: "\(tool.directory)/probes.json")
        #expect(try garbled.output(of: tool.path, ["-v"]).stdout == "answer -v\n")
        #expect(try garbled.output(of: tool.path, ["-v"]).stdout == "answer -v\n")
        #expect(tool.runs == 1, "a garbled cache file is replaced")
        let nowhere = ExecutableProbeCache(file: "/nonexistent-kiln-dir/probes.json")
        #expect(try nowhere.output(of: tool.path, ["-v"]).stdout == "answer -v\n")
    }
}
