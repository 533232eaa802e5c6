import Foundation
import Logging
import Testing

@testable import KilnOCI
@testable import KilnSystem

/// `runc list` against a stand-in runc (a shell script answering from a counter file).
@Suite("runc list")
struct RuncListTests {
    /// A container deleted while runc reads the state directory fails the whole listing with
    /// "no such file or directory"; asked again, the listing no longer has it.
    @Test func aListingThatRacedAContainersDeleteIsAskedAgain() async throws {
        let stand = try StandInRunc(failures: 1, message: "stat /run/kiln/runc/boot-f386ad: no such file or directory")
        defer { stand.remove() }
        let containers = try await stand.runc.list()
        #expect(containers.map(\.id) == ["left"])
        #expect(stand.calls == 2)
    }

    /// Any other failure is reported at once, and a listing that keeps failing that way is
    /// given up after three attempts.
    @Test func otherFailuresAreNotAskedAgainAndRacesOnlyThreeTimes() async throws {
        let other = try StandInRunc(failures: 9, message: "open /run/kiln/runc: permission denied")
        defer { other.remove() }
        await #expect(throws: KilnError.self) { try await other.runc.list() }
        #expect(other.calls == 1)

        let racing = try StandInRunc(failures: 9, message: "stat /run/kiln/runc/x: no such file or directory")
        defer { racing.remove() }
        await #expect(throws: KilnError.self) { try await racing.runc.list() }
        #expect(racing.calls == 3)
    }
}

/// A runc that fails `failures` times with `message` on stderr, then lists one container.
private struct StandInRunc {
    let directory = NSTemporaryDirectory() + "kiln-runc-list-\(UUID().uuidString)"
    let runc: Runc

    init(failures: Int, message: String) throws {
        try FileManager.default.createDirectory(atPath: "\(directory)/state", withIntermediateDirectories: true)
        let script = """
            #!/bin/sh
            n=$(($(cat '\(directory)/calls' 2>/dev/null || echo 0) + 1))
            echo $n > '\(directory)/calls'
            if [ $n -le \(failures) ]; then echo '\(message)' >&2; exit 1; fi
            echo '[{"id":"left","pid":1,"status":"running","bundle":"/b","created":"2026-12-06T21:00:17Z","owner":"root"}]'
            """
        try script.write(toFile: "\(directory)/runc", atomically: true, encoding: .utf8)
        chmod("\(directory)/runc", 0o755)
        runc = Runc(
            binary: "\(directory)/runc", stateRoot: "\(directory)/state", criuPath: "criu", logDirectory: directory, shimPath: "kiln-shim",
            logger: Logger(label: "runc-list-test"))
    }

    /// How many times it was run.
    var calls: Int {
        let text = (try? String(contentsOfFile: "\(directory)/calls", encoding: .utf8)) ?? ""
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}
