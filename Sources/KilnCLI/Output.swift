import Foundation
import KilnBench
import KilnSystem

/// Printing for humans (aligned tables) and scripts (JSON).
enum Output {
    static func printJSON(_ value: some Encodable) {
        let data = (try? KilnJSON.prettyEncoder().encode(value)) ?? Data("{}".utf8)
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// Left-aligned columns, two spaces apart.
    static func table(_ header: [String], _ rows: [[String]]) -> String { ReportText.table(header, rows) }

    static func progress(_ line: String) {
        FileHandle.standardError.write(Data("\(line)\n".utf8))
    }

    static func bytes(_ count: Int64) -> String { ReportText.bytes(count) }

    static func ms(_ value: Double) -> String { ReportText.ms(value) }
}

/// Type-erases heterogeneous values for small JSON documents.
struct AnyEncodable: Encodable {
    let encodeValue: (Encoder) throws -> Void
    init(_ value: some Encodable) { encodeValue = value.encode }
    func encode(to encoder: Encoder) throws { try encodeValue(encoder) }
}
