import Foundation

/// One line of a `/proc/PID/maps` file, the fields kiln reads: `START-END PERMS OFFSET MAJ:MIN
/// INODE [PATH]` (proc(5)). The path is padded with spaces and absent for anonymous memory.
package struct MapsLine: Equatable, Sendable {
    /// The mapping's addresses, as `START-END` says them (hexadecimal).
    package var range: Range<UInt>
    /// `START-END` as written: the name of the mapping's entry in `/proc/PID/map_files`.
    package var rangeText: Substring
    /// Whether the mapping may be executed (`x` in its permissions): code.
    package var executable: Bool
    /// The mapped file's device and inode (`MAJ:MIN:INODE`): the same for every mapping of one file.
    package var fileIdentity: String
    /// The mapped file's path; nil for memory that maps no file (anonymous memory, `[heap]`,
    /// `[stack]`, the vDSO).
    package var path: String?

    /// Parses one line; nil for one without its five fields and a range.
    package init?(_ line: Substring) {
        let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
        guard fields.count >= 5 else { return nil }
        let bounds = fields[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
        guard bounds.count == 2, bounds[0] < bounds[1] else { return nil }
        range = bounds[0]..<bounds[1]
        rangeText = fields[0]
        executable = fields[1].contains("x")
        fileIdentity = "\(fields[3]):\(fields[4])"
        let named = fields.count == 6 ? fields[5].trimmingCharacters(in: .whitespaces) : ""
        path = fields[4] != "0" && named.hasPrefix("/") ? named : nil
    }

    /// Every well-formed line of a `maps` text.
    package static func parse(_ text: String) -> [MapsLine] {
        text.split(separator: "\n").compactMap(MapsLine.init)
    }
}
