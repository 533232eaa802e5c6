import Foundation
import Testing

@testable import KilnSystem

#if canImport(Glibc)
import Glibc
#endif

/// Holding a file's resident page cache pages (``PageCachePin``): what is resident is locked,
/// what is not stays out, and a release unlocks everything.
@Suite("page cache pins", .serialized)
struct PageCachePinTests {
    /// The locked bytes (`Locked:` of /proc/self/smaps) of the mapping that starts at `address`;
    /// nil when there is none. Per mapping, not the process's `VmLck`: other suites' gateways
    /// pin their standby copies' files in this process too.
    static func lockedBytes(at address: UInt) -> Int? {
        let smaps = ProcFile.text("/proc/self/smaps") ?? ""
        let start = String(address, radix: 16)
        var inside = false
        for line in smaps.split(separator: "\n") {
            // A mapping's first line starts with its range (hex-hex); its fields' lines with a name and a colon.
            if let range = line.split(separator: " ").first, let dash = range.firstIndex(of: "-"), range[..<dash].allSatisfy(\.isHexDigit) {
                inside = range[..<dash] == start
                continue
            }
            if inside, line.hasPrefix("Locked:") {
                return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
            }
        }
        return nil
    }

    /// A file of `mib` MiB under /var/tmp (a disk, not tmpfs: its clean pages can leave the
    /// page cache), written and synced so every page is resident and clean.
    static func makeFile(mib: Int) throws -> String {
        let path = "/var/tmp/kiln-pin-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        for _ in 0..<mib { try chunk.withUnsafeBytes { try Descriptor.writeAll($0, to: fd, path: path) } }
        #expect(fsync(fd) == 0)
        return path
    }

    @Test func theResidentPagesOfAFileAreLockedAndReleased() throws {
        let path = try Self.makeFile(mib: 4)
        defer { unlink(path) }
        let pin = try #require(PageCachePin.pinning(file: path))
        #expect(pin.files == 1)
        #expect(pin.lockedBytes == 4 << 20)
        let address = try #require(pin.mappedAddresses.first)
        #expect(Self.lockedBytes(at: address) == 4 << 20)
        pin.release()
        #expect(Self.lockedBytes(at: address) == nil, "unmapped")
        #expect(pin.mappedAddresses.isEmpty)
        pin.release()
    }

    @Test func pagesThatAreNotResidentAreLeftOut() throws {
        let path = try Self.makeFile(mib: 4)
        defer { unlink(path) }
        // The second half leaves the page cache (clean pages: the kernel drops them at once).
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        #expect(posix_fadvise(fd, 2 << 20, 2 << 20, POSIX_FADV_DONTNEED) == 0)
        close(fd)
        let pin = try #require(PageCachePin.pinning(file: path))
        defer { pin.release() }
        #expect(pin.lockedBytes == 2 << 20, "locked \(pin.lockedBytes) bytes of a file half in the page cache")
        #expect(Self.lockedBytes(at: try #require(pin.mappedAddresses.first)) == 2 << 20)
    }

    /// The gateway keeps the code it runs (``PageCachePin/lockOwnExecutableOnFault()``): its
    /// executable's mappings are marked lock-on-fault (`lf` in smaps' VmFlags). Tried on the
    /// test runner itself, whose text it then keeps while it runs.
    @Test func theOwnExecutablesMappingsAreLockedOnFault() throws {
        #expect(PageCachePin.lockOwnExecutableOnFault() > 0)
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let smaps = ProcFile.text("/proc/self/smaps") ?? ""
        var inExecutable = false
        var flagged = 0
        for line in smaps.split(separator: "\n") {
            if let range = line.split(separator: " ").first, let dash = range.firstIndex(of: "-"), range[..<dash].allSatisfy(\.isHexDigit) {
                inExecutable = line.hasSuffix(executable)
            } else if inExecutable, line.hasPrefix("VmFlags:") {
                #expect(line.split(separator: " ").contains("lf"), "\(line)")
                flagged += 1
            }
        }
        #expect(flagged >= 2, "the executable's text and data mappings")
    }

    @Test func aProcessesMappedFilesArePinnedOnceEach() throws {
        // The test runner maps its own binary and libraries (some more than once).
        let pin = try PageCachePin.pinning(filesMappedBy: getpid())
        defer { pin.release() }
        let maps = ProcFile.text("/proc/self/maps") ?? ""
        let files = Set(MapsLine.parse(maps).filter { $0.path != nil }.map(\.fileIdentity))
        #expect(pin.files >= 1 && pin.files <= files.count, "\(pin.files) pinned of \(files.count) mapped files")
        #expect(pin.lockedBytes > 0)
        #expect(throws: KilnError.self) { try PageCachePin.pinning(filesMappedBy: Int32.max) }
    }

    /// A file's identity from `stat` is the one `/proc/PID/maps` gives its mappings: the pin's
    /// "already held" check compares the two kinds.
    @Test func aFilesIdentityIsTheOneItsMappingsHave() throws {
        let path = try Self.makeFile(mib: 1)
        defer { unlink(path) }
        let pin = try #require(PageCachePin.pinning(file: path))
        defer { pin.release() }
        let address = try #require(pin.mappedAddresses.first)
        let mapping = try #require(MapsLine.parse(ProcFile.text("/proc/self/maps") ?? "").first { $0.range.lowerBound == address })
        #expect(PageCachePin.fileIdentity(ofFileAt: path) == mapping.fileIdentity)
        #expect(PageCachePin.fileIdentity(ofFileAt: "/nonexistent/kiln-pin") == nil)
    }

    /// What a restore reads rather than maps (CRIU's metadata images) is pinned beside what the
    /// copy maps, once: a file the process maps already is not pinned a second time.
    @Test func filesAProcessReadsArePinnedBesideTheOnesItMaps() throws {
        let read = try Self.makeFile(mib: 2)
        defer { unlink(read) }
        let alone = try PageCachePin.pinning(filesMappedBy: getpid())
        alone.release()
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let pin = try PageCachePin.pinning(filesMappedBy: getpid(), and: [read, executable, read, "/nonexistent/kiln-pin"])
        defer { pin.release() }
        #expect(pin.files == alone.files + 1, "the read file once; the mapped executable not again; a missing file skipped")
        #expect(pin.fileIdentities.contains(try #require(PageCachePin.fileIdentity(ofFileAt: read))))
        #expect(pin.lockedBytes >= 2 << 20)
    }

    /// A library the process runs code from is held whole, read in where it was not resident
    /// (a later copy may run code this one has not); any other file only as far as it is
    /// resident, even one mapped executable (CRIU maps the JIT's code cache from a page image so).
    @Test func theLibrariesAProcessRunsAreHeldWhole() throws {
        func mapAsCode(_ path: String, elf: Bool) throws -> UnsafeMutableRawPointer {
            let fd = open(path, O_RDWR | O_CLOEXEC)
            defer { close(fd) }
            if elf { #expect(pwrite(fd, [0x7f, 0x45, 0x4c, 0x46] as [UInt8], 4, 0) == 4) }
            #expect(fsync(fd) == 0)
            let address = try #require(mmap(nil, 4 << 20, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0))
            #expect(address != MAP_FAILED)
            // Nothing of it is touched, so all of it can leave the page cache.
            #expect(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
            return address
        }
        let library = try Self.makeFile(mib: 4)
        let image = try Self.makeFile(mib: 4)
        let libraryCode = try mapAsCode(library, elf: true)
        let imageCode = try mapAsCode(image, elf: false)
        defer {
            munmap(libraryCode, 4 << 20)
            munmap(imageCode, 4 << 20)
            unlink(library)
            unlink(image)
        }
        let pin = try PageCachePin.pinning(filesMappedBy: getpid())
        defer { pin.release() }
        func locked(_ path: String) throws -> Int? {
            let identity = try #require(PageCachePin.fileIdentity(ofFileAt: path))
            let maps = MapsLine.parse(ProcFile.text("/proc/self/maps") ?? "")
            return pin.mappedAddresses.first { address in maps.contains { $0.range.lowerBound == address && $0.fileIdentity == identity } }
                .flatMap(Self.lockedBytes(at:))
        }
        #expect(try locked(library) == 4 << 20, "the ELF file mapped as code: whole")
        #expect(try locked(image) ?? 0 < 4 << 20, "a data file mapped as code: what is resident")
    }

    /// Which mappings are code (``MapsLine/executable``).
    @Test func aMappingsPermissionsSayWhetherItIsCode() throws {
        #expect(try #require(MapsLine("7f00-7f10 r-xp 00000000 fe:00 12 /usr/lib/libjvm.so")).executable)
        #expect(try #require(MapsLine("7f00-7f10 r--p 00000000 fe:00 12 /usr/lib/libjvm.so")).executable == false)
        #expect(try #require(MapsLine("7f00-7f10 rwxp 00000000 fe:00 13 /var/lib/kiln/snapshots/a/images/pages-1.img")).executable)
    }

    /// The programs a restore runs are pinned by path, each that exists.
    @Test func programsArePinnedByPath() throws {
        let first = try Self.makeFile(mib: 1)
        let second = try Self.makeFile(mib: 2)
        defer {
            unlink(first)
            unlink(second)
        }
        let pin = PageCachePin.pinning(files: [first, second, "/nonexistent/kiln-pin"])
        defer { pin.release() }
        #expect(pin.files == 2)
        #expect(pin.lockedBytes == 3 << 20)
        #expect(pin.fileIdentities.count == 2)
        pin.release()
        #expect(pin.mappedAddresses.isEmpty)
        // Whole: every page, whether resident or not.
        let fd = open(second, O_RDONLY | O_CLOEXEC)
        #expect(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
        close(fd)
        let whole = PageCachePin.pinning(files: [second], whole: true)
        defer { whole.release() }
        #expect(whole.lockedBytes == 2 << 20)
    }
}

/// `/proc/PID/maps` lines as the kernel writes them (``MapsLine``).
@Suite struct MapsLineTests {
    @Test func aFileMappingHasItsRangeIdentityAndPath() throws {
        let line = try #require(
            MapsLine("7f2a71000000-7f2a73000000 rw-p 00001000 fe:00 1098928                    /var/lib/kiln/snapshots/boot/images/pages-1.img"))
        #expect(line.range == 0x7f2a_7100_0000..<0x7f2a_7300_0000)
        #expect(line.rangeText == "7f2a71000000-7f2a73000000")
        #expect(line.fileIdentity == "fe:00:1098928")
        #expect(line.path == "/var/lib/kiln/snapshots/boot/images/pages-1.img")
    }

    @Test func memoryThatMapsNoFileHasNoPath() throws {
        #expect(try #require(MapsLine("7f2a584fe000-7f2a5853a000 rw-p 00000000 00:00 0 ")).path == nil)
        #expect(try #require(MapsLine("55d1c5e4e000-55d1c5e6f000 rw-p 00000000 00:00 0                          [heap]")).path == nil)
        #expect(try #require(MapsLine("7ffd1c3f2000-7ffd1c3f4000 r-xp 00000000 00:00 0                          [vdso]")).path == nil)
        #expect(MapsLine("not a mapping") == nil)
        #expect(MapsLine("7f00-7e00 r--p 00000000 00:00 0") == nil, "an end before its start")
        #expect(MapsLine.parse("7f00-7f10 r--p 0 00:00 0\n\ngarbage\n8000-9000 r--p 0 fe:00 12 /a b").map(\.path) == [nil, "/a b"])
    }
}
