import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What an executable answered about itself (`criu --version`, `criu --help`, `runc --version`),
/// kept in one file per kiln state directory and reused while the binary is the same file.
///
/// Every `kiln` command that touches containers asks CRIU and runc who they are: three processes
/// and 15-20 ms before a restore can begin, on the path of `kiln run` (whose whole command is
/// measured against a bare `criu restore`). Their answers only change when the binaries do, so
/// each answer is stored under the binary's identity: device, inode, size, modification and
/// change time. Replacing or rebuilding a binary changes its inode or change time (`make setup`
/// installs a new file; even `touch` moves the change time), and the next question runs it again.
///
/// Only successful answers are kept. The file is root-only like the state directory that holds
/// it, and is written whole under a temporary name and renamed, so concurrent commands at worst
/// both run the probe; a file that cannot be read or written costs a probe, never an error.
public struct ExecutableProbeCache: Sendable {
    /// The JSON file of answers (in the state directory, e.g. `/run/kiln/executable-probes.json`).
    public var file: String

    public init(file: String) {
        self.file = file
    }

    /// What `executable arguments` prints on stdout and stderr together, from the cache while
    /// the executable is the file it was, else by running it (and remembering a success).
    public func output(of executable: String, _ arguments: [String]) throws -> CommandOutput {
        guard let identity = Self.identity(of: executable) else { return try Subprocess.run(executable, arguments) }
        let key = ([executable] + arguments).joined(separator: "\u{1F}")
        var answers = load()
        if let answer = answers[key], answer.identity == identity {
            return CommandOutput(status: .exited(0), stdout: answer.stdout, stderr: answer.stderr)
        }
        let output = try Subprocess.run(executable, arguments)
        if output.status.isSuccess {
            answers[key] = Answer(identity: identity, stdout: output.stdout, stderr: output.stderr)
            save(answers)
        }
        return output
    }

    struct Answer: Codable, Equatable {
        var identity: String
        var stdout: String
        var stderr: String
    }

    /// The binary's identity, following symlinks (a new target is a new binary); nil if it
    /// cannot be read, and then nothing is cached.
    static func identity(of path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return [
            UInt64(info.st_dev), UInt64(info.st_ino), UInt64(info.st_size),
            UInt64(info.st_mtim.tv_sec), UInt64(info.st_mtim.tv_nsec), UInt64(info.st_ctim.tv_sec), UInt64(info.st_ctim.tv_nsec),
        ].map(String.init).joined(separator: ":")
    }

    private func load() -> [String: Answer] {
        guard let data = FileManager.default.contents(atPath: file) else { return [:] }
        return (try? JSONDecoder().decode([String: Answer].self, from: data)) ?? [:]
    }

    private func save(_ answers: [String: Answer]) {
        guard let data = try? JSONEncoder().encode(answers) else { return }
        try? RuntimeFile.replace(file, with: data, permissions: 0o600)
    }
}
