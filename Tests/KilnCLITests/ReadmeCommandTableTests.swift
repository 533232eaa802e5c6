import ArgumentParser
import Foundation
import Testing

@testable import KilnCLI

/// The README's table of commands against the commands themselves: a command line it shows
/// names a command kiln has, with options that command takes. (It fell behind once: options
/// added to `run`, `thaw`, `push` and `import`, and two benchmarks, were missing from it.)
@Suite("README's command table")
struct ReadmeCommandTableTests {
    static let readme = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("README.md")

    /// The command lines in the first cell of each table row that starts with one
    /// (`` | `kiln run NAME [--count N]` | ... ``; a cell may hold two, joined by " / ").
    static func commandLines(in markdown: String) -> [String] {
        markdown.split(separator: "\n").filter { $0.hasPrefix("| `kiln ") }.flatMap { row -> [String] in
            guard let end = row.range(of: "` | ") else { return [] }
            let cell = row[row.startIndex..<end.lowerBound] + "`"
            return cell.matches(of: /`(kiln [^`]*)`/).map { String($0.output.1) }
        }
    }

    /// The command a line names (its longest run of subcommand names after `kiln`) and the long
    /// options it shows.
    static func resolve(_ line: String) -> (command: any ParsableCommand.Type, path: String, options: [String]) {
        let (command, path) = KilnCommand.subcommand(named: line.split(separator: " ").dropFirst().map(String.init))
        let options = line.matches(of: /--[a-z][a-z-]*/).map { String($0.output) }
        return (command, path, options)
    }

    /// Whether `help` lists `option` itself (`--key` is not listed by `--keep-alive`).
    static func lists(_ help: String, _ option: String) -> Bool {
        var rest = help[...]
        while let found = rest.range(of: option) {
            guard let next = rest[found.upperBound...].first, next.isLowercase || next == "-" else { return true }
            rest = rest[found.upperBound...]
        }
        return false
    }

    @Test func everyCommandLineNamesACommandAndItsOptions() throws {
        let lines = Self.commandLines(in: try String(contentsOf: Self.readme, encoding: .utf8))
        #expect(lines.count >= 20, "the README's command table: \(lines.count) command lines found")
        for line in lines {
            let (command, path, options) = Self.resolve(line)
            #expect(path != "kiln", "README: '\(line)' names no kiln command")
            let help = KilnCommand.helpMessage(for: command, columns: 10_000)
            for option in options {
                #expect(Self.lists(help, option), "README: '\(path)' shows \(option), which '\(path) --help' does not list")
            }
        }
    }

    /// The parsing itself: a row with two command lines, escaped bars, and an option of another
    /// command in the description (not checked).
    @Test func aRowsCommandLinesComeFromItsFirstCell() {
        let table = """
            | command | what it does |
            |---|---|
            | `kiln ls` / `kiln rm NAME [--force]` | list; `kiln serve` takes `--pull` |
            | `kiln run NAME [--share-memory mapped\\|ksm]` | restore |
            """
        #expect(Self.commandLines(in: table) == ["kiln ls", "kiln rm NAME [--force]", "kiln run NAME [--share-memory mapped\\|ksm]"])
        let (_, path, options) = Self.resolve("kiln bench startup NAME [--runs N] [--versus OTHER]")
        #expect(path == "kiln bench startup")
        #expect(options == ["--runs", "--versus"])
        #expect(Self.lists("  --keep-alive <s>\n  --key <k>\n", "--key"))
        #expect(!Self.lists("  --keep-alive <s>\n", "--keep"))
    }
}
