import Foundation
import Testing

@testable import KilnOCI
@testable import KilnSystem

/// CRIU's `stats-restore`, decoded from a file a real restore wrote: `kiln run hello` of the Spring
/// sample (114.8 MiB snapshot, CRIU 4.2.1 with patch 0001, loaded 2-core VM), whose restore.log
/// ended "(00.172757) Restore finished successfully".
@Suite("CRIU restore statistics")
struct CRIURestoreStatisticsTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func fixture() throws -> Data {
        try Data(contentsOf: Self.fixtures.appendingPathComponent("stats-restore-hello-spring"))
    }

    @Test func decodesARealRestoresStatistics() throws {
        let statistics = try CRIURestoreStatistics(parsing: try fixture())
        #expect(statistics.restoreTimeMicroseconds == 158_484)
        #expect(statistics.forkingTimeMicroseconds == 2)
        #expect(statistics.pagesRestored == 29_361)  // 114.7 MiB of 4 KiB pages
        #expect(statistics.pagesCompared == 0)
        #expect(statistics.pagesSkippedCopyOnWrite == 0)
        #expect(abs(statistics.restoreMs - 158.484) < 0.001)
    }

    @Test func readsTheFileFromAWorkDirectoryAndNilWithoutOne() throws {
        let directory = "/tmp/kiln-unit-stats-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try CRIURestoreStatistics.read(fromWorkDirectory: directory) == nil)
        try fixture().write(to: URL(fileURLWithPath: "\(directory)/stats-restore"))
        #expect(try CRIURestoreStatistics.read(fromWorkDirectory: directory)?.pagesRestored == 29_361)
    }

    @Test func skipsFieldsItDoesNotKnow() throws {
        // restore_stats_entry with an unknown varint field 9 and an unknown length-delimited field 10
        // between the known ones, and the stats entry with an unknown fixed64 field 7.
        let restore: [UInt8] = [0x08, 0x01, 0x10, 0x02, 0x48, 0x96, 0x01, 0x18, 0x03, 0x52, 0x02, 0xAA, 0xBB, 0x20, 0xE8, 0x07]
        let entry: [UInt8] = [0x39, 1, 2, 3, 4, 5, 6, 7, 8, 0x12, UInt8(restore.count)] + restore
        let statistics = try CRIURestoreStatistics(parsing: Self.file(entry))
        #expect(
            statistics
                == CRIURestoreStatistics(
                    pagesCompared: 1, pagesSkippedCopyOnWrite: 2, forkingTimeMicroseconds: 3,
                    restoreTimeMicroseconds: 1000, pagesRestored: nil))
    }

    @Test func refusesWhatIsNotARestoresStatistics() throws {
        let good = try fixture()
        // Truncated anywhere.
        for length in [0, 3, 8, 11, good.count - 1] {
            #expect(throws: KilnError.self) { try CRIURestoreStatistics(parsing: good.prefix(length)) }
        }
        // Another image's magic.
        var other = good
        other[4] = 0x07
        #expect(throws: KilnError.self) { try CRIURestoreStatistics(parsing: other) }
        // A dump's statistics (field 1 only).
        #expect(throws: KilnError.self) { try CRIURestoreStatistics(parsing: Self.file([0x0A, 0x02, 0x08, 0x05])) }
        // A restore entry without its required times.
        #expect(throws: KilnError.self) { try CRIURestoreStatistics(parsing: Self.file([0x12, 0x02, 0x08, 0x00])) }
        // A length past the end.
        #expect(throws: KilnError.self) { try CRIURestoreStatistics(parsing: Self.file([0x12, 0x7F, 0x08, 0x00])) }
    }

    /// A stats-restore file around a protobuf stats_entry.
    static func file(_ entry: [UInt8]) -> Data {
        var bytes: [UInt8] = [0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57]
        let length = UInt32(entry.count)
        bytes += [UInt8(length & 0xff), UInt8(length >> 8 & 0xff), UInt8(length >> 16 & 0xff), UInt8(length >> 24)]
        return Data(bytes + entry)
    }
}
