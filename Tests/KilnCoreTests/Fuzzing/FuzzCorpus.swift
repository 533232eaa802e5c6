import Foundation
import KilnBench
import KilnEngine
import KilnGateway
import KilnOCI
import KilnSnapshot
import KilnSystem

/// The committed seed corpus, `Tests/KilnCoreTests/FuzzCorpus/` (see its README), found from
/// this file's path so it needs no package resources.
enum FuzzCorpus {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FuzzCorpus")

    /// Every file of a folder (one input each), sorted by name; empty if the folder is missing.
    static func files(_ folder: String) -> [[UInt8]] { namedFiles(folder).map(\.bytes) }

    /// ``files(_:)`` with their names (`regression-*` files hold inputs that once broke a parser).
    static func namedFiles(_ folder: String) -> [(name: String, bytes: [UInt8])] {
        let url = directory.appendingPathComponent(folder)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
        return names.compactMap { name in FileManager.default.contents(atPath: url.appendingPathComponent(name).path).map { (name, [UInt8]($0)) } }
    }

    /// The inputs of a `.jsonl` file: one JSON string literal a line (so any input, an empty
    /// one or one with a NUL included, has a spelling); blank lines and `#` lines are skipped.
    static func lines(_ name: String) -> [String] {
        guard let text = try? String(contentsOf: directory.appendingPathComponent("\(name).jsonl"), encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(trimmed.utf8), options: .fragmentsAllowed) as? String
        }
    }
}
