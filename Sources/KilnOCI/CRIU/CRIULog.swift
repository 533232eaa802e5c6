import Foundation
import KilnSystem

/// Picks the lines worth showing a user out of CRIU's and runc's logs.
///
/// CRIU's logs run to thousands of lines; the cause of a failure is almost always in the lines
/// marked `Error (file:line):`, and runc's JSON log carries the matching "level":"error" entries.
public enum FailureLog {
    /// The error lines of a CRIU log (`dump.log`, `restore.log`), at most `limit`, oldest first;
    /// the log's last lines when it has no error line.
    public static func criuErrorLines(inFile path: String, limit: Int = 12) -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return criuErrorLines(in: text, limit: limit)
    }

    /// Error lines CRIU prints on every run here that say nothing about the failure: kiln does
    /// not hold CAP_SYS_RESOURCE on every host, and CRIU only wanted to raise its own file limit.
    static let harmless = ["rlimit: Can't setup RLIMIT_NOFILE"]

    public static func criuErrorLines(in text: String, limit: Int = 12) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        let errors = lines.filter { line in
            (line.contains("Error (") || line.contains("Error:")) && !harmless.contains { line.contains($0) }
        }
        let chosen = errors.isEmpty ? Array(lines.suffix(limit)) : Array(errors.suffix(limit))
        return chosen.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// The messages of error and fatal entries in a runc `--log-format json` log.
    public static func runcErrorMessages(inFile path: String, limit: Int = 8) -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return runcErrorMessages(in: text, limit: limit)
    }

    public static func runcErrorMessages(in text: String, limit: Int = 8) -> [String] {
        struct Entry: Decodable {
            var level: String?
            var msg: String?
        }
        let decoder = JSONDecoder()
        let messages = text.split(separator: "\n").flatMap { line -> [String] in
            guard let entry = try? decoder.decode(Entry.self, from: Data(line.utf8)),
                let level = entry.level, level == "error" || level == "fatal",
                let message = entry.msg
            else { return [] }
            // runc's pointer to CRIU's log names a scratch path kiln moves; kiln gives the real one.
            return message.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("log file:") }
        }
        return Array(messages.suffix(limit))
    }
}
