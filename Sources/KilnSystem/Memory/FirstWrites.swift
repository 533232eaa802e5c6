import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The pages a copy restored with mapped page images (kiln's CRIU patch 0001) wrote after its
/// restore: present in a private mapping of a `pages-N.img` file, but no longer the file's page
/// (copied on write). Read from one copy after its first response, they say which pages every
/// copy of the snapshot writes first.
///
/// Why it matters: the kernel maps the 15 pages around each page a copy reads ("fault-around"),
/// read-only. A later write to one of them copies the page and, while another thread of the
/// copy runs on another CPU, shoots down that CPU's TLB entry with an IPI: 11 µs per page on the
/// 2-core VM against 2 µs for a page written first (docs/restore-path.md). A frozen standby copy
/// has no thread running, so copying those pages ahead (``copyAhead(inProcess:)``) costs 2 µs
/// each and takes them off its thaw.
public struct FirstWrites: Sendable, Equatable {
    /// Page-aligned address ranges, sorted, not overlapping, not adjacent.
    public private(set) var ranges: [Range<UInt64>]

    /// How many pages the ranges hold.
    public var pageCount: Int { ranges.reduce(0) { $0 + Int(($1.upperBound - $1.lowerBound) / Self.pageSize) } }

    static let pageSize: UInt64 = 4096

    /// The ranges holding `pages` (page addresses, in any order, duplicates allowed).
    public init(pages: some Sequence<UInt64>) {
        ranges = []
        for page in Set(pages).sorted() { appendSorted(page) }
    }

    /// Adds `page`, which lies above every page so far.
    mutating func appendSorted(_ page: UInt64) {
        if let last = ranges.last, last.upperBound == page {
            ranges[ranges.count - 1] = last.lowerBound..<(page + Self.pageSize)
        } else {
            ranges.append(page..<(page + Self.pageSize))
        }
    }

    /// The ranges as text, a `start-end` pair of hex addresses per line (as in
    /// `/proc/PID/maps`): quick to write and read for a thousand ranges, and readable.
    public var text: String {
        var text = ""
        text.reserveCapacity(ranges.count * 26)
        for range in ranges {
            text += String(range.lowerBound, radix: 16)
            text += "-"
            text += String(range.upperBound, radix: 16)
            text += "\n"
        }
        return text
    }

    /// The ranges of ``text``; nil if a line is no page-aligned `start-end` pair in order.
    public init?(text: some StringProtocol) {
        var ranges: [Range<UInt64>] = []
        for line in text.utf8.split(separator: UInt8(ascii: "\n")) {
            let bounds = line.split(separator: UInt8(ascii: "-"))
            guard bounds.count == 2, let start = Self.hex(bounds[0]), let end = Self.hex(bounds[1]), start < end,
                (start | end) % Self.pageSize == 0, start >= (ranges.last?.upperBound ?? 0)
            else { return nil }
            ranges.append(start..<end)
        }
        self.ranges = ranges
    }

    /// A private mapping of a CRIU page image (`…/pages-N.img`) in `/proc/PID/maps`.
    public struct ImageMapping: Equatable, Sendable {
        public var range: Range<UInt64>
        public var writable: Bool
        /// Where in the file the mapping starts.
        public var fileOffset: UInt64
    }

    /// The mappings of a `/proc/PID/maps` text that come from CRIU page images. (A JVM has a
    /// thousand mappings or more: parsed as bytes.)
    public static func imageMappings(maps: String) -> [ImageMapping] {
        var mappings: [ImageMapping] = []
        for line in maps.utf8.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
            guard fields.count >= 6, isPageImage(fields[5]), let bounds = fields.first?.split(separator: UInt8(ascii: "-")), bounds.count == 2,
                let start = hex(bounds[0]), let end = hex(bounds[1]), start < end, let offset = hex(fields[2])
            else { continue }
            mappings.append(ImageMapping(range: start..<end, writable: fields[1].starts(with: "rw".utf8), fileOffset: offset))
        }
        return mappings
    }

    /// A path whose last component is `pages-N.img`.
    private static func isPageImage(_ path: Substring.UTF8View.SubSequence) -> Bool {
        let name = path.split(separator: UInt8(ascii: "/")).last ?? path
        return name.starts(with: "pages-".utf8) && name.reversed().starts(with: "gmi.".utf8)
    }

    private static func hex(_ digits: some Collection<UInt8>) -> UInt64? {
        guard !digits.isEmpty, digits.count <= 16 else { return nil }
        var value: UInt64 = 0
        for digit in digits {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = value << 4 | UInt64(digit - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = value << 4 | UInt64(digit - UInt8(ascii: "a") + 10)
            default: return nil
            }
        }
        return value
    }

    /// The written pages among `entries`, the `/proc/PID/pagemap` entries (one per page) of the
    /// mapping starting at `start`: present (bit 63) and no longer a file page (bit 61 clear).
    static func writtenPages(start: UInt64, entries: some Sequence<UInt64>) -> [UInt64] {
        var pages: [UInt64] = []
        for (index, entry) in entries.enumerated() where entry & (1 << 63) != 0 && entry & (1 << 61) == 0 {
            pages.append(start + UInt64(index) * pageSize)
        }
        return pages
    }

    /// What process `pid` has written of its image-backed memory so far; empty when it maps no
    /// page image (restored with the pages read, or not restored at all).
    public static func read(ofProcess pid: Int32) throws -> FirstWrites {
        guard let maps = ProcFile.text("/proc/\(pid)/maps") else {
            throw KilnError(.systemCall, "could not read /proc/\(pid)/maps: the process is gone")
        }
        let fd = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw KilnError(.systemCall, "could not open /proc/\(pid)/pagemap: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var writes = FirstWrites(pages: [])
        var entries: [UInt64] = []
        // appendSorted needs the pages in address order: the kernel lists mappings in it, and
        // they are sorted to be sure.
        for mapping in imageMappings(maps: maps).sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) {
            guard readPagemap(fd, of: mapping.range, into: &entries) else {
                throw KilnError(
                    .systemCall,
                    "could not read /proc/\(pid)/pagemap at \(String(mapping.range.lowerBound, radix: 16)): \(String(cString: strerror(errno)))")
            }
            for page in writtenPages(start: mapping.range.lowerBound, entries: entries) { writes.appendSorted(page) }
        }
        return writes
    }

    /// Reads the `/proc/PID/pagemap` entries (open as `fd`) of the pages of `range` into
    /// `entries` (resized to one per page); false when the read fell short.
    private static func readPagemap(_ fd: Int32, of range: Range<UInt64>, into entries: inout [UInt64]) -> Bool {
        let count = Int((range.upperBound - range.lowerBound) / pageSize)
        if entries.count != count {
            entries.removeAll(keepingCapacity: true)
            entries.append(contentsOf: repeatElement(0, count: count))
        }
        let wanted = count * MemoryLayout<UInt64>.size
        return entries.withUnsafeMutableBytes { pread(fd, $0.baseAddress, wanted, off_t(range.lowerBound / pageSize * 8)) } == wanted
    }

    /// The ranges, clipped to the writable image-backed mappings of a `/proc/PID/maps` text,
    /// each with its mapping: what may be copied ahead in that process (a page outside them is
    /// not the snapshot's, or not to be written).
    public func clipped(toImageMappingsOf maps: String) -> [(range: Range<UInt64>, mapping: ImageMapping)] {
        let writable = Self.imageMappings(maps: maps).filter(\.writable).sorted { $0.range.lowerBound < $1.range.lowerBound }
        var clipped: [(range: Range<UInt64>, mapping: ImageMapping)] = []
        // Both sorted: one walk (a JVM's thousand ranges against its hundreds of mappings).
        var next = 0
        for range in ranges {
            while next < writable.count, writable[next].range.upperBound <= range.lowerBound { next += 1 }
            var index = next
            while index < writable.count, writable[index].range.lowerBound < range.upperBound {
                let mapping = writable[index]
                clipped.append((max(range.lowerBound, mapping.range.lowerBound)..<min(range.upperBound, mapping.range.upperBound), mapping))
                index += 1
            }
        }
        return clipped
    }

    /// Copies each page of ``ranges`` that lies in a writable image-backed mapping of process
    /// `pid`, and is still the image's page there, on write: it writes the page's bytes, read
    /// from the very file mapped there (`/proc/PID/map_files`), through `/proc/PID/mem`. A page
    /// the process has written already is left alone. Returns how many pages were copied.
    ///
    /// Written, not read first: a read would map the page (and, by fault-around, 15 around
    /// it) read-only from the page cache, and the write would then have to replace that
    /// mapping (a TLB shoot-down) and leave the copy mapping pages it never used. Every task of
    /// the process must be stopped or frozen (a frozen standby copy): a page written between
    /// the check and the write would be overwritten with the image's bytes.
    public func copyAhead(inProcess pid: Int32) throws -> Int {
        guard let maps = ProcFile.text("/proc/\(pid)/maps") else {
            throw KilnError(.systemCall, "could not read /proc/\(pid)/maps: the process is gone")
        }
        func failure(_ what: String) -> KilnError {
            KilnError(.systemCall, "could not copy pages of process \(pid) ahead: \(what): \(String(cString: strerror(errno)))")
        }
        let mem = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        guard mem >= 0 else { throw failure("open /proc/\(pid)/mem") }
        defer { close(mem) }
        let pagemap = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        guard pagemap >= 0 else { throw failure("open /proc/\(pid)/pagemap") }
        defer { close(pagemap) }
        var files: [UInt64: Int32] = [:]
        defer { for fd in files.values { close(fd) } }

        let targets = clipped(toImageMappingsOf: maps)
        let largest = targets.map { Int($0.range.upperBound - $0.range.lowerBound) }.max() ?? 0
        var buffer = [UInt8](repeating: 0, count: largest)
        var entries: [UInt64] = []
        var pages = 0
        for (range, mapping) in targets {
            let file: Int32
            if let open = files[mapping.range.lowerBound] {
                file = open
            } else {
                let path = "/proc/\(pid)/map_files/\(String(mapping.range.lowerBound, radix: 16))-\(String(mapping.range.upperBound, radix: 16))"
                file = open(path, O_RDONLY | O_CLOEXEC)
                guard file >= 0 else { throw failure("open \(path)") }
                files[mapping.range.lowerBound] = file
            }
            guard Self.readPagemap(pagemap, of: range, into: &entries) else { throw failure("read /proc/\(pid)/pagemap") }
            let count = entries.count
            // Runs of pages that are still the image's (not present, or present as the file's page).
            var index = 0
            while index < count {
                guard Self.isImagePage(entries[index]) else {
                    index += 1
                    continue
                }
                var end = index + 1
                while end < count, Self.isImagePage(entries[end]) { end += 1 }
                let address = range.lowerBound + UInt64(index) * Self.pageSize
                let length = (end - index) * Int(Self.pageSize)
                let fileOffset = off_t(mapping.fileOffset + (address - mapping.range.lowerBound))
                let copied = buffer.withUnsafeMutableBytes { bytes -> Bool in
                    pread(file, bytes.baseAddress, length, fileOffset) == length && pwrite(mem, bytes.baseAddress, length, off_t(address)) == length
                }
                guard copied else { throw failure("copy \(String(address, radix: 16)) (\(length) bytes)") }
                pages += end - index
                index = end
            }
        }
        return pages
    }

    /// A pagemap entry of a page in a private file mapping that is still the file's: present
    /// as a file page (bits 63 and 61), or neither present nor swapped out (bits 63 and 62
    /// clear; a page the process wrote and the kernel swapped out is its own).
    static func isImagePage(_ entry: UInt64) -> Bool {
        let present = entry & (1 << 63) != 0
        return present ? entry & (1 << 61) != 0 : entry & (1 << 62) == 0
    }
}
