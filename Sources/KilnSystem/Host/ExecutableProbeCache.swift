import Foundation
import Synchronization

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
///
/// The file is read once per cache value (copies share what was read): `kiln run` asks three
/// questions before its restore, and decoding the file three times cost it ~2 ms on kiln's 2-CPU
/// test VM. Answers for binaries that are gone or have changed are dropped whenever the file is
/// written, so it holds what is in use (test runs had left it 27 KB of fakes' answers).
public struct ExecutableProbeCache: Sendable {
    /// The JSON file of answers (in the state directory, e.g. `/run/kiln/executable-probes.json`).
    public var file: String
    /// The file's answers once read, with what this process added since.
    private let shared: Shared

    public init(file: String) {
        self.file = file
        shared = Shared()
    }

    /// What `executable arguments` prints on stdout and stderr together, from the cache while
    /// the executable is the file it was, else by running it (and remembering a success).
    public func output(of executable: String, _ arguments: [String]) throws -> CommandOutput {
        guard let identity = Self.identity(of: executable) else { return try Subprocess.run(executable, arguments) }
        let key = ([executable] + arguments).joined(separator: String(Shared.separator))
        if let answer = shared.answers(loading: load)[key], answer.identity == identity {
            return CommandOutput(status: .exited(0), stdout: answer.stdout, stderr: answer.stderr)
        }
        let output = try Subprocess.run(executable, arguments)
        if output.status.isSuccess {
            let answers = shared.remember(Answer(identity: identity, stdout: output.stdout, stderr: output.stderr), for: key)
            save(answers)
        }
        return output
    }

    /// What every copy of one cache value shares: the answers read from its file.
    private final class Shared: Sendable {
        private let answers = Mutex<[String: Answer]?>(nil)

        func answers(loading load: () -> [String: Answer]) -> [String: Answer] {
            answers.withLock { known in
                if let known { return known }
                let loaded = load()
                known = loaded
                return loaded
            }
        }

        /// Adds an answer to those read (``answers(loading:)`` comes first) and returns all of
        /// them, less those of binaries gone or changed.
        func remember(_ answer: Answer, for key: String) -> [String: Answer] {
            answers.withLock { known in
                var all = known ?? [:]
                all[key] = answer
                let executables = Set(all.keys.map(Self.executable(ofKey:)))
                let identities = Dictionary(
                    uniqueKeysWithValues: executables.compactMap { executable in
                        ExecutableProbeCache.identity(of: executable).map { (executable, $0) }
                    })
                all = all.filter { key, answer in identities[Self.executable(ofKey: key)] == answer.identity }
                known = all
                return all
            }
        }

        static func executable(ofKey key: String) -> String { String(key.prefix { $0 != separator }) }

        static let separator: Character = "\u{1F}"
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
