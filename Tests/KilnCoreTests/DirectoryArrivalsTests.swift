import Foundation
import Testing

@testable import KilnSystem

/// The inotify wait behind kiln's wait for the CRaC agent's answers.
@Suite struct DirectoryArrivalsTests {
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "kiln-arrivals-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func aFileRenamedIntoTheDirectoryEndsTheWait() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let arrivals = try #require(DirectoryArrivals(watching: directory))
        // Written elsewhere, then renamed in: what the agent does with every file.
        let outside = directory + ".tmp"
        try "done\n".write(toFile: outside, atomically: false, encoding: .utf8)
        defer { unlink(outside) }
        let writer = Task.detached {
            try await Task.sleep(for: .milliseconds(50))
            rename(outside, "\(directory)/restore.done")
        }
        let start = ContinuousClock.now
        let arrived = await arrivals.next(timeout: .seconds(10))
        #expect(arrived)
        #expect(start.duration(to: .now) < .seconds(5), "woken by the rename, not by the timeout")
        #expect(FileManager.default.fileExists(atPath: "\(directory)/restore.done"))
        try await writer.value
    }

    @Test func nothingArrivingEndsTheWaitAtItsTimeout() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let arrivals = try #require(DirectoryArrivals(watching: directory))
        #expect(await arrivals.next(timeout: .milliseconds(30)) == false)
        // A file created, then the next wait: the event was queued, nothing is lost between waits.
        FileManager.default.createFile(atPath: "\(directory)/checkpoint.ready", contents: nil)
        #expect(await arrivals.next(timeout: .seconds(10)))
        #expect(await arrivals.next(timeout: .milliseconds(10)) == false, "every queued event was drained")
    }

    @Test func aMissingDirectoryCannotBeWatched() {
        #expect(DirectoryArrivals(watching: "/nonexistent/kiln-arrivals") == nil)
    }
}
