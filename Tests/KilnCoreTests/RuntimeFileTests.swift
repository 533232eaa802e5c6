import Foundation
import Testing

@testable import KilnSystem

/// kiln's runtime files (bundles, instance records), written without Foundation's `fsync`.
@Suite struct RuntimeFileTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-runtime-file-\(UUID().uuidString)").path

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func inode(_ path: String) -> UInt64? {
        var info = stat()
        return lstat(path, &info) == 0 ? UInt64(info.st_ino) : nil
    }

    func entries() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: directory).sorted()) ?? [] }

    @Test func aWriteTruncatesInPlaceSoABindMountKeepsSeeingTheFile() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/resolv.conf"
        try RuntimeFile.write("nameserver 10.0.0.1\nsearch a-long-search-domain.example\n", to: path)
        let before = inode(path)
        try RuntimeFile.write("nameserver 10.0.0.2\n", to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "nameserver 10.0.0.2\n")
        #expect(inode(path) == before, "the same file, rewritten: the container's bind mount holds its inode")
        try RuntimeFile.write(Data(), to: "\(directory)/empty")
        #expect(FileManager.default.contents(atPath: "\(directory)/empty") == Data())
    }

    @Test func aReplacementIsANewFileAndLeavesNoTemporaryBehind() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/instance.json"
        try RuntimeFile.replace(path, with: Data(#"{"pid":1}"#.utf8))
        let before = inode(path)
        try RuntimeFile.replace(path, with: Data(#"{"pid":2}"#.utf8))
        #expect(FileManager.default.contents(atPath: path) == Data(#"{"pid":2}"#.utf8))
        #expect(inode(path) != before, "renamed over: a reader holding the old file reads it whole")
        #expect(entries() == ["instance.json"])
    }

    @Test func aFailedReplacementLeavesTheOldFileAndNoTemporary() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/record"
        try RuntimeFile.replace(path, with: Data("old".utf8))
        // rename(2) cannot put a file over a directory: the write succeeds, the rename fails.
        try FileManager.default.createDirectory(atPath: "\(directory)/taken", withIntermediateDirectories: false)
        #expect(throws: KilnError.self) { try RuntimeFile.replace("\(directory)/taken", with: Data("new".utf8)) }
        #expect(entries() == ["record", "taken"])
        #expect(throws: KilnError.self) { try RuntimeFile.replace("\(directory)/missing/record", with: Data("new".utf8)) }
        #expect(FileManager.default.contents(atPath: path) == Data("old".utf8))
    }

    @Test func aWriteDoesNotFollowASymlink() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outside = "\(directory)/outside"
        try RuntimeFile.write("keep", to: outside)
        try FileManager.default.createSymbolicLink(atPath: "\(directory)/hostname", withDestinationPath: outside)
        #expect(throws: KilnError.self) { try RuntimeFile.write("copy-1\n", to: "\(directory)/hostname") }
        #expect(try String(contentsOfFile: outside, encoding: .utf8) == "keep")
    }
}
