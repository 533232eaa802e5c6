import Foundation

/// How kiln writes and reads JSON, in one place: sorted keys and unescaped slashes everywhere (a
/// diff or a grep of two documents lines up), ISO 8601 dates.
package enum KilnJSON {
    /// For documents people read: manifests, records, bundles, command output, the admin API.
    package static func prettyEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    /// For documents on the wire that nobody reads line by line: the gateway's error answers.
    package static func compactEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    /// For everything kiln reads back.
    package static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
