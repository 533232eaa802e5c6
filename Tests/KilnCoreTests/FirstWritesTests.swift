import Foundation
import Testing

@testable import KilnEngine
@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// ``FirstWrites``: the pages a copy restored with mapped page images wrote, and copying them
/// ahead in a stopped process, on a real process that maps a `pages-1.img` file the way CRIU's
/// patched restorer does (MAP_PRIVATE, read-write).
@Suite("first writes")
struct FirstWritesTests {
    static let page: UInt64 = 4096

    @Test func pagesBecomeSortedMergedRanges() {
        let writes = FirstWrites(pages: [0x5000, 0x3000, 0x4000, 0x9000, 0x3000])
        #expect(writes.ranges == [0x3000..<0x6000, 0x9000..<0xA000])
        #expect(writes.pageCount == 4)
        #expect(FirstWrites(pages: []).ranges.isEmpty)
    }

    @Test func rangesTravelAsTextAndBadTextIsRefused() throws {
        let writes = FirstWrites(pages: [0x7F00_0000_3000, 0x7F00_0000_4000, 0xF000_0000])
        #expect(writes.text == "f0000000-f0001000\n7f0000003000-7f0000005000\n")
        #expect(FirstWrites(text: writes.text) == writes)
        #expect(FirstWrites(text: "")?.ranges == [])
        #expect(FirstWrites(text: "f0000000-f0000800\n") == nil, "not page-aligned")
        #expect(FirstWrites(text: "f0002000-f0001000\n") == nil, "empty")
        #expect(FirstWrites(text: "f0002000-f0003000\nf0000000-f0001000\n") == nil, "out of order")
        #expect(FirstWrites(text: "f0000000 f0001000\n") == nil)

        let stored = StoredFirstWrites(snapshotVersion: "1796491606.0-153406089", writes: writes)
        #expect(stored.text.hasPrefix("version 1796491606.0-153406089\n"))
        #expect(StoredFirstWrites(text: stored.text) == stored)
        #expect(StoredFirstWrites(text: "f0000000-f0001000\n") == nil, "no version line")
    }

    @Test func onlyPageImageMappingsCount() {
        let maps = """
            00400000-00401000 r-xp 00000000 fe:00 12  /usr/bin/java
            f0000000-f104a000 rw-p 00000000 fe:00 1146917                            /var/lib/kiln/snapshots/boot/images/pages-1.img
            7f0000000000-7f0000002000 r--p 0104a000 fe:00 1146917  /var/lib/kiln/snapshots/boot/images/pages-1.img
            7f0000010000-7f0000012000 rw-p 00000000 00:00 0
            7f0000020000-7f0000021000 rw-p 00000000 fe:00 99  /tmp/pages-backup.img.old
            7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
            """
        let mappings = FirstWrites.imageMappings(maps: maps)
        #expect(mappings.map(\.range) == [0xF000_0000..<0xF104_A000, 0x7F00_0000_0000..<0x7F00_0000_2000])
        #expect(mappings.map(\.writable) == [true, false])
        // Copied ahead: only what lies in a writable image mapping, clipped to it.
        let writes = FirstWrites(pages: [0xEFFF_F000, 0xF000_0000, 0xF104_9000, 0xF104_A000, 0x7F00_0000_0000, 0x7F00_0001_0000])
        let clipped = writes.clipped(toImageMappingsOf: maps)
        #expect(clipped.map(\.range) == [0xF000_0000..<0xF000_1000, 0xF104_9000..<0xF104_A000])
        #expect(clipped.allSatisfy { $0.mapping == mappings[0] })
        #expect(mappings.map(\.fileOffset) == [0, 0x104_A000])
    }

    @Test func onlyPagesStillTheImagesAreCopied() {
        let present: UInt64 = 1 << 63
        let swapped: UInt64 = 1 << 62
        let filePage: UInt64 = 1 << 61
        #expect(FirstWrites.isImagePage(0), "never touched")
        #expect(FirstWrites.isImagePage(present | filePage | 0x42), "mapped from the file")
        #expect(!FirstWrites.isImagePage(present | 0x42), "written: the process's own")
        #expect(!FirstWrites.isImagePage(swapped | 0x7), "written, then swapped out")
    }

    @Test func writtenMeansPresentAndNoLongerAFilePage() {
        let present: UInt64 = 1 << 63
        let filePage: UInt64 = 1 << 61
        let entries: [UInt64] = [0, present | filePage, present, present | 0x1234, filePage, present | filePage | 0x99]
        #expect(FirstWrites.writtenPages(start: 0x10000, entries: entries) == [0x12000, 0x13000])
    }

    /// A child maps a 16-page `pages-1.img` privately, writes pages 3 and 7 and reads page 10
    /// (the kernel maps it, and pages around it, from the file: no write). Then, stopped, pages
    /// 10 and 11 are copied ahead: they become its own, with the file's bytes, and the file is
    /// unchanged.
    @Test func readsAChildsWritesAndCopiesPagesAheadWithoutChangingThem() throws {
        let directory = "/tmp/kiln-unit-first-writes-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let image = "\(directory)/pages-1.img"
        let content = Data((0..<16 * 4096).map { UInt8(truncatingIfNeeded: $0 / 4096 &* 31 &+ $0 % 251) })
        try content.write(to: URL(fileURLWithPath: image))

        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        child.arguments = [
            "-c",
            """
            import ctypes, mmap, os, sys, time
            fd = os.open(sys.argv[1], os.O_RDWR)
            m = mmap.mmap(fd, 16 * 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            m[3 * 4096] = 0xAA
            m[7 * 4096 + 5] = 0xBB
            _ = m[10 * 4096]
            print("%x" % ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
            time.sleep(60)
            """,
            image,
        ]
        let output = Pipe()
        child.standardOutput = output
        try child.run()
        defer {
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
        }
        let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let base = try #require(UInt64(line, radix: 16), "the child printed \(line)")
        let pid = child.processIdentifier

        let written = try FirstWrites.read(ofProcess: pid)
        #expect(written.ranges == [(base + 3 * Self.page)..<(base + 4 * Self.page), (base + 7 * Self.page)..<(base + 8 * Self.page)])

        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        let ahead = FirstWrites(pages: [base + 3 * Self.page, base + 10 * Self.page, base + 11 * Self.page, base + 40 * Self.page])
        #expect(try ahead.copyAhead(inProcess: pid) == 2, "page 3 is the child's already; the page outside the mapping is not copied")
        #expect(try FirstWrites.read(ofProcess: pid).pageCount == 4)

        // The copied pages hold what they held: the file's bytes.
        let mem = open("/proc/\(pid)/mem", O_RDONLY)
        #expect(mem >= 0)
        defer { close(mem) }
        var bytes = [UInt8](repeating: 0, count: 2 * 4096)
        let got = bytes.withUnsafeMutableBytes { pread(mem, $0.baseAddress, 2 * 4096, off_t(base + 10 * Self.page)) }
        #expect(got == 2 * 4096)
        #expect(Data(bytes) == content[(10 * 4096)..<(12 * 4096)])
        // The child's own write to page 3 survived.
        var byte: UInt8 = 0
        #expect(pread(mem, &byte, 1, off_t(base + 3 * Self.page)) == 1)
        #expect(byte == 0xAA)
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == content, "the image file changed")
    }
}
