import Foundation

/// Kernel same-page merging (KSM) for copies of one snapshot.
///
/// Copies restored from one snapshot start with byte-identical memory: the same heap, class
/// metadata and JIT code. kiln restores each copy with `PR_SET_MEMORY_MERGE` (set in `kiln-shim`
/// and inherited by runc, CRIU and the restored process), and `ksmd` then folds identical pages
/// into one copy-on-write page. The switch is per snapshot (`kiln bake --share-memory ksm`)
/// because merging across tenants is a timing side channel: a write to a merged page takes
/// measurably longer (the copy-on-write fault), which tells a process that another one holds the
/// same content.
public enum PageMerging {
    static let sysfs = "/sys/kernel/mm/ksm"

    /// How hard ksmd works. The kernel default (100 pages every 20 ms, 20 MB/s) takes minutes to
    /// fold a few 100 MB copies; kiln's default scans 10x faster, about one core-percent per copy
    /// in our measurements (see `kiln bench memory`).
    public struct Tuning: Sendable, Equatable {
        public var pagesToScan: Int
        public var sleepMilliseconds: Int

        public init(pagesToScan: Int = 1000, sleepMilliseconds: Int = 20) {
            self.pagesToScan = pagesToScan
            self.sleepMilliseconds = sleepMilliseconds
        }
    }

    /// Whether the kernel has KSM at all.
    public static var isAvailable: Bool { FileManager.default.fileExists(atPath: "\(sysfs)/run") }

    /// Starts ksmd with `tuning` unless it already runs (an administrator's own tuning is kept).
    public static func enable(_ tuning: Tuning = Tuning()) throws {
        guard isAvailable else {
            throw KilnError(
                .systemCall, "this kernel has no KSM (\(sysfs) is missing), so copies cannot share memory",
                hint: "bake with --share-memory mapped (the default), or use a kernel built with CONFIG_KSM")
        }
        guard read("run") != 1 else { return }
        try write("pages_to_scan", tuning.pagesToScan)
        try write("sleep_millisecs", tuning.sleepMilliseconds)
        try write("run", 1)
    }

    /// System-wide KSM counters.
    public struct Stats: Codable, Sendable, Equatable {
        public var running: Bool
        /// Pages that back merged content.
        public var pagesShared: Int
        /// Page mappings that point at them (the saving, in pages).
        public var pagesSharing: Int
        public var fullScans: Int
        /// Bytes saved, net of KSM's own bookkeeping.
        public var generalProfitBytes: Int64
    }

    public static func stats() -> Stats {
        Stats(
            running: read("run") == 1, pagesShared: read("pages_shared") ?? 0, pagesSharing: read("pages_sharing") ?? 0,
            fullScans: read("full_scans") ?? 0, generalProfitBytes: Int64(read("general_profit") ?? 0))
    }

    /// Whether `pid` has every mapping offered to KSM (`ksm_merge_any` in /proc/PID/ksm_stat).
    public static func mergesAll(pid: Int32) -> Bool {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/ksm_stat", encoding: .utf8)) ?? ""
        return text.contains("ksm_merge_any: yes")
    }

    /// Bytes of `pid`'s memory currently merged by KSM.
    public static func mergedBytes(pid: Int32) -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/ksm_merging_pages", encoding: .utf8),
            let pages = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return 0 }
        return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }

    package static func read(_ name: String) -> Int? {
        (try? String(contentsOfFile: "\(sysfs)/\(name)", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    static func write(_ name: String, _ value: Int) throws {
        do {
            try String(value).write(toFile: "\(sysfs)/\(name)", atomically: false, encoding: .utf8)
        } catch {
            throw KilnError(
                .systemCall, "could not set \(sysfs)/\(name) to \(value): \(error)",
                hint: "kiln needs root and a writable /sys to start ksmd (in a container: 'echo 1 > \(sysfs)/run' on the host)")
        }
    }
}
