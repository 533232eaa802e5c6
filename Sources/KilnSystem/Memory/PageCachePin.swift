import CKilnShims
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Holds in memory the page cache pages of the files a process maps, as they are now: its
/// snapshot's page images, the JDK's libraries and class-data archive (and of any other files
/// named: the image files CRIU reads, the programs a restore runs). Each file is mapped
/// read-only and shared, and the ranges of it that are resident (`mincore`) are locked
/// (`mlock`): the kernel then reclaims none of those pages, whatever its policy, while the pin
/// lives; unmapping them (``release()``, or the pin's end) lets it again.
///
/// Why: a frozen standby copy waits for minutes, and so does a function at zero for its next
/// restore. On a host that pages out idle memory (this VM's DAMON `pageout` scheme drops pages
/// idle for 60 s, ``IdlePageOut``), the pages they need are gone by then: an ftrace of a request
/// at zero after 100 s idle counted 526 pages of the image and 356 of `classes.jsa` read back
/// from disk, and the request took 12.1-12.9 ms against 4.8-8.8 ms after 1 s (`kiln serve`,
/// Spring sample, a standby copy); a restore at zero took 90-125 ms against 52-53 ms held.
/// Pages that are not resident at the pin are left alone: no copy needed them so far.
public final class PageCachePin: Sendable {
    /// A mapping this pin holds (its address as an integer: the pin only unmaps it).
    private struct Region: Sendable {
        var address: UInt
        var length: Int
    }

    private let regions: Mutex<[Region]>
    /// Bytes locked, over every file.
    public let lockedBytes: Int
    /// How many distinct files are held.
    public let files: Int
    /// The files looked at (device and inode, as `/proc/PID/maps` gives them), held or not:
    /// a later copy mapping no others needs no pin of its own (``fileIdentities(mappedBy:)``).
    public let fileIdentities: Set<String>

    private init(regions: [Region], lockedBytes: Int, files: Int, fileIdentities: Set<String> = []) {
        self.regions = Mutex(regions)
        self.lockedBytes = lockedBytes
        self.files = files
        self.fileIdentities = fileIdentities
    }

    /// The files process `pid` maps, by device and inode; nil once it is gone.
    public static func fileIdentities(mappedBy pid: Int32) -> Set<String>? {
        guard let maps = ProcFile.text("/proc/\(pid)/maps") else { return nil }
        return Set(MapsLine.parse(maps).filter { $0.path != nil }.map(\.fileIdentity))
    }

    deinit { release() }

    /// Pins the resident pages of every regular file process `pid` maps, once per file (by device
    /// and inode; opened through `/proc/PID/map_files`, so a file inside the process's own mount
    /// namespace is reached as it maps it), and of each file in `paths` it does not map (any
    /// path `open` takes: what a process reads rather than maps, like the metadata files CRIU
    /// reads at each restore). An ELF file the process maps as code (a library) is pinned whole,
    /// read in where it is not resident: a later copy of the process may run code this one has
    /// not run yet (a compile, a new path), and a library is small beside the data files. A file
    /// that cannot be opened or mapped is skipped; only a process whose maps cannot be read is an
    /// error, and so is one that ended before its files were all pinned (nothing is held then).
    public static func pinning(filesMappedBy pid: Int32, and paths: [String] = []) throws -> PageCachePin {
        guard let maps = ProcFile.text("/proc/\(pid)/maps") else {
            throw KilnError(.systemCall, "could not read /proc/\(pid)/maps to pin the files it maps: the process is gone")
        }
        let mappings = MapsLine.parse(maps).filter { $0.path != nil }
        let code = Set(mappings.filter(\.executable).map(\.fileIdentity))
        var seen: Set<String> = []
        var files: [(path: String, whole: Bool)] = []
        for mapping in mappings where seen.insert(mapping.fileIdentity).inserted {
            let path = "/proc/\(pid)/map_files/\(mapping.rangeText)"
            // Code from an ELF file: a library or program. Not the page images, which CRIU maps
            // with each memory area's protection, the JIT's code cache included.
            files.append((path, code.contains(mapping.fileIdentity) && isELF(path)))
        }
        for path in paths {
            guard let identity = fileIdentity(ofFileAt: path), seen.insert(identity).inserted else { continue }
            files.append((path, false))
        }
        let pin = pinning(files, identities: seen)
        // A process that ended meanwhile left its files unopened: a pin that says it holds them
        // would keep the next copy from pinning them.
        guard let after = ProcFile.text("/proc/\(pid)/maps"), !after.isEmpty else {
            pin.release()
            throw KilnError(.systemCall, "process \(pid) ended while its mapped files were pinned")
        }
        return pin
    }

    /// Whether the file at `path` starts with ELF's magic number.
    private static func isELF(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var magic: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
        return read(fd, &magic, 4) == 4 && magic == (0x7f, 0x45, 0x4c, 0x46)
    }

    /// Pins each file in `paths` (any path `open` takes): its resident pages, or with `whole`,
    /// all of them, reading in those that are not resident.
    public static func pinning(files paths: [String], whole: Bool = false) -> PageCachePin {
        pinning(paths.map { ($0, whole) }, identities: Set(paths.compactMap(fileIdentity(ofFileAt:))))
    }

    /// Pins the resident pages of the file at `path` (any path `open` takes); nil when it cannot
    /// be opened or mapped.
    public static func pinning(file path: String) -> PageCachePin? {
        let pin = pinning(files: [path])
        return pin.files == 1 ? pin : nil
    }

    /// The file at `path` by device and inode, written as `/proc/PID/maps` writes a mapping's
    /// (``MapsLine/fileIdentity``: `MAJ:MIN:INODE`, the device's numbers in hex); nil when it
    /// cannot be looked at.
    public static func fileIdentity(ofFileAt path: String) -> String? {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        // glibc's gnu_dev_major and gnu_dev_minor, which Swift does not import.
        let device = UInt64(status.st_dev)
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        return String(format: "%02llx:%02llx:", major, minor) + String(status.st_ino)
    }

    private static func pinning(_ files: [(path: String, whole: Bool)], identities: Set<String>) -> PageCachePin {
        var regions: [Region] = []
        var locked = 0
        for file in files {
            guard let region = pin(file.path, whole: file.whole) else { continue }
            regions.append(region.region)
            locked += region.locked
        }
        return PageCachePin(regions: regions, lockedBytes: locked, files: regions.count, fileIdentities: identities)
    }

    /// Keeps the pages of this process's own executable that it runs resident from now on:
    /// its mappings of the file are locked on fault (`mlock2(MLOCK_ONFAULT)`), so a page in
    /// memory now, and any page faulted in later, stays. A gateway that sat idle otherwise read
    /// its own code back from disk on the next request at zero (400 pages of `kiln`, an ftrace
    /// after 100 s idle with the standby copy's files pinned: 12.3 ms). Only what the process
    /// touches is held, not the whole binary. Returns the bytes of the mappings so marked.
    @discardableResult
    public static func lockOwnExecutableOnFault() -> Int {
        guard let maps = ProcFile.text("/proc/self/maps"),
            let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        else { return 0 }
        var marked = 0
        for mapping in MapsLine.parse(maps) where mapping.path == executable {
            if kiln_mlock_on_fault(UnsafeMutableRawPointer(bitPattern: mapping.range.lowerBound), UInt(mapping.range.count)) == 0 {
                marked += mapping.range.count
            }
        }
        return marked
    }

    /// Where each pinned file is mapped in this process (for a look at its `smaps`).
    package var mappedAddresses: [UInt] { regions.withLock { $0.map(\.address) } }

    /// Unmaps every pinned file: its pages may be reclaimed again. Safe to call twice.
    public func release() {
        let all = regions.withLock { regions in
            defer { regions = [] }
            return regions
        }
        for region in all { munmap(UnsafeMutableRawPointer(bitPattern: region.address), region.length) }
    }

    /// Maps `path` whole (read-only, shared) and locks the runs of its pages that are resident,
    /// or with `whole` every page (`mlock` reads in what is not resident).
    private static func pin(_ path: String, whole: Bool) -> (region: Region, locked: Int)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG, status.st_size > 0 else { return nil }
        let length = Int(status.st_size)
        guard let address = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), address != MAP_FAILED else { return nil }
        if whole {
            // A file that cannot be locked whole (a limit) stays mapped unlocked: no worse than before.
            return (Region(address: UInt(bitPattern: address), length: length), mlock(address, length) == 0 ? length : 0)
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = (length + page - 1) / page
        var resident = [UInt8](repeating: 0, count: pages)
        guard mincore(address, length, &resident) == 0 else {
            munmap(address, length)
            return nil
        }
        var locked = 0
        var index = 0
        while index < pages {
            guard resident[index] & 1 == 1 else {
                index += 1
                continue
            }
            let start = index
            while index < pages, resident[index] & 1 == 1 { index += 1 }
            let bytes = min((index - start) * page, length - start * page)
            // A run that cannot be locked (a limit) stays mapped unlocked: no worse than before.
            if mlock(address + start * page, bytes) == 0 { locked += bytes }
        }
        return (Region(address: UInt(bitPattern: address), length: length), locked)
    }
}
