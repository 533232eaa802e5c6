import Foundation
import KilnSystem

/// What CRIU says of its own restore: the `stats-restore` file it writes into its work directory
/// (runc's `--work-path`) once the tasks are resumed.
///
/// The file is a CRIU "service" image: the 32-bit magics `IMG_SERVICE_MAGIC` (0x55105940) and
/// `STATS_MAGIC` (0x57093306), a 32-bit little-endian length, then one protobuf `stats_entry`
/// (criu/images/stats.proto) whose field 2 is the `restore_stats_entry`. Only the few fields kiln
/// reports are decoded; unknown fields are skipped by wire type, so a newer CRIU's additions do not
/// break the parser. CRIU measures both times in microseconds.
public struct CRIURestoreStatistics: Codable, Equatable, Sendable {
    /// `restore_stats_entry.pages_compared` (pages compared with a parent image).
    public var pagesCompared: UInt64 = 0
    /// `restore_stats_entry.pages_skipped_cow`.
    public var pagesSkippedCopyOnWrite: UInt64 = 0
    /// `restore_stats_entry.forking_time`, µs: CRIU's TIME_FORK timer, around the root task's forking of
    /// its child processes (`create_children_and_session`); a few µs for a one-process service like a JVM.
    public var forkingTimeMicroseconds: UInt64 = 0
    /// `restore_stats_entry.restore_time`, µs: from the start of the restore to the tasks resumed.
    public var restoreTimeMicroseconds: UInt64 = 0
    /// `restore_stats_entry.pages_restored` (absent in images of CRIUs older than 3.x).
    public var pagesRestored: UInt64?

    public static let fileName = "stats-restore"
    static let serviceMagic: UInt32 = 0x5510_5940
    static let statsMagic: UInt32 = 0x5709_3306

    public init(
        pagesCompared: UInt64 = 0, pagesSkippedCopyOnWrite: UInt64 = 0, forkingTimeMicroseconds: UInt64 = 0,
        restoreTimeMicroseconds: UInt64 = 0, pagesRestored: UInt64? = nil
    ) {
        self.pagesCompared = pagesCompared
        self.pagesSkippedCopyOnWrite = pagesSkippedCopyOnWrite
        self.forkingTimeMicroseconds = forkingTimeMicroseconds
        self.restoreTimeMicroseconds = restoreTimeMicroseconds
        self.pagesRestored = pagesRestored
    }

    public var restoreMs: Double { Double(restoreTimeMicroseconds) / 1000 }
    public var forkingMs: Double { Double(forkingTimeMicroseconds) / 1000 }

    /// Decodes a whole `stats-restore` file.
    public init(parsing data: Data) throws {
        var reader = ProtobufReader(bytes: [UInt8](data))
        let magic = try reader.fixed32()
        guard magic == Self.serviceMagic else { throw Self.corrupt("magic \(magic.hexDigits) is not CRIU's service image magic") }
        let kind = try reader.fixed32()
        guard kind == Self.statsMagic else { throw Self.corrupt("image magic \(kind.hexDigits) is not the stats magic") }
        var entry = ProtobufReader(bytes: try reader.bytes(Int(try reader.fixed32())))
        var restore: [UInt8]?
        while !entry.atEnd {
            let (field, wireType) = try entry.key()
            if field == 2, wireType == 2 {
                restore = try entry.bytes(try entry.length())
            } else {
                try entry.skip(wireType)
            }
        }
        guard let restore else { throw Self.corrupt("the stats entry has no restore statistics (a dump's stats file?)") }
        var fields = ProtobufReader(bytes: restore)
        var seen = Set<UInt64>()
        while !fields.atEnd {
            let (field, wireType) = try fields.key()
            guard wireType == 0, (1...5).contains(field) else {
                try fields.skip(wireType)
                continue
            }
            let value = try fields.varint()
            seen.insert(field)
            switch field {
            case 1: pagesCompared = value
            case 2: pagesSkippedCopyOnWrite = value
            case 3: forkingTimeMicroseconds = value
            case 4: restoreTimeMicroseconds = value
            default: pagesRestored = value
            }
        }
        guard seen.isSuperset(of: [1, 2, 3, 4]) else {
            throw Self.corrupt("required fields missing from restore_stats_entry (have \(seen.sorted()))")
        }
    }

    /// The statistics CRIU left in `directory` (a restore's work directory), nil when it wrote none
    /// (a failed restore, or a CRIU run that does not write statistics).
    public static func read(fromWorkDirectory directory: String) throws -> CRIURestoreStatistics? {
        let path = "\(directory)/\(fileName)"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            return try CRIURestoreStatistics(parsing: data)
        } catch var error as KilnError {
            error.message = "\(path): \(error.message)"
            throw error
        }
    }

    static func corrupt(_ why: String) -> KilnError {
        KilnError(.restoreFailed, "CRIU's restore statistics cannot be read: \(why)")
    }
}

/// Just enough of the protobuf wire format for ``CRIURestoreStatistics``.
struct ProtobufReader {
    let bytes: [UInt8]
    var offset = 0

    var atEnd: Bool { offset >= bytes.count }

    mutating func byte() throws -> UInt8 {
        guard offset < bytes.count else { throw CRIURestoreStatistics.corrupt("truncated at byte \(offset)") }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func fixed32() throws -> UInt32 {
        var value: UInt32 = 0
        for shift in stride(from: 0, to: 32, by: 8) { value |= UInt32(try byte()) << UInt32(shift) }
        return value
    }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 7) {
            let next = try byte()
            value |= UInt64(next & 0x7f) << UInt64(shift)
            if next & 0x80 == 0 { return value }
        }
        throw CRIURestoreStatistics.corrupt("varint longer than 10 bytes at byte \(offset)")
    }

    /// A length-delimited field's length.
    mutating func length() throws -> Int {
        let value = try varint()
        guard value <= UInt64(bytes.count) else {
            throw CRIURestoreStatistics.corrupt("length \(value) at byte \(offset) runs past the end (\(bytes.count))")
        }
        return Int(value)
    }

    mutating func key() throws -> (field: UInt64, wireType: UInt64) {
        let key = try varint()
        return (key >> 3, key & 7)
    }

    mutating func bytes(_ count: Int) throws -> [UInt8] {
        guard count >= 0, count <= bytes.count - offset else {
            throw CRIURestoreStatistics.corrupt("length \(count) at byte \(offset) runs past the end (\(bytes.count))")
        }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    mutating func skip(_ wireType: UInt64) throws {
        switch wireType {
        case 0: _ = try varint()
        case 1: _ = try bytes(8)
        case 2: _ = try bytes(try length())
        case 5: _ = try bytes(4)
        default: throw CRIURestoreStatistics.corrupt("unsupported wire type \(wireType) at byte \(offset)")
        }
    }
}
